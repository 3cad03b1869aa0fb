#!/usr/bin/env bash
# One device call: the GPU search benchmark (eager vs CUDA graphs) and, with >= 2 GPUs, the
# 1- vs 2-GPU calibration scaling. Results land in $OUT (JSON + log).
#   OUT=/some/dir bash experiments/gpu_bench_job.sh
set -uo pipefail
: "${OUT:?set OUT}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
S=experiments/results/controllers/schedules_mnist-target
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  timeout 420 python3 -m experiments.bench_gpu --out "$OUT/gpu_bench.json" \
    --schedule "$S/binomial-ceil.json" "$S/gain_k_mean1.5.json" 2>&1 \
    | grep -v -E "it/s\]" | tee "$OUT/bench_gpu.log" | tail -n 30
fi
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  timeout 400 python3 -m experiments.bench_calibration_scaling --gpus 1 2 \
    --out "$OUT/calibration_scaling.json" 2>&1 | grep -v -E "it/s\]" \
    | tee "$OUT/scaling.log" | tail -n 20
fi
