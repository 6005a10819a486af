"""Every results record says which CPU it ran on: figures move by a few points between CPUs."""

from ssdistill.engine.records import machine

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile avx_vnni
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp sve sve2
CPU part\t: 0xd4f
"""


def test_cpu_model_and_vector_extensions_are_read_from_cpuinfo():
    xeon = machine(XEON)
    assert xeon["cpu_model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert xeon["cpu_vector_extensions"] == [
        "amx_bf16",
        "amx_tile",
        "avx",
        "avx2",
        "avx512_bf16",
        "avx512bw",
        "avx512f",
        "avx_vnni",
        "f16c",
        "fma",
        "sse4_2",
    ]  # the first processor's flags; scalar and SSE1-4.1 flags left out
    arm = machine(GRAVITON)
    assert arm["cpu_vector_extensions"] == ["asimd", "sve", "sve2"] and arm["cpu_model"]


def test_this_machine_is_described():
    here = machine()
    assert here["cpus"] >= 1 and here["cpu_model"] and isinstance(here["cpu_vector_extensions"], list)
    assert isinstance(here["torch_cpu_capability"], str) and "gpu" in here
