#!/usr/bin/env bash
# The runs of experiments/gain_plan.md, group by group (1 to 4; a table that does not fit drops groups from the
# bottom), seed-major inside a group. Rerun the same command to resume: finished runs are skipped, unfinished ones
# resume. Students read their teacher's last checkpoint (nothing is chosen on the test split).
#
#   experiments/run_gain_table.sh [ROOT]    (default experiments/results/regime_runs)
#   python experiments/regime_report.py --readme experiments/results/README.md
set -u
cd "$(dirname "$0")/.."
ROOT=${1:-experiments/results/regime_runs}
CONFIG=configs/regime_cifar10.py
status=0
run() {  # run SPEC SEED VARIANTS [run_table options]
  local spec=$1 seed=$2 variants=$3
  shift 3
  python experiments/run_table.py --config "$spec" --seeds "$seed" --variants "$variants" --root "$ROOT" \
    --teacher_checkpoint last "$@" || status=1
}
# 1. Controls, all labels.
for seed in 0 1 2 3 4; do
  run $CONFIG $seed kd_svd_exact_mean_untrained_teacher,kd_svd_exact_mean_deranged
done
# 2. Head to head, both budgets.
for seed in 3 4; do
  for spec in $CONFIG $CONFIG:labels=250; do run "$spec" $seed soft_target,fsp; done
done
for seed in 0 1 2 3 4; do
  for spec in $CONFIG $CONFIG:labels=250; do run "$spec" $seed kd_svd_exact_mean_soft_target; done
done
# 3. The stride student, all labels, with the all-labels table's teacher.
for seed in 0 1 2 3 4; do
  run $CONFIG:stride $seed student,soft_target,fsp,kd_svd_exact_mean,kd_svd,kd_svd_exact --teacher_table regime_cifar10 \
    --all_seeds  # the plan runs every row on seeds 0-4, the poster's `kd_svd` too
done
# 4. 50 labels per class (10 %), with a teacher trained on those labels (trained first).
for seed in 0 1 2 3 4; do
  run $CONFIG:labels=50 $seed student,soft_target,kd_svd_exact_mean
done
exit $status
