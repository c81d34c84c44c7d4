#!/usr/bin/env bash
# The prepared GPU checks, with random weights: benchmarks/gpu_check.py (512-px MaskGIT: bf16/fp16 vs fp32
# logits, N15 / N32 / N15B7 / N32B12 latency), then benchmarks/dimoo_gpu_check.py (Lumina-DiMOO at its
# released widths, 1024 px: bf16 vs fp32 logits, padded batch vs alone, N64 / N64B11 / N64B14 latency).
# Both get the same arguments (--smoke: tiny sizes on CPU; --repeats R; --batch B; --precision P); the
# DiMOO check runs even when the first fails, and the exit status is the last failure's. The DiMOO
# check stops starting timed runs after $DIMOO_GPU_CHECK_SECONDS (default 300) seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
status=0
"$PY" benchmarks/gpu_check.py "$@" || status=$?
"$PY" benchmarks/dimoo_gpu_check.py "$@" || status=$?
exit "$status"
