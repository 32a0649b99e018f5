#!/usr/bin/env bash
# Run the test suite (creates .venv when missing). Extra arguments go to pytest,
# e.g. scripts/test.sh --runslow  for the slow end-to-end runs as well.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TORCH_COMPILE_DISABLE=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
export TORCH_HOME="${TORCH_HOME:-$(mktemp -d)}"
unset TORCH_CUDA_ARCH_LIST
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
