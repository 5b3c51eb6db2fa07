#!/usr/bin/env bash
# The runs of experiments/baselines_plan.md: attention transfer and DKD in the all-labels regime table, seed by seed
# (both rows of seed 0, then of seed 1, ...), with the table's committed teacher. Rerun the same command to resume:
# finished runs are skipped, unfinished ones resume. Students read their teacher's last checkpoint (nothing is
# chosen on the test split).
#
#   experiments/run_baselines_table.sh [ROOT]    (default experiments/results/regime_runs)
#   python experiments/regime_report.py --readme experiments/results/README.md
set -u
cd "$(dirname "$0")/.."
ROOT=${1:-experiments/results/regime_runs}
status=0
for seed in 0 1 2 3 4; do
  python experiments/run_table.py --config configs/regime_cifar10.py --seeds "$seed" \
    --variants attention_transfer,dkd --root "$ROOT" --teacher_checkpoint last || status=1
done
exit $status
