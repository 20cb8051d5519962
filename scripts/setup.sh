#!/usr/bin/env bash
# Create or update ./.venv with everything lorakit, its tests and its demo need. Idempotent:
# a second run with unchanged requirements returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=2.13.0

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "setup: lorakit needs Python >= 3.10 (found $("$PYTHON" --version 2>&1)); set PYTHON=python3.11" >&2; exit 1; }

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

stamp="$VENV/.lorakit-setup"
fingerprint=$(cat pyproject.toml requirements/*.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
  exit 0
fi

pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
# torch first and pinned: an unpinned torch requirement would pull a multi-GB CUDA build.
"${pip[@]}" install "torch==$TORCH_VERSION"
"${pip[@]}" install -c requirements/constraints.txt -e ".[dev]"
"${pip[@]}" install --no-deps -r requirements/packaged.txt
echo "$fingerprint" > "$stamp"
echo "setup: $VENV is ready"
