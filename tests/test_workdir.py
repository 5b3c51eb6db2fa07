"""workdir.prepare: a damaged config.json is one clear line, a larger train.epochs alone extends a run (any other
change is refused, with the fix when the boundaries followed the epochs), and gs:// workdirs go through etils.epath."""

import json
import logging
import os

from etils import epath
import fsspec
import pytest

from svdkd_jax import config as config_lib
from svdkd_jax import recipes
from svdkd_jax import workdir


def _config(**overrides):
  """The quickstart student with `section__key=value` overrides (no training: only the config is compared)."""
  config = recipes.quickstart("student")
  for key, value in overrides.items():
    *section, name = key.split("__")
    (config[section[0]] if section else config)[name] = value
  return config


def _files(root) -> dict:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fake_run(root):
  """A run's outputs, as prepare sees them (it reads config.json only)."""
  (root / "checkpoints" / "9").mkdir(parents=True)
  (root / "checkpoints" / "9" / "x").write_text("weights")
  (root / "metrics.jsonl").write_text('{"step": 9, "loss": 0.5}\n')
  (root / "summary.json").write_text('{"complete": true}\n')


def test_damaged_config_json_is_one_line_and_overwrite_starts_again(tmp_path):
  _fake_run(tmp_path)
  (tmp_path / "config.json").write_text('{"seed": 0, "mod')  # cut short (a full disk, a killed copy)
  before = _files(tmp_path)
  with pytest.raises(ValueError) as e:
    workdir.prepare(_config(), str(tmp_path), schema=config_lib.default())
  assert str(e.value) == (f"{tmp_path / 'config.json'} is damaged (not valid JSON), so this workdir's run cannot be "
                          "checked against the config: restore it, or pass --overwrite to start the run again.")
  assert _files(tmp_path) == before  # nothing touched
  (tmp_path / "config.json").write_text("[1, 2]")  # JSON, but not a config
  with pytest.raises(ValueError, match="is damaged"):
    workdir.read_config(str(tmp_path))
  workdir.prepare(_config(), str(tmp_path), schema=config_lib.default(), overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["config.json"]
  assert workdir.read_config(str(tmp_path))["train"]["epochs"] == 8
  with pytest.raises(FileNotFoundError, match=r"config.json is missing: .* is not the workdir of a run\.$"):
    workdir.read_config(str(tmp_path / "none"))


def test_more_epochs_extends_a_run_and_other_changes_are_refused(tmp_path, caplog):
  root = str(tmp_path)
  workdir.prepare(_config(), root, schema=config_lib.default())
  _fake_run(tmp_path)
  before = _files(tmp_path)
  # Fewer epochs, or epochs with another key: refused, nothing touched.
  with pytest.raises(ValueError) as e:
    workdir.prepare(_config(train__epochs=4), root, schema=config_lib.default())
  assert str(e.value) == (f"{root} holds a run with a different config (train.epochs: 8 -> 4). Use another --workdir, "
                          "or pass --overwrite to delete that run and start again.")
  with pytest.raises(ValueError) as e:  # a recipe whose boundaries follow the epoch count changes both
    workdir.prepare(_config(train__epochs=16, optim__boundaries=(12,)), root, schema=config_lib.default())
  assert str(e.value) == (
      f"{root} holds a run with a different config (optim.boundaries: [6] -> [12]; train.epochs: 8 -> 16). Only "
      "train.epochs alone may grow to extend a run; here optim.boundaries changed with it. To extend it on the "
      "schedule it was trained with, also pass --config.optim.boundaries='(6,)'. Use another --workdir, or pass "
      "--overwrite to delete that run and start again.")
  with pytest.raises(ValueError) as e:
    workdir.prepare(_config(train__epochs=16, optim__learning_rate=0.1), root, schema=config_lib.default())
  assert str(e.value) == (
      f"{root} holds a run with a different config (optim.learning_rate: 0.02 -> 0.1; train.epochs: 8 -> 16). Only "
      "train.epochs alone may grow to extend a run; here optim.learning_rate changed with it. Use another --workdir, "
      "or pass --overwrite to delete that run and start again.")
  assert _files(tmp_path) == before
  # train.epochs alone grows: the run is kept and config.json says the new length.
  with caplog.at_level(logging.INFO):
    workdir.prepare(_config(train__epochs=16), root, schema=config_lib.default())
  assert caplog.messages == [f"Extending the run in {root} from 8 to 16 epochs: it continues from its last checkpoint."]
  after = _files(tmp_path)
  assert json.loads(after.pop("config.json"))["train"]["epochs"] == 16
  before.pop("config.json")
  assert after == before
  # With --overwrite, a changed train.epochs starts the run again.
  workdir.prepare(_config(train__epochs=20), root, schema=config_lib.default(), overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_options_of_an_unused_distillation_method_are_not_compared(tmp_path):
  """A new default of `distill.svd_grad` (or `temperature`) does not make a student, FSP or soft-target run another
  run; for a KD-SVD run it does."""
  for variant, key, value in (("student", "svd_grad", "exact"), ("fsp", "svd_grad", "exact"),
                              ("soft_target", "loss_scale", "mean"), ("kd_svd", "temperature", 2.0)):
    root = str(tmp_path / variant)
    workdir.prepare(recipes.quickstart(variant), root, schema=config_lib.default())
    config = recipes.quickstart(variant)
    config.distill[key] = value
    workdir.prepare(config, root, schema=config_lib.default())
    assert workdir.read_config(root)["distill"][key] == value
  root = str(tmp_path / "kd_svd")
  config = recipes.quickstart("kd_svd")
  config.distill.svd_grad = "sskd_code" if config.distill.svd_grad != "sskd_code" else "exact"
  with pytest.raises(ValueError, match="distill.svd_grad"):
    workdir.prepare(config, root, schema=config_lib.default())
  # A change of method compares every option.
  assert [c[0] for c in workdir.config_changes({"distill": {"method": "fsp", "svd_grad": "paper"}},
                                               {"distill": {"method": "kd_svd", "svd_grad": "exact"}}, None)] == \
      ["distill.method", "distill.svd_grad"]


def test_extension_is_train_epochs_growing_alone():
  assert workdir.extension([("train.epochs", 3, 5)]) == (3, 5)
  assert workdir.extension([("train.epochs", 5, 3)]) is None
  assert workdir.extension([]) is None
  assert workdir.extension([("optim.boundaries", [1], [2]), ("train.epochs", 3, 5)]) is None
  assert workdir.extension([("seed", 0, 1)]) is None


def test_gs_workdir_goes_through_epath(tmp_path, in_memory_gcs):
  """prepare on a gs:// workdir (an in-memory fsspec file system stands in for GCS): config.json written, checked,
  a damaged one reported, and --overwrite deleting the run; nothing touches the local disk."""
  root = "gs://bucket/runs/wire"
  workdir.prepare(_config(), root, schema=config_lib.default())
  assert workdir.read_config(root)["seed"] == 0
  workdir.prepare(_config(), root, schema=config_lib.default())  # the same run: accepted
  for name, data in (("metrics.jsonl", "{}\n"), ("checkpoints/1/x", "weights")):
    (epath.Path(root) / name).parent.mkdir(parents=True, exist_ok=True)
    (epath.Path(root) / name).write_text(data)
  with pytest.raises(ValueError, match=r"^gs://bucket/runs/wire holds a run with a different config \(seed: 0 -> 1\)"):
    workdir.prepare(_config(seed=1), root, schema=config_lib.default())
  (epath.Path(root) / "config.json").write_text('{"se')
  with pytest.raises(ValueError, match=r"^gs://bucket/runs/wire/config.json is damaged \(not valid JSON\)"):
    workdir.prepare(_config(seed=1), root, schema=config_lib.default())
  workdir.prepare(_config(seed=1), root, schema=config_lib.default(), overwrite=True)
  assert [p.name for p in epath.Path(root).iterdir()] == ["config.json"]
  assert workdir.read_config(root)["seed"] == 1
  assert os.listdir(tmp_path) == []
