"""experiments/probe_gradients.py on tiny run workdirs of the bundled smoke config (a teacher, a KD-SVD student).

The runs are written, not trained (a training step's compilation would double the test's time): each workdir holds
its config.json and one checkpoint of random weights, in the layout `train.train_and_evaluate` writes, so the probe
restores them exactly as a finished run's. Independent checks: the exact gradient is a descent
direction of the KD-SVD loss for a small step, and its cosine with itself is 1.
"""

import json
import math
import os
import pathlib

import jax
import numpy as np
import pytest

from svdkd_jax import checkpoint
from svdkd_jax import config_files
from svdkd_jax import input_pipeline
from svdkd_jax import optim
from svdkd_jax import workdir

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # trains smoke runs to probe


@pytest.fixture(scope="module")
def probe():
  return config_files.load_module(ROOT / "experiments" / "probe_gradients.py")


def _variables(shapes: dict, seed: int) -> dict:
  """The network's {"params", "rest"} of `shapes` with He-normal kernels and zero biases, drawn by NumPy: eager JAX
  initialisers compile one program per shape, which took most of this test's time on a busy machine."""
  variables = shapes
  rng = np.random.default_rng(seed)

  def fill(path, x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.key(seed)
    if optim.is_kernel(path):
      return (rng.standard_normal(x.shape) * np.sqrt(2 / np.prod(x.shape[:-1]))).astype(x.dtype)
    return np.zeros(x.shape, x.dtype)

  return jax.tree_util.tree_map_with_path(fill, variables)


def _write_run(abstract_variables, variant: str, path: str, seed: int, **teacher) -> None:
  """`configs/cifar100_vgg.py:VARIANT,smoke` at width 1/8: config.json and a step-1 checkpoint of random weights."""
  config = config_files.get_config(ROOT / f"configs/cifar100_vgg.py:{variant},smoke")
  config.model.width = config.teacher.width = 0.125
  config.seed = seed
  config.teacher.update(teacher)
  workdir.prepare(config, path)
  ds = input_pipeline.create_datasets(config.data, global_batch_size=32, eval_batch_size=32, seed=seed)
  manager = checkpoint.create_manager(os.path.join(path, "checkpoints"), keep=1)
  meta = {"step": 1, "num_classes": ds.num_classes, "config": json.loads(config.to_json_best_effort())}
  shapes = abstract_variables(config.model.name, config.model.width, ds.num_classes, image_size=ds.image_shape[0],
                              dropout=config.model.dropout)
  model = _variables(shapes, seed)
  checkpoint.save(manager, 1, model=model, opt={"step": np.ones((), np.int32)}, meta=meta)
  manager.wait_until_finished()
  manager.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, abstract_variables) -> dict[str, str]:
  root = tmp_path_factory.mktemp("runs")
  teacher, student = str(root / "teacher" / "seed0"), str(root / "kd_svd" / "seed1")
  _write_run(abstract_variables, "teacher", teacher, 0)
  _write_run(abstract_variables, "kd_svd", student, 1, workdir=teacher)
  return {"teacher": teacher, "student": student}


def _numbers(tree):
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _numbers(v)
  elif isinstance(tree, list):
    for v in tree:
      yield from _numbers(v)
  elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
    yield tree


def test_exact_gradient_descends(probe, runs, tmp_path, capsys):
  out = tmp_path / "probe.json"
  r = probe.main(["--workdir", runs["student"], "--batches", "1", "--out", str(out)])
  printed = capsys.readouterr().out
  print(printed)  # shown with pytest -s
  assert "dL eta=0.001" in printed and "combine sskd" in printed and "s1/s2" in printed
  assert json.loads(out.read_text())["loss"] == r["loss"] and not r["init"]
  assert all(math.isfinite(x) for x in _numbers(r)), r
  assert r["loss"] > 0 and abs(sum(r["pairs"].values()) - r["loss"]) < 1e-3 * r["loss"]
  exact = r["modes"]["exact"]
  assert exact["cos_exact"] == pytest.approx(1.0, abs=1e-6)
  convs = [x for x in exact["layers"].values() if x["cos_exact"] is not None]
  assert convs and all(x["cos_exact"] == pytest.approx(1.0, abs=1e-6) for x in convs)
  first = exact["descent"][0]
  assert first["eta"] == 1e-3 and first["delta"] < 0 and first["predicted"] < 0, exact["descent"]
  for m in probe.MODES:
    assert [c["epoch"] for c in r["modes"][m]["combine"]] == list(probe.EPOCHS)
    assert all(0.0 <= c["dist_share"] <= 1.0 for c in r["modes"][m]["combine"])
  assert len(r["taps"]) >= 2 and all(t["s1_s2"] >= 1.0 and t["s2_s3"] >= 1.0 for t in r["taps"])


def test_clean_errors(probe, runs, tmp_path, capsys):
  with pytest.raises(SystemExit):  # A teacher run names no teacher.
    probe.main(["--workdir", runs["teacher"]])
  assert "names no teacher" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    probe.main(["--workdir", runs["student"], "--teacher", str(tmp_path / "no_teacher")])
  assert "no_teacher" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    probe.main(["--workdir", str(tmp_path / "nowhere")])
  assert "is not a run workdir" in capsys.readouterr().err
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text((pathlib.Path(runs["student"]) / "config.json").read_text())
  with pytest.raises(SystemExit):
    probe.main(["--workdir", str(empty)])
  assert "has no finished checkpoint" in capsys.readouterr().err
