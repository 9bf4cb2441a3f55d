#!/usr/bin/env bash
# Renders benches/results/*.json into the table of docs/performance.md and
# benches/results/summary.png. matplotlib comes from PyPI into a venv under
# target/ (nothing is installed system-wide).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet matplotlib
fi
exec "$venv/bin/python" benches/render.py
