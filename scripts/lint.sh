#!/usr/bin/env bash
# Lint and format check (ruff, configured in pyproject.toml). `scripts/lint.sh --fix` applies both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${1:-}" = "--fix" ]; then
  .venv/bin/ruff check --fix modgs_ns tests scripts && .venv/bin/ruff format modgs_ns tests scripts
else
  .venv/bin/ruff check modgs_ns tests scripts && .venv/bin/ruff format --check modgs_ns tests scripts
fi
