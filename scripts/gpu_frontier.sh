#!/usr/bin/env bash
# The frontier at the gpu tier (issue 46), as one prepared script for a machine with one NVIDIA GPU: every Q1 frontier
# student at 224 px for 100 epochs (bf16, batch 256), the plan first. The rows' records go to $OUT/frontier (or
# benchmarks/results/frontier); each row resumes if the script is stopped and run again. Deployed latency is still
# measured on that machine's CPU with onnxruntime, student against teacher side by side.
#   OUT=/some/folder bash scripts/gpu_frontier.sh [--only ARCH-224 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
results="${OUT:-benchmarks/results}/frontier"
make .venv/.ssdistill-installed data >/dev/null  # the venv (the device machine has none: a fresh install) and the data
.venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
.venv/bin/python -m benchmarks.frontier --tier gpu --bench q1 --plan
exec .venv/bin/python -m benchmarks.frontier --tier gpu --bench q1 --results "$results" "$@"
