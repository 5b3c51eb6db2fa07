#!/usr/bin/env bash
# The regime pair (all labels, seed 0: S-DNN and KD-SVD exact+mean) rerun with the CholeskyQR eigensolver
# (subspace iteration, the teacher's single pair by power iteration, the flat-spectrum probe, the exact backward
# from every pair behind a full eigh and by conjugate gradients behind subspace iteration), against the committed
# runs of experiments/results/regime_runs/regime_cifar10 and the earlier rerun of
# experiments/results/solver_check_runs/regime_cifar10 (experiments/results/README.md, "The subspace eigensolver does
# not move results"). Both read the committed teacher's last checkpoint. Rerun to resume; finished runs are skipped.
#
#   experiments/run_solver_check.sh [ROOT]    (default experiments/results/solver_check_runs/cholesky_qr)
set -u
cd "$(dirname "$0")/.."
ROOT=${1:-experiments/results/solver_check_runs/cholesky_qr}
python experiments/run_table.py --config configs/regime_cifar10.py --table regime_cifar10 --seeds 0 \
  --variants student,kd_svd_exact_mean --root "$ROOT" \
  --teacher_workdir experiments/results/regime_runs/regime_cifar10/teacher/seed0 --teacher_checkpoint last "${@:2}"
