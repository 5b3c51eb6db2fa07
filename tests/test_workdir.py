"""workdir.prepare: a damaged config.json is one clear line, a larger train.epochs alone extends a run (any other
change is refused, with the fix when the boundaries followed the epochs), and gs:// workdirs go through etils.epath."""

import json
import logging
import os

from etils import epath
import fsspec
import pytest

from svdkd_jax import recipes
from svdkd_jax import run_config
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
    workdir.prepare(_config(), str(tmp_path))
  assert str(e.value) == (f"{tmp_path / 'config.json'} is damaged (not valid JSON), so this workdir's run cannot be "
                          "checked against the config: restore it, or pass --overwrite to start the run again.")
  assert _files(tmp_path) == before  # nothing touched
  (tmp_path / "config.json").write_text("[1, 2]")  # JSON, but not a config
  with pytest.raises(ValueError, match="is damaged"):
    workdir.read_config(str(tmp_path))
  workdir.prepare(_config(), str(tmp_path), overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["config.json"]
  assert workdir.read_config(str(tmp_path))["train"]["epochs"] == 8
  with pytest.raises(FileNotFoundError, match=r"config.json is missing: .* is not the workdir of a run\.$"):
    workdir.read_config(str(tmp_path / "none"))


def test_more_epochs_extends_a_run_and_other_changes_are_refused(tmp_path, caplog):
  root = str(tmp_path)
  workdir.prepare(_config(), root)
  _fake_run(tmp_path)
  before = _files(tmp_path)
  # Fewer epochs, or epochs with another key: refused, nothing touched.
  with pytest.raises(ValueError) as e:
    workdir.prepare(_config(train__epochs=4), root)
  assert str(e.value) == (f"{root} holds a run with a different config (train.epochs: 8 -> 4). Use another --workdir, "
                          "or pass --overwrite to delete that run and start again.")
  with pytest.raises(ValueError) as e:  # a recipe whose boundaries follow the epoch count changes both
    workdir.prepare(_config(train__epochs=16, optim__boundaries=(12,)), root)
  assert str(e.value) == (
      f"{root} holds a run with a different config (optim.boundaries: [6] -> [12]; train.epochs: 8 -> 16). Only "
      "train.epochs alone may grow to extend a run; here optim.boundaries changed with it. To extend it on the "
      "schedule it was trained with, also pass --config.optim.boundaries='(6,)'. Use another --workdir, or pass "
      "--overwrite to delete that run and start again.")
  with pytest.raises(ValueError) as e:
    workdir.prepare(_config(train__epochs=16, optim__learning_rate=0.1), root)
  assert str(e.value) == (
      f"{root} holds a run with a different config (optim.learning_rate: 0.02 -> 0.1; train.epochs: 8 -> 16). Only "
      "train.epochs alone may grow to extend a run; here optim.learning_rate changed with it. Use another --workdir, "
      "or pass --overwrite to delete that run and start again.")
  assert _files(tmp_path) == before
  # train.epochs alone grows: the run is kept and config.json says the new length.
  with caplog.at_level(logging.INFO):
    workdir.prepare(_config(train__epochs=16), root)
  assert caplog.messages == [f"Extending the run in {root} from 8 to 16 epochs: it continues from its last checkpoint."]
  after = _files(tmp_path)
  assert json.loads(after.pop("config.json"))["train"]["epochs"] == 16
  before.pop("config.json")
  assert after == before
  # With --overwrite, a changed train.epochs starts the run again.
  workdir.prepare(_config(train__epochs=20), root, overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_options_of_an_unused_distillation_method_are_not_compared(tmp_path):
  """A new default of `distill.svd_grad` (or `temperature`) does not make a student, FSP or soft-target run another
  run; for a KD-SVD run it does. The run's config.json keeps the values it was written with."""
  for variant, key, value in (("student", "svd_grad", "kept_triplets"), ("fsp", "svd_grad", "released_code"),
                              ("soft_target", "loss_scale", "sum"), ("kd_svd_exact", "temperature", 2.0)):
    root = str(tmp_path / variant)
    workdir.prepare(recipes.quickstart(variant), root, unread=run_config.unread_keys)
    written = (tmp_path / variant / "config.json").read_bytes()
    config = recipes.quickstart(variant)
    config.distill[key] = value
    workdir.prepare(config, root, unread=run_config.unread_keys)
    assert (tmp_path / variant / "config.json").read_bytes() == written
    with pytest.raises(ValueError, match=f"distill.{key}"):  # compared when nothing says which keys a run reads
      workdir.prepare(config, root)
  root = str(tmp_path / "kd_svd_exact")
  config = recipes.quickstart("kd_svd_exact")
  config.distill.svd_grad = "released_code"
  with pytest.raises(ValueError, match="distill.svd_grad"):
    workdir.prepare(config, root, unread=run_config.unread_keys)
  # A change of method compares every option.
  assert [c[0] for c in workdir.config_changes({"distill": {"method": "fsp", "svd_grad": "paper"}},
                                               {"distill": {"method": "kd_svd", "svd_grad": "exact"}},
                                               run_config.unread_keys)] == ["distill.method", "distill.svd_grad"]


def test_earlier_value_names_are_the_same_run_and_the_record_keeps_them(tmp_path):
  """A config.json written with the earlier value names (config.ALIASES) is the run of today's names: it resumes,
  config.json is left as it was, and read_config gives today's names. A changed value is still a change."""
  config = recipes.quickstart("kd_svd")
  config.data.augment, config.data.normalization = "flip_rotate_crop", "cifar100_bgr"
  config.combine.rule = "rescale_per_tensor"
  earlier = json.loads(config.to_json_best_effort())
  earlier["data"].update(augment="sskd", normalization="sskd_bgr")
  earlier["distill"].update(svd_grad="paper", loss_scale="sskd")
  earlier["combine"]["rule"] = "poster"
  del earlier["data"]["image_key"]  # a key added since: its default
  (tmp_path / "config.json").write_text(json.dumps(earlier))
  before = _files(tmp_path)
  workdir.prepare(config, str(tmp_path), unread=run_config.unread_keys)
  assert _files(tmp_path) == before
  read = workdir.read_config(str(tmp_path))
  assert (read["data"]["augment"], read["data"]["normalization"], read["distill"]["svd_grad"],
          read["distill"]["loss_scale"], read["combine"]["rule"]) == ("flip_rotate_crop", "cifar100_bgr",
                                                                      "kept_triplets", "sum", "rescale_per_tensor")
  config.combine.rule = "clip_per_tensor"
  with pytest.raises(ValueError, match=r"\(combine.rule: 'rescale_per_tensor' -> 'clip_per_tensor'\)"):
    workdir.prepare(config, str(tmp_path))


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
  workdir.prepare(_config(), root)
  assert workdir.read_config(root)["seed"] == 0
  workdir.prepare(_config(), root)  # the same run: accepted
  for name, data in (("metrics.jsonl", "{}\n"), ("checkpoints/1/x", "weights")):
    (epath.Path(root) / name).parent.mkdir(parents=True, exist_ok=True)
    (epath.Path(root) / name).write_text(data)
  with pytest.raises(ValueError, match=r"^gs://bucket/runs/wire holds a run with a different config \(seed: 0 -> 1\)"):
    workdir.prepare(_config(seed=1), root)
  (epath.Path(root) / "config.json").write_text('{"se')
  with pytest.raises(ValueError, match=r"^gs://bucket/runs/wire/config.json is damaged \(not valid JSON\)"):
    workdir.prepare(_config(seed=1), root)
  workdir.prepare(_config(seed=1), root, overwrite=True)
  assert [p.name for p in epath.Path(root).iterdir()] == ["config.json"]
  assert workdir.read_config(root)["seed"] == 1
  assert os.listdir(tmp_path) == []
