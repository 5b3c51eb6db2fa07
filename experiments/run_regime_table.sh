#!/usr/bin/env bash
# The regime table (configs/regime_cifar10.py): both label budgets, students reading each teacher's last checkpoint
# (nothing is chosen on the test split). Rerun the same command to resume: finished runs are skipped, unfinished
# ones resume. The order only matters for a table stopped part-way, which then holds paired rows in both budgets:
#   1. seed 0 of every row;
#   2. seeds 1-4 of S-DNN and both KD-SVD `exact` rows (the rows with 5 seeds);
#   3. seeds 1-2 of the other rows, soft target and sskd_code first, then FSP, then paper (the order in which a
#      table that does not fit drops rows).
#
#   experiments/run_regime_table.sh [ROOT]    (default experiments/results/regime_runs)
#   python experiments/regime_report.py --readme experiments/results/README.md
set -u
cd "$(dirname "$0")/.."
ROOT=${1:-experiments/results/regime_runs}
LABELS=$(python -c "from svdkd_jax import config_files as c; print(c.load_module('configs/regime_cifar10.py').LIMITED_LABELS)")
status=0
run() {  # run SEED VARIANTS: both budgets
  for spec in configs/regime_cifar10.py "configs/regime_cifar10.py:labels=$LABELS"; do
    python experiments/run_table.py --config "$spec" --seeds "$1" --variants "$2" --root "$ROOT" \
      --teacher_checkpoint last || status=1
  done
}
run 0 student,kd_svd_exact,kd_svd_exact_mean,soft_target,fsp,kd_svd_sskd_code,kd_svd
for seed in 1 2 3 4; do run $seed student,kd_svd_exact,kd_svd_exact_mean; done
for seed in 1 2; do run $seed soft_target,kd_svd_sskd_code; done
for seed in 1 2; do run $seed fsp; done
for seed in 1 2; do run $seed kd_svd; done
exit $status
