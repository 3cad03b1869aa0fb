#!/usr/bin/env bash
# One device call: train both classifiers and three diffusion candidates (same CPU-friendly
# architecture, different conditioning / learning rate) concurrently on one GPU, sample each
# candidate on the GPU (1,000 conditional + 1,000 unconditional, heun-18), keep the candidate with
# the best conditional accuracy, and write 8 files under $OUT:
#   mnist/{config.json,diffusion_pytorch_model.safetensors,edm_config.json}
#   mnist-reward-clf/{config.json,model.safetensors}  mnist-eval-clf/{config.json,model.safetensors}
#   logs.json (training logs of every candidate and of the classifiers, GPU sanity evaluations)
# Env: OUT (required), DATA, BUDGET (seconds per diffusion run), DEVICE, TINY=1 (CPU dry run).
set -uo pipefail
: "${OUT:?set OUT}"
DATA=${DATA:-.data/mnist.safetensors}
BUDGET=${BUDGET:-360}
DEVICE=${DEVICE:-cuda}
W=${WORK:-/tmp/mnist_job}
rm -rf "$W" && mkdir -p "$W"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
EXTRA=() CLF_EXTRA=() EVAL_EXTRA=(--per-class 100 --uncond 1000 --batch 1000)
if [[ "${TINY:-0}" == 1 ]]; then
  EXTRA=(--tiny --steps 3) CLF_EXTRA=(--tiny) EVAL_EXTRA=(--per-class 2 --uncond 10 --batch 20)
fi
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', \
diffusers.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"

python3 experiments/train_classifiers.py --data "$DATA" --out "$W/clf" --device "$DEVICE" \
  "${CLF_EXTRA[@]}" >"$W/clf.txt" 2>&1 &
PIDS=($!)
declare -A CAND=(
  [A]="--lr 1e-3"
  [B]="--lr 1e-3 --scale-shift"
  [C]="--lr 5e-4 --scale-shift --seed 1"
)
for k in A B C; do
  # shellcheck disable=SC2086
  python3 experiments/train_mnist.py --data "$DATA" --out "$W/$k" --seconds "$BUDGET" \
    --device "$DEVICE" ${CAND[$k]} "${EXTRA[@]}" >"$W/$k.txt" 2>&1 &
  PIDS+=($!)
done
for p in "${PIDS[@]}"; do wait "$p" || echo "process $p failed"; done
for f in clf A B C; do echo "== $f"; grep -v -E "^(USDT|ERROR)" "$W/$f.txt" | tail -n 6; done

for k in A B C; do
  [[ -f "$W/$k/config.json" ]] || continue
  python3 experiments/eval_mnist_model.py --quick --device "$DEVICE" --data "$DATA" \
    --model-dir "$W/$k" --eval-clf-dir "$W/clf/mnist-eval-clf" \
    --reward-clf-dir "$W/clf/mnist-reward-clf" --out-json "$W/$k/eval.json" \
    "${EVAL_EXTRA[@]}" 2>&1 | grep -v -E "^(USDT|ERROR)" | tail -n 3
done

python3 - "$W" "$OUT" <<'EOF'
import json, shutil, sys
from pathlib import Path

w, out = Path(sys.argv[1]), Path(sys.argv[2])
logs = {"candidates": {}, "classifiers": None, "chosen": None}
clf_log = w / "clf" / "classifiers_log.json"
if clf_log.is_file():
    logs["classifiers"] = json.loads(clf_log.read_text())
best = None
for k in "ABC":
    d = w / k
    entry = {}
    for name in ("train_log", "eval"):
        f = d / f"{name}.json"
        entry[name] = json.loads(f.read_text()) if f.is_file() else None
    logs["candidates"][k] = entry
    ev = entry["eval"]
    if ev is not None:
        key = (ev["conditional"]["eval_clf_accuracy"], -ev["unconditional"]["max_abs_deviation_from_0.1"])
        if best is None or key > best[0]:
            best = (key, k)
if best is not None:
    logs["chosen"] = best[1]
    dst = out / "mnist"
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "diffusion_pytorch_model.safetensors", "edm_config.json"):
        shutil.copy(w / best[1] / f, dst / f)
for name in ("mnist-reward-clf", "mnist-eval-clf"):
    src = w / "clf" / name
    if src.is_dir():
        shutil.copytree(src, out / name, dirs_exist_ok=True)
(out / "logs.json").write_text(json.dumps(logs, indent=1))
print("chosen:", logs["chosen"])
for k, e in logs["candidates"].items():
    t, ev = e["train_log"], e["eval"]
    if t and ev:
        print(k, "steps", t["steps"], "loss tr/ho %.4f/%.4f" % (t["ema_loss_train"], t["ema_loss_holdout"]),
              "cond acc", ev["conditional"]["eval_clf_accuracy"],
              "uncond dev %.3f" % ev["unconditional"]["max_abs_deviation_from_0.1"])
EOF
find "$OUT" -type f -exec ls -la {} +
