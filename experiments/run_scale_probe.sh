#!/usr/bin/env bash
# The held-out probes of the data-scale rung (experiments/results/scale_probe.md): 5,000 images of the training split
# held out, the test split never read. First 45,000 training images (every image but the held-out ones): students at
# 20 and 40 epochs (do fewer epochs suffice?), then the teacher at 40 epochs if they do; else the 25,000-image rung at
# the regime's 40 and 80 epochs. Rerun the same command to resume: finished runs are skipped.
#
#   experiments/run_scale_probe.sh [ROOT]    (default experiments/results/scale_probe_runs)
#   python experiments/probe_regime.py ROOT/*/*/seed0 --json experiments/results/scale_probe.json
set -u
cd "$(dirname "$0")/.."
ROOT=${1:-experiments/results/scale_probe_runs}
CONFIG=configs/regime_cifar10.py
status=0
run() {  # run TABLE VARIANT TOKENS
  local dir=$ROOT/$1/$2/seed0
  if grep -qs '"complete": true' "$dir/summary.json"; then echo "[$1] $2 seed0  skipped"; return; fi
  mkdir -p "$dir"
  echo "[$1] $2 seed0  started $(date -u +%H:%M)"
  python -m svdkd_jax.main --config="$CONFIG:$2,holdout,$3" --workdir="$dir" --config.seed=0 \
    >>"$dir/run.log" 2>&1 || status=1
  echo "[$1] $2 seed0  finished $(date -u +%H:%M) ($(grep -o '"last_eval_accuracy": [0-9.]*' "$dir/summary.json"))"
}
last() {  # last held-out accuracy (%) of a finished probe
  python -c "import json,sys; print(100 * json.load(open(sys.argv[1]))['last_eval_accuracy'])" "$ROOT/$1/student/seed0/summary.json"
}
run regime_cifar10_50k_holdout_epochs20 student per_class=0,epochs=20
run regime_cifar10_50k_holdout_epochs40 student per_class=0,epochs=40
if python -c "import sys; sys.exit(not abs(float(sys.argv[1]) - float(sys.argv[2])) <= 1.0)" \
    "$(last regime_cifar10_50k_holdout_epochs20)" "$(last regime_cifar10_50k_holdout_epochs40)"; then
  run regime_cifar10_50k_holdout_epochs20 teacher per_class=0,teacher_epochs=40
else  # Condition 2 fails: the 25,000-image rung at the regime's epochs.
  run regime_cifar10_25k_holdout student per_class=2500
  run regime_cifar10_25k_holdout teacher per_class=2500
fi
exit $status
