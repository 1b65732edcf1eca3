#!/usr/bin/env bash
# Creates .venv (Python 3.11) and installs pairforge with every extra, pinned for CPU machines.
# Safe to re-run: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints/cpu.txt -e '.[all]'
# The Khronos glTF validator (tests check every generated .glb with it).
if command -v npm >/dev/null && [[ ! -e node_modules/gltf-validator ]]; then
  npm ci --silent --no-audit --no-fund >/dev/null
fi
