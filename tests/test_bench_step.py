"""experiments/bench_step.py at a tiny size: its own floor loss and a KD-SVD case with a solver override step."""

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import bench_step  # noqa: E402


@pytest.mark.slow
def test_floor_and_solver_override_cases_step_at_a_tiny_size():
  result = bench_step.main(["--width", "0.125", "--batch", "8", "--steps", "1", "--rounds", "1", "--cases",
                            "floor,kd_svd_exact@eigh", "--no-breakdown"])
  rates = result["images_per_sec"]
  assert set(rates) == {"floor", "kd_svd_exact@eigh"}
  assert all(rate > 0 for rate in rates.values()), rates
