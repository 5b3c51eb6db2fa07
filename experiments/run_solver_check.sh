#!/usr/bin/env bash
# The regime pair (all labels, seed 0: S-DNN and KD-SVD exact+mean) rerun on the current eigensolver, against the
# committed runs of experiments/results/regime_runs/regime_cifar10 and the earlier reruns under
# experiments/results/solver_check_runs (experiments/results/README.md, "The iterative eigensolvers do not move
# results"): regime_cifar10 (the first subspace solver), cholesky_qr (CholeskyQR subspace iteration, power
# iteration for the teacher's pair, conjugate gradients in the exact backward) and lanczos (the current CPU solver:
# Lanczos for the student's pairs above 8 x 8). Both read the committed teacher's last checkpoint. Rerun to
# resume; finished runs are skipped.
#
#   experiments/run_solver_check.sh [ROOT]    (default experiments/results/solver_check_runs/lanczos)
set -u
cd "$(dirname "$0")/.."
ROOT=${1:-experiments/results/solver_check_runs/lanczos}
python experiments/run_table.py --config configs/regime_cifar10.py --table regime_cifar10 --seeds 0 \
  --variants student,kd_svd_exact_mean --root "$ROOT" \
  --teacher_workdir experiments/results/regime_runs/regime_cifar10/teacher/seed0 --teacher_checkpoint last "${@:2}"
