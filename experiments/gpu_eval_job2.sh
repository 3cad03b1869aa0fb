#!/usr/bin/env bash
# Second device call: rerun the controller evaluation on the three tasks, reusing the calibration
# traces of the first call (copied into the git-ignored .gpu_cal/ and carried), so only the fits
# and the held-out evaluation run. OUT=/some/dir bash experiments/gpu_eval_job2.sh
set -uo pipefail
export PYTHONPATH="$PWD:$PYTHONPATH" PYTHONUNBUFFERED=1
R=.gpu_cal
pack() { tar -czf "$OUT/results.tgz" --exclude='calibration_*' -C "$R" . ; }
for spec in "mnist-target 150" "mnist-brightness 200" "mnist-compress 210"; do
  set -- $spec
  echo "== $1"; timeout "$2" python3 -m experiments.eval_controllers --task "$1" --device cuda --out "$R" 2>&1 | grep -v -E "it/s\]|Warning|warn\(|float32" | tail -n 30 > "$R/ctl-$1.txt"; tail -n 26 "$R/ctl-$1.txt"; pack
done
