#!/usr/bin/env bash
# The one-script GPU check: on a machine with CUDA GPUs, from the repository root,
#
#     scripts/gpu_check.sh [SUMMARY_DIR]
#
# runs lorakit's CUDA-only tests, a short bf16 classification run, short causal-LM QLoRA runs with
# --quantize nf4 and --quantize bnb-nf4, DDP and FSDP over the GPUs present (2 or more), and the
# mixed-adapter serving benchmark on CUDA, each with its own time limit, in under 8 minutes, and
# writes SUMMARY_DIR/gpu-check.md (and .json); SUMMARY_DIR defaults to $OUT, else ./gpu-check.
# Models are random-weight and built here (nothing is downloaded). It uses the machine's own
# python3 and torch; packages that machine lacks may be put in .whl/ as wheels (installed into
# /tmp/site first). Exit status: 0 when every step passed or was skipped, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SUMMARY_DIR=${1:-${OUT:-gpu-check}}
mkdir -p "$SUMMARY_DIR"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing .whl/*.whl failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:$PWD/tests:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec timeout 470 "$PYTHON" scripts/gpu_check.py "$SUMMARY_DIR"
