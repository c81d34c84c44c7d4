#!/usr/bin/env bash
# One prepared GPU check (see benchmarks/gpu_check.py): bf16/fp16 vs fp32 logits and N15 / N32 /
# N15B7 / N32B12 latency of the 512-px MaskGIT with random weights. `--smoke`: tiny sizes on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec "$PY" benchmarks/gpu_check.py "$@"
