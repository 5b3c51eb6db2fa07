"""docs/your_network.md: a ResNet written without this package (docs/examples/my_resnet.py, logits only), registered by
its config file (docs/examples/my_resnet_config.py) and distilled with KD-SVD from a copy twice as wide through taps
chosen by name, through `train_and_evaluate`; and the errors of a bad tap path, taps of mismatched shapes and an
option the method does not read, each one line before anything is written. (The library form is the README's
example: tests/test_readme.py.)"""

import pathlib
import sys

import pytest

from svdkd_jax import config_files
from svdkd_jax import metrics as metrics_lib
from svdkd_jax import models
from svdkd_jax import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "docs" / "examples" / "my_resnet_config.py"


@pytest.fixture
def my_resnet_config(monkeypatch):
  """`my_resnet_config(arg)`: the example's config; `docs/examples/` is on the path as the user's package would be,
  and the network it registers is gone after the test."""
  monkeypatch.syspath_prepend(str(ROOT / "docs" / "examples"))
  monkeypatch.delitem(sys.modules, "my_resnet", raising=False)
  monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
  return lambda arg: config_files.get_config(f"{CONFIG}:{arg}")


def test_the_config_registers_a_logits_only_network_with_named_taps(my_resnet_config):
  config = my_resnet_config("kd_svd_exact_mean,smoke")
  assert models.logits_only("my_resnet") and (config.model.name, config.teacher.name) == ("my_resnet", "my_resnet")
  assert (config.model.width, config.teacher.width) == (1.0, 2.0)
  assert (config.model.taps, config.teacher.taps) == (("stage2", "stage3"), ("stage1", "stage2"))
  teacher = my_resnet_config("teacher")
  assert (teacher.model.width, teacher.model.taps, teacher.distill.method) == (2.0, (), "none")
  with pytest.raises(ValueError, match="one of the package's networks"):
    models.register("resnet8", models.Entry(lambda *a, **k: None))


@pytest.mark.parametrize("overrides,error", [
    ({"model__taps": ("stage2", "stage4")},
     r"^tap 'stage4' names no submodule of ResNet; paths at the top level: head, stage1, stage2, stage3, stem, "
     r"stem_bn\.$"),
    ({"teacher__taps": ("stage2", "stage3")},  # the wider teacher's stage 2 has twice the student's channels
     r"^kd_svd: tap 0 channel counts differ: student \(2, 16, 16, 32\), teacher \(2, 16, 16, 64\)"),
    ({"distill__dkd_beta": 2.0},
     r"^config.distill.dkd_beta=2.0 is not read by distill.method='kd_svd' \(it reads k, beta, svd_grad, "
     r"loss_scale, svd_solver\)"),
    ({"model__taps": ("stage2", "stage2")}, r"^config.model.taps=\('stage2', 'stage2'\) must be a tuple of distinct"),
    ({"model__taps": ("stage2,stage3",)},  # what --config.model.taps=stage2,stage3 gives
     r"^config.model.taps=\('stage2,stage3',\): a path has a comma; on the command line give a tuple"),
])
def test_tap_and_option_errors_are_one_line_before_anything_is_written(my_resnet_config, tmp_path, overrides, error):
  config = my_resnet_config("kd_svd_exact_mean,smoke")
  config.teacher.weights = "random"
  for key, value in overrides.items():
    section, name = key.split("__")
    config[section][name] = value
  with pytest.raises(ValueError, match=error) as raised:
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert "\n" not in str(raised.value)
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_user_resnet_is_distilled_by_named_taps_through_the_trainer(my_resnet_config, tmp_path):
  """Teacher (twice as wide) and KD-SVD student, two steps each; the student restores the teacher's checkpoint and
  its KD-SVD loss and gradient are live at the named taps."""
  teacher = my_resnet_config("teacher,smoke")
  assert train.train_and_evaluate(teacher, str(tmp_path / "teacher"))["step"] == 2
  student = my_resnet_config("kd_svd_exact_mean,smoke")
  student.teacher.workdir = str(tmp_path / "teacher")
  summary = train.train_and_evaluate(student, str(tmp_path / "student"))
  assert summary["step"] == 2 and summary["complete"] and summary["model"] == "my_resnet"
  last = [r for r in metrics_lib.read_jsonl(tmp_path / "student" / metrics_lib.METRICS_FILE) if "loss" in r][-1]
  assert last["dist_loss"] > 0 and last["grad_norm_dist"] > 0 and "dist/pair_0" in last
  assert summary["config"]["model"]["taps"] == ["stage2", "stage3"]
