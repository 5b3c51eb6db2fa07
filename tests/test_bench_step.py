"""experiments/bench_step.py at a tiny size: every case family builds and steps (the benchmark's own loss included)."""

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import bench_step  # noqa: E402


@pytest.mark.slow
def test_every_case_family_steps_at_a_tiny_size():
  result = bench_step.main(["--width", "0.125", "--batch", "8", "--steps", "1", "--rounds", "1", "--cases",
                            "student,floor,fsp,kd_svd_exact,kd_svd_paper@eigh", "--no-breakdown"])
  rates = result["images_per_sec"]
  assert set(rates) == {"student", "floor", "fsp", "kd_svd_exact", "kd_svd_paper@eigh"}
  assert all(rate > 0 for rate in rates.values()), rates
