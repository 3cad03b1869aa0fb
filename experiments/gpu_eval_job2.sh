set -uo pipefail
export PYTHONPATH="$PWD:$PYTHONPATH" PYTHONUNBUFFERED=1
R=.gpu_cal
pack() { tar -czf "$OUT/results.tgz" --exclude='calibration_*' -C "$R" . ; }
for spec in "mnist-target 150" "mnist-brightness 200" "mnist-compress 210"; do
  set -- $spec
  echo "== $1"; timeout "$2" python3 -m experiments.eval_controllers --task "$1" --device cuda --out "$R" 2>&1 | grep -v -E "it/s\]|Warning|warn\(|float32" | tail -n 30 > "$R/ctl-$1.txt"; tail -n 26 "$R/ctl-$1.txt"; pack
done
