#!/usr/bin/env bash
# The prepared GPU checks, with random weights: benchmarks/gpu_check.py (512-px MaskGIT: bf16/fp16 vs fp32
# logits, fused attention kernels, N32 / N32B12 at batch 64, 10 and 1, eager and --compile: ms per image,
# TFLOP/s, MFU, peak memory, measured vs ideal ratio), then benchmarks/dimoo_gpu_check.py (Lumina-DiMOO at
# its released widths, 1024 px: bf16 vs fp32 logits, fused attention kernels, padded batch vs alone,
# N64 / N64B11 / N64B14 at batch 1 and 4, eager and --compile). Both get the same arguments (--smoke: tiny
# sizes on CPU; --repeats R; --batch B; --precision P; --no-compile: eager only); the DiMOO check runs even
# when the first fails, and the exit status is the last failure's. Time guards, so the whole fits in 8
# minutes on an H100/H200: no run starts after $MASKGIT_GPU_CHECK_SECONDS (default 170) in the MaskGIT
# check, nor after $DIMOO_GPU_CHECK_SECONDS (default 240) in the DiMOO check.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
# Import this checkout as `migm` even where it is not installed (a lent GPU machine has its own torch and
# nothing of ours): a link named migm to it, first on PYTHONPATH.
if ! "$PY" -c 'import migm, os, sys; sys.exit(os.path.realpath(os.path.dirname(migm.__file__)) != os.path.realpath("."))' 2>/dev/null; then
  links="$(mktemp -d)"
  trap 'rm -rf "$links"' EXIT
  ln -s "$PWD" "$links/migm"
  export PYTHONPATH="$links${PYTHONPATH:+:$PYTHONPATH}"
fi
status=0
"$PY" benchmarks/gpu_check.py "$@" || status=$?
"$PY" benchmarks/dimoo_gpu_check.py "$@" || status=$?
exit "$status"
