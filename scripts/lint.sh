#!/usr/bin/env bash
# Lint and format checks, as .ci/run runs them (config: [tool.ruff] in pyproject.toml).
#   scripts/lint.sh          check only (what CI does)
#   scripts/lint.sh --fix    apply ruff's safe fixes and format the tree, then check
set -euo pipefail
cd "$(dirname "$0")/.."
# the project venv's ruff; else one on PATH (a git worktree has no .venv of its own); RUFF=... overrides
if [ -z "${RUFF:-}" ]; then
  if [ -x .venv/bin/ruff ]; then RUFF=.venv/bin/ruff; else RUFF=$(command -v ruff || true); fi
fi
if [ -z "$RUFF" ]; then
  echo "ruff not found: run 'bash scripts/setup.sh --dev' (or set RUFF=/path/to/ruff)" >&2
  exit 2
fi
if [ "${1:-}" = "--fix" ]; then
  "$RUFF" check --fix .
  "$RUFF" format .
fi
"$RUFF" check .
"$RUFF" format --check .
