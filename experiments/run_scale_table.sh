#!/usr/bin/env bash
# The runs of experiments/scale_plan.md at its rung (25,000 images, 40 student epochs): the teacher is the held-out
# probe's (trained on these same images; its last checkpoint measured once on the test split), then the rows of the
# knowledge question (S-DNN, KD-SVD exact+mean and its untrained-teacher control) seed by seed, then the soft-target
# rows. Rerun the same command to resume: finished runs are skipped, unfinished ones resume. Students read the
# teacher's last checkpoint.
#
#   experiments/run_scale_table.sh [ROOT]    (default experiments/results/scale_runs; TEACHER=DIR overrides the
#                                             teacher's run folder, e.g. when the table runs from another checkout)
#   python experiments/scale_report.py --readme experiments/results/README.md
set -u
cd "$(dirname "$0")/.."
ROOT=${1:-experiments/results/scale_runs}
RUNG=per_class=2500
TABLE=regime_cifar10_25k
TEACHER=${TEACHER:-experiments/results/scale_probe_runs/regime_cifar10_25k_holdout/teacher/seed0}
status=0
run() {  # run SEEDS VARIANTS
  python experiments/run_table.py --config "configs/regime_cifar10.py:$RUNG" --table $TABLE --seeds "$1" \
    --variants "$2" --root "$ROOT" --teacher_workdir "$TEACHER" --teacher_checkpoint last --all_seeds || status=1
}
# 0. The teacher's last checkpoint on the test split, once.
if [ ! -f "$ROOT/$TABLE/teacher_test.json" ]; then
  mkdir -p "$ROOT/$TABLE"
  python experiments/evaluate_run.py "$TEACHER" --split test --json "$ROOT/$TABLE/teacher_test.json" || status=1
fi
# 1. The knowledge question, seeds 0-4.
for seed in 0 1 2 3 4; do
  run $seed student,kd_svd_exact_mean,kd_svd_exact_mean_untrained_teacher
done
# 2. Soft targets and KD-SVD plus soft targets, seeds 0-2.
for seed in 0 1 2; do
  run $seed soft_target,kd_svd_exact_mean_soft_target
done
exit $status
