#!/usr/bin/env bash
# Lint and format checks, as .ci/run runs them (config: [tool.ruff] in pyproject.toml).
#   scripts/lint.sh          check only (what CI does)
#   scripts/lint.sh --fix    apply ruff's safe fixes and format the tree, then check
set -euo pipefail
cd "$(dirname "$0")/.."
RUFF=${RUFF:-.venv/bin/ruff}
if [ "${1:-}" = "--fix" ]; then
  "$RUFF" check --fix .
  "$RUFF" format .
fi
"$RUFF" check .
"$RUFF" format --check .
