#!/usr/bin/env bash
# The held-out probe of the data-scale rung (experiments/results/scale_probe.md): 45,000 training images, 5,000 of
# the training split held out, the test split never read. Students first (20 and 40 epochs: do fewer epochs
# suffice?), then the teacher at 40 epochs. Rerun the same command to resume: finished runs are skipped.
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
  python -m svdkd_jax.main --config="$CONFIG:$2,per_class=0,holdout,$3" --workdir="$dir" --config.seed=0 \
    >>"$dir/run.log" 2>&1 || status=1
  echo "[$1] $2 seed0  finished $(date -u +%H:%M) ($(grep -o '"last_eval_accuracy": [0-9.]*' "$dir/summary.json"))"
}
run regime_cifar10_50k_holdout_epochs20 student epochs=20
run regime_cifar10_50k_holdout_epochs40 student epochs=40
run regime_cifar10_50k_holdout_epochs20 teacher teacher_epochs=40
exit $status
