#!/usr/bin/env bash
# One device call: controller evaluation on the three embedded tasks, the GPU benchmark and the
# Table-1 config, on CUDA. Results are packed into $OUT/results.tgz after every stage.
#   OUT=/some/dir bash experiments/gpu_eval_job.sh
set -uo pipefail
: "${OUT:?set OUT}"
R=/tmp/gpu_results
mkdir -p "$R"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=offline
pack() { tar -czf "$OUT/results.tgz" -C "$R" . ; }
stage() {  # stage NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  echo "== $name"; timeout "$secs" "$@" 2>&1 | grep -v -E "it/s\]|Warning|warn\(" | tail -n 40 > "$R/$name.txt"
  tail -n 25 "$R/$name.txt"; pack
}
stage ctl-target 170 python3 -m experiments.eval_controllers --task mnist-target --device cuda --out "$R"
stage gpu-bench 120 python3 -m experiments.bench_gpu --out "$R/gpu_bench.json" \
  --schedule "$R/schedules_mnist-target/gain_k_mean1.5.json"
stage ctl-bright 110 python3 -m experiments.eval_controllers --task mnist-brightness --device cuda --out "$R"
stage ctl-compress 110 python3 -m experiments.eval_controllers --task mnist-compress --device cuda --out "$R"
stage table1 60 python3 -m experiments.run experiments/configs/table1.yaml --set device=cuda --out "$R/table1" --no-wandb
