#!/usr/bin/env bash
# The regime table (configs/regime_cifar10.py): both label budgets, seed by seed, so that a table stopped part-way
# holds paired rows for its first seeds. Students read each teacher's last checkpoint (nothing is chosen on the
# test split). Rerun the same command to resume: finished runs are skipped, unfinished ones resume.
#
#   experiments/run_regime_table.sh [ROOT]    (default experiments/results/regime_runs)
#   python experiments/regime_report.py --readme README.md
set -u
cd "$(dirname "$0")/.."
ROOT=${1:-experiments/results/regime_runs}
LABELS=$(python -c "from svdkd_jax import config_files as c; print(c.load_module('configs/regime_cifar10.py').LIMITED_LABELS)")
status=0
for seed in 0 1 2 3 4; do
  for spec in configs/regime_cifar10.py "configs/regime_cifar10.py:labels=$LABELS"; do
    python experiments/run_table.py --config "$spec" --seeds "$seed" --root "$ROOT" --teacher_checkpoint last || status=1
  done
done
exit $status
