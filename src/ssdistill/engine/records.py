"""The run record: what ran, where, with what, and what came out (``results.json``), plus the process probes it
uses (peak memory, the machine, library versions)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from ssdistill._version import __version__

RESULTS_VERSION = 2  # 2: named teachers and students (teachers, students, signals)


def peak_rss_mb() -> float | None:
    """Peak resident memory (MiB) of this process so far, or of its largest finished child (data workers) if larger.

    On Linux the process's own peak is VmHWM of its address space: ``ru_maxrss`` of a process started by exec also
    carries the peak of whatever spawned it (the kernel keeps the old address space's high-water mark), so a run
    launched from a large parent would report the parent's memory."""
    try:
        import resource
    except ImportError:  # Windows has no resource module
        return None
    own_kib = _address_space_peak_kib()
    if own_kib is None:
        own_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_kib = max(own_kib, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return peak_kib / (1024 * 1024) if platform.system() == "Darwin" else peak_kib / 1024  # bytes on macOS, KiB on Linux


def _address_space_peak_kib() -> int | None:
    """VmHWM from /proc/self/status (KiB), None where there is no such file (macOS)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "asimd", "sve", "sve2")  # also every avx512* and amx*


def machine(cpuinfo: str | None = None) -> dict[str, Any]:
    """Where a run ran: CPU count, model and vector extensions (figures move between CPUs: different kernel paths
    round differently and a training trajectory follows), the instruction set torch dispatches to, and the GPU.
    ``cpuinfo``: the text of /proc/cpuinfo (read when not given; absent outside Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():  # the first processor's entries
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    vector = sorted(f for f in flags if f in VECTOR_FLAGS or f.startswith(("avx512", "amx")))
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "cpu_vector_extensions": vector,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def versions() -> dict[str, str]:
    import lightning
    import timm
    import torchvision

    return {
        "ssdistill": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
    }
