#!/usr/bin/env bash
# One device call for the bring-your-own / compute-ledger runs on one GPU:
#  1. FLOPs-budgeted stopping arms (2x, 4x, 8x, 16x plain sampling's FLOPs, the classifier
#     reward's included) merged into the committed 512-pair mnist-target frontier;
#  2. the plain `sample --device cuda` path with the compress reward (PIL: the reward runs
#     outside CUDA graphs) and a weighted model + reward spec;
#  3. `calibrate --device cuda` (budget-varied + reference), `fit --controller stopping`, and
#     `sample --budget-flops 4x` with that controller on CUDA;
#  4. `bench` of a model: + reward: config on CUDA with FLOPs and the per-step ledger.
# Everything lands in $OUT: frontier_mnist-target.json, byo_gpu.jsonl (one JSON line per
# command), byo_gpu.log, the bench run's results.json and NFEs-per-step plot.
#   OUT=/some/dir bash experiments/gpu_byo_job.sh   # SKIP_FRONTIER=1 / ONLY_FRONTIER=1: a part
set -uo pipefail
: "${OUT:?set OUT}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=offline
L="$OUT/byo_gpu.log" J="$OUT/byo_gpu.jsonl" T=/tmp/byo
mkdir -p "$T/fr"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$L"
cli() { python3 -m experiments.cli "$@"; }
line() {  # run a CLI command; its last stdout line (a JSON object) goes to $J, tagged
  local tag="$1"; shift
  local t0=$SECONDS out
  out=$(cli "$@" 2>>"$L" | tail -n 1)
  echo "{\"tag\": \"$tag\", \"wall_s\": $((SECONDS - t0)), \"row\": ${out:-null}}" >>"$J"
  echo "$tag: $((SECONDS - t0)) s" | tee -a "$L"
}
if [ "${SKIP_FRONTIER:-0}" != 1 ]; then
  cp experiments/results/frontier/frontier_mnist-target.json "$T/fr/"
  timeout "${FRONTIER_S:-330}" python3 -m experiments.frontier --task mnist-target --device cuda \
    --generator-device cuda --cuda-graphs --pairs 512 --cal-pairs 256 --batch 512 \
    --flops-budgets 2 4 8 16 --only 'stopping flops' --merge --out "$T/fr" 2>&1 \
    | grep -v -E "it/s\]" >>"$L"
  cp "$T/fr/frontier_mnist-target.json" "$OUT/"
  grep "stopping flops" "$L" | head -n 8
fi
[ "${ONLY_FRONTIER:-0}" = 1 ] && exit 0
line compress-task sample --task mnist-compress --device cuda --batch 64 --n 4 --k 20 --json
line model-reward-specs sample --model mnist --reward brightness=1 --reward compress=0.5 \
  --eval-reward target --class 3 --device cuda --batch 64 --n 2 --k 4 --json
line calibrate-budgets calibrate --task mnist-target --device cuda --budgets 0 1 2 4 --n 2 \
  --eps 1.0 --seeds 0 256 --batch 256 --out "$T/cal" --stats "$T/cal_stats.json" --quiet
line calibrate-reference calibrate --task mnist-target --device cuda --n 4 --k 20 \
  --seeds 0 256 --batch 256 --out "$T/ref" --stats "$T/ref_stats.json" --quiet
line fit-stopping fit --controller stopping --traces "$T/cal" --reference "$T/ref" \
  --target 0.99 --out "$T/stop.json"
for b in 2x 4x 8x; do
  line "budget-flops-$b" sample --task mnist-target --device cuda --batch 256 --seed 5000 \
    --schedule "$T/stop.json" --budget-flops "$b" --json --quiet
done
line stopping-unbudgeted sample --task mnist-target --device cuda --batch 256 --seed 5000 \
  --schedule "$T/stop.json" --flops --json --quiet
t0=$SECONDS
cli bench experiments/configs/byo.yaml --device cuda --no-wandb --out "$T/bench" \
  --set 'pairs.seeds=[0, 128]' batch=256 flops=true 2>>"$L"
python3 - "$T/bench/results.json" "$((SECONDS - t0))" >>"$J" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))
rows = [{k: r.get(k) for k in ("label", "reward", "eval_rate", "eval_reward", "nfe", "flops_per_sample")}
        for r in res["rows"]]
steps = {r["label"]: r.get("compute", {}).get("steps") is not None for r in res["rows"]}
print(json.dumps({"tag": "bench-byo-cuda", "wall_s": int(sys.argv[2]), "row": {
    "rows": rows, "per_step_ledger": steps, "device": res["config"]["device"],
    "cuda_graphs": res["config"]["cuda_graphs"], "compute": res["compute"]}}))
EOF
echo "bench-byo-cuda: $((SECONDS - t0)) s" | tee -a "$L"
cp "$T/bench/results.json" "$OUT/bench_byo_results.json"
cp "$T/bench/nfe_per_step.png" "$OUT/bench_byo_nfe_per_step.png"
