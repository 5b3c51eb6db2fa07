"""experiments/probe_alignment.py on tiny finished runs of the bundled smoke config (a teacher, a student).

The student is an S-DNN run that names its teacher (config.teacher.workdir), which the probe reads like a KD-SVD
run's; a KD-SVD run would add its step's compilation (~10 s on the shared 2 cores) for nothing the probe checks.
The independent check: a network probed against itself has cos_top1 = 1 and zero KD-SVD losses.
"""

import json
import math
import pathlib

import pytest

from svdkd_jax import config_files
from svdkd_jax import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # trains smoke runs to probe


@pytest.fixture(scope="module")
def probe():
  return config_files.load_module(ROOT / "experiments" / "probe_alignment.py")


def _smoke(variant: str, **teacher):
  """`configs/cifar100_vgg.py:VARIANT,smoke` at width 1/8, one training step (its checkpoint is all we need)."""
  config = config_files.get_config(ROOT / f"configs/cifar100_vgg.py:{variant},smoke")
  config.model.width = config.teacher.width = 0.125
  config.train.max_steps = 1
  config.teacher.update(teacher)
  return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
  root = tmp_path_factory.mktemp("runs")
  teacher, student = str(root / "teacher" / "seed0"), str(root / "student" / "seed0")
  train.train_and_evaluate(_smoke("teacher"), teacher)
  train.train_and_evaluate(_smoke("student", workdir=teacher), student)
  return {"teacher": teacher, "student": student}


def test_student_against_its_teacher(probe, runs, tmp_path, capsys):
  out = tmp_path / "probe.json"
  [r] = probe.main(["--workdirs", runs["student"], "--batches", "1", "--out", str(out)])
  printed = capsys.readouterr().out
  print(printed)  # shown with pytest -s
  assert r["variant"] == "student" and r["seed"] == "seed0" and r["teacher"] == runs["teacher"]
  assert "student" in printed and "tap0 cos1/cosA/2nd" in printed and "dist/pair_0" in printed
  assert json.loads(out.read_text())[0]["cos_top1"] == r["cos_top1"]
  taps = len(r["cos_top1"])
  assert taps >= 2 and len(r["cos_aligned"]) == len(r["picked_second"]) == taps
  for name in ("cos_top1", "cos_aligned"):
    assert all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in r[name]), r[name]
  assert all(0.0 <= p <= 1.0 for p in r["picked_second"])
  # align picks the best of the top k+1 candidates, the top one among them.
  assert all(a >= c - 1e-5 for a, c in zip(r["cos_aligned"], r["cos_top1"]))
  losses = [r[f"dist/pair_{l}"] for l in range(taps - 1)]
  assert all(math.isfinite(x) and x >= 0.0 for x in losses)
  assert 0.0 <= r["student_accuracy"] <= 1.0 and 0.0 <= r["teacher_accuracy"] <= 1.0


def test_teacher_against_itself_is_aligned(probe, runs):
  [r] = probe.main(["--workdirs", runs["teacher"], "--teacher", runs["teacher"], "--batches", "1"])
  assert all(abs(c - 1.0) < 1e-4 for c in r["cos_top1"]), r["cos_top1"]
  assert all(abs(c - 1.0) < 1e-4 for c in r["cos_aligned"]) and all(p == 0.0 for p in r["picked_second"])
  taps = len(r["cos_top1"])
  assert all(r[f"dist/pair_{l}"] < 1e-6 for l in range(taps - 1)), r
  assert r["student_accuracy"] == r["teacher_accuracy"]


def test_clean_errors(probe, runs, tmp_path, capsys):
  with pytest.raises(SystemExit):  # A teacher run names no teacher.
    probe.main(["--workdirs", runs["teacher"]])
  assert "names no teacher" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    probe.main(["--workdirs", runs["student"], "--teacher", str(tmp_path / "no_teacher")])
  assert "no_teacher" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    probe.main(["--workdirs", str(tmp_path / "nowhere"), "--teacher", runs["teacher"]])
  assert "is not a run workdir" in capsys.readouterr().err
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text((pathlib.Path(runs["teacher"]) / "config.json").read_text())
  with pytest.raises(SystemExit):
    probe.main(["--workdirs", str(empty), "--teacher", runs["teacher"]])
  assert "has no finished checkpoint" in capsys.readouterr().err
