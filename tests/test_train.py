"""End-to-end tests of svdkd_jax.train on a tiny problem (tests/conftest.py): 2 digit classes, VGG pair at width 1/8.

A teacher is trained once per module; each distillation method then runs a few steps against it. Resume, errors,
and the compile count are checked here; multi-device runs are in tests/test_parallel.py. Every test that trains is
marked `slow`: `pytest -m "not slow"` keeps the config and error checks that fail before training.
"""

import json
import math
import os

from flax import nnx
import jax
import numpy as np
import pytest

from svdkd_jax import checkpoint
from svdkd_jax import distill
from svdkd_jax import metrics as metrics_lib
from svdkd_jax import networks
from svdkd_jax import parallel
from svdkd_jax import steps as steps_lib
from svdkd_jax import train


def _rows(workdir) -> list[dict]:
  return metrics_lib.read_jsonl(os.path.join(workdir, metrics_lib.METRICS_FILE))


def by_path(params) -> dict:
  """{"blocks/0/0/kernel": array} of a params tree, an nnx.State or a checkpoint's nested {"value": array} dicts."""
  flat = {}
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    flat["/".join(k for k in keys if k != "value")] = np.asarray(x)
  return flat


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_config) -> str:
  workdir = str(tmp_path_factory.mktemp("teacher"))
  summary = train.train_and_evaluate(tiny_config("teacher", train__epochs=2), workdir)
  assert summary["complete"]
  return workdir


@pytest.mark.slow
def test_teacher_run(teacher_dir, tiny_config):
  summary = metrics_lib.read_summary(teacher_dir)
  assert summary["complete"] and summary["step"] == summary["total_steps"] == 18
  assert 0.0 <= summary["best_eval_accuracy"] <= 1.0 and summary["best_eval_accuracy"] >= summary["last_eval_accuracy"]
  assert summary["versions"]["jax"] == jax.__version__ and summary["config"]["model"]["name"] == "vgg_teacher"
  rows = _rows(teacher_dir)
  evals = [r for r in rows if "eval_accuracy" in r]
  assert [r["step"] for r in evals] == [9, 18]
  train_rows = [r for r in rows if "loss" in r]
  for key in ("lr", "ce_loss", "accuracy", "images_per_sec", "grad_norm_main", "grad_norm", "epoch"):
    assert key in train_rows[-1], key
  assert train_rows[0]["lr"] == pytest.approx(0.02) and train_rows[-1]["lr"] == pytest.approx(0.002)  # epoch 1 decay
  assert "grad_norm_dist" not in train_rows[-1]  # no distillation: no second gradient
  assert os.listdir(os.path.join(teacher_dir, "tensorboard"))
  # The best checkpoint is kept next to the last `keep_checkpoints`.
  manager = checkpoint.create_manager(os.path.join(teacher_dir, "checkpoints"), keep=1, read_only=True)
  assert manager.latest_step() == 18 and manager.best_step() in manager.all_steps()
  manager.close()
  # A finished run is not redone.
  assert train.train_and_evaluate(tiny_config("teacher", train__epochs=2), teacher_dir)["step"] == 18


METHODS = [
    pytest.param("kd_svd", {"distill__svd_grad": "kept_triplets"}, id="kd_svd-kept_triplets"),
    pytest.param("fsp", {}, id="fsp"),
    pytest.param("soft_target", {}, id="soft_target"),
    pytest.param("kd_svd", {"distill__svd_grad": "exact"}, id="kd_svd-exact"),
    pytest.param("kd_svd", {"distill__svd_grad": "released_code"}, id="kd_svd-released_code"),
]


@pytest.mark.slow
@pytest.mark.parametrize("method,options", METHODS)
def test_distilled_student(teacher_dir, tmp_path, monkeypatch, method, options, tiny_config, final_params):
  manager = checkpoint.create_manager(os.path.join(teacher_dir, "checkpoints"), keep=1, read_only=True)
  best_step = manager.best_step()
  manager.close()
  teacher_before = final_params(teacher_dir, best_step)
  restored = []  # the teacher network the run distils from
  restore = train.restore_teacher
  monkeypatch.setattr(train, "restore_teacher", lambda *a, **k: restored.append(restore(*a, **k)) or restored[-1])
  config = tiny_config(method, teacher__workdir=teacher_dir, train__max_steps=2, **options)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert not summary["complete"] and summary["step"] == 2
  assert math.isfinite(summary["last_eval_accuracy"])
  rows = [r for r in _rows(tmp_path) if "loss" in r]
  last = rows[-1]
  assert last["dist_loss"] > 0 and last["grad_norm_dist"] > 0 and last["grad_norm_main"] > 0
  assert 0 <= last["teacher_accuracy"] <= 1
  # The run distilled from the teacher's best checkpoint, and left that checkpoint as it was.
  assert len(restored) == 1
  used, saved = by_path(restored[0].variables["params"]), by_path(teacher_before)
  assert used.keys() == saved.keys() and len(saved) >= 8
  for key, value in saved.items():
    np.testing.assert_array_equal(used[key], value, err_msg=key)
  jax.tree.map(np.testing.assert_array_equal, final_params(teacher_dir, best_step), teacher_before)


@pytest.mark.slow
def test_zero_distillation_weight_is_the_student_alone(teacher_dir, tmp_path, tiny_config, final_params):
  """Seed i of a distillation row pairs with seed i of S-DNN: same initialisation, data order and augmentation. With
  its distillation gradient weighted by 0, the KD-SVD run ends where the student alone does; with weight 1 it does
  not (so the paired differences of the tables measure the distillation gradient and nothing else)."""
  student = str(tmp_path / "student")
  train.train_and_evaluate(tiny_config("student", train__max_steps=4), student)
  runs = {}
  for weight in (0.0, 1.0):
    runs[weight] = str(tmp_path / f"kd_svd_w{weight}")
    config = tiny_config("kd_svd_exact", teacher__workdir=teacher_dir, train__max_steps=4, distill__svd_grad="exact",
                         combine__weight=weight)
    train.train_and_evaluate(config, runs[weight])
  alone, null, distilled = (by_path(final_params(d)) for d in (student, runs[0.0], runs[1.0]))
  assert alone.keys() == null.keys() == distilled.keys()
  for key in alone:
    np.testing.assert_allclose(null[key], alone[key], rtol=1e-6, atol=1e-7, err_msg=key)
  assert max(float(np.abs(distilled[k] - alone[k]).max()) for k in alone) > 1e-4


@pytest.mark.slow
def test_two_stage(teacher_dir, tmp_path, tiny_config):
  config = tiny_config("kd_svd_exact", teacher__workdir=teacher_dir, distill__mechanism="2stage",
                       distill__init_epochs=1, train__max_steps=11)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["total_steps"] == 18 and summary["step"] == 11 and summary["epochs"] == 2
  rows = [r for r in _rows(tmp_path) if "loss" in r]
  init, main = [r for r in rows if r["stage"] == "init"], [r for r in rows if r["stage"] == "main"]
  assert init and main
  # Init: the distillation loss alone drives the update; main: no teacher, no distillation, schedule restarted.
  assert all(r["grad_norm"] == pytest.approx(r["grad_norm_dist"], rel=1e-5) for r in init)
  assert all("grad_norm_dist" not in r and r["dist_loss"] == 0 for r in main)
  assert main[-1]["lr"] == pytest.approx(0.02)


@pytest.mark.slow
def test_resume_matches_uninterrupted(tmp_path, tiny_config, final_params):
  """Stopping mid-epoch (as after a SIGKILL: only checkpoints survive) and restarting gives the same parameters."""
  config = tiny_config("student", train__checkpoint_every_steps=2)
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  assert full["complete"] and full["step"] == 9
  # Checkpoints at 2 and 4; the run "dies" after step 5, whose work is lost.
  part = str(tmp_path / "part")
  train.train_and_evaluate(tiny_config("student", train__checkpoint_every_steps=2, train__max_steps=5), part)
  for name in os.listdir(os.path.join(part, "checkpoints")):
    if name == "5":
      import shutil
      shutil.rmtree(os.path.join(part, "checkpoints", name))
  resumed = train.train_and_evaluate(config, part)
  assert resumed["complete"] and resumed["step"] == 9
  a, b = final_params(str(tmp_path / "full")), final_params(part)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)
  logged = [r["step"] for r in _rows(part) if "loss" in r]
  assert logged == sorted(logged) and len(logged) == len(set(logged))  # rows after the checkpoint were re-logged once


@pytest.mark.slow
def test_train_step_compiles_once(tiny_config):
  """Epoch-dependent values (learning rate, sigmoid(epoch)) are traced: steps across epochs share one compilation."""
  config = tiny_config("kd_svd_exact")
  config.model.name = config.teacher.name = "vgg8"  # BatchNorm networks: running statistics travel in "rest".
  mesh = parallel.create_mesh(jax.devices()[:1])
  student = networks.build("vgg8", 0.125, 2, 0, mesh=mesh)
  teacher = train.random_teacher(config, 2, mesh=mesh, image_size=32)
  state, tx = train.create_train_state(config, student, steps_per_epoch=2, mesh=mesh)
  step_fn = steps_lib.make_train_step(config, student, tx, distill_fn=distill.from_config(config.distill),
                                  steps_per_epoch=2, mesh=mesh, mean=[128.0] * 3, std=[64.0] * 3, teacher=teacher)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), "label": rng.integers(0, 2, 8).astype(np.int32)}
  batch = jax.device_put(batch, parallel.data_sharding(mesh))
  teacher_before = jax.tree.map(np.asarray, teacher.variables)
  lrs = []
  for _ in range(5):
    state, metrics = step_fn(state, teacher.variables, batch)
    lrs.append(float(metrics["lr"]))
  assert step_fn._cache_size() == 1
  assert int(state["step"]) == 5 and lrs == pytest.approx([0.02, 0.02, 0.002, 0.002, 0.002])
  # The teacher is frozen: no BatchNorm update, no parameter change.
  jax.tree.map(np.testing.assert_array_equal, teacher_before, jax.tree.map(np.asarray, teacher.variables))
  # The student's BatchNorm statistics moved.
  stats = [x for path, x in jax.tree_util.tree_flatten_with_path(state["rest"])[0] if "mean" in str(path)]
  assert stats and any(np.abs(np.asarray(s)).sum() > 0 for s in stats)


# --- errors a user can hit ---------------------------------------------------------------------------------------


def test_unknown_config_key(tmp_path, tiny_config):
  config = tiny_config("teacher")
  with pytest.raises(AttributeError, match='Did you mean "epochs"'):  # locked where built: fails where written
    config.train.epochz = 3
  with config.unlocked():  # a config built some other way is caught before the run
    config.train.epochz = 3
  with pytest.raises(ValueError, match=r"^Unknown config key 'train.epochz'. Did you mean 'train.epochs'\? Valid "
                                       r"keys of train: batch_size, .*, max_steps.$"):
    train.train_and_evaluate(config, str(tmp_path))


def test_bad_values_are_refused_before_the_workdir_is_touched(tmp_path, tiny_config):
  """Every config value is checked before anything is written: the workdir is not even created."""
  for override in ({"data__augment": "bogus"}, {"combine__rule": "sskd_typo"}, {"optim__boundaries": (2, 1)},
                   {"optim__weight_decay": -1.0}, {"distill__temperature": 2.0}):
    with pytest.raises(ValueError, match=f"config.{next(iter(override)).replace('__', '.')}"):
      train.train_and_evaluate(tiny_config("student", **override), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_earlier_value_names_train_as_today_s(tmp_path, tiny_config, final_params):
  """A config with the value names of earlier versions (config.ALIASES) trains as today's names do, parameters
  bit for bit, and the run's config.json holds today's names."""
  runs = {}
  for name, names in (("today", {"data__augment": "flip_rotate_crop", "combine__rule": "rescale_per_tensor"}),
                      ("earlier", {"data__augment": "sskd", "combine__rule": "poster"})):
    config = tiny_config("kd_svd", teacher__weights="random", train__max_steps=2, **names)
    runs[name] = str(tmp_path / name)
    train.train_and_evaluate(config, runs[name])
  jax.tree.map(np.testing.assert_array_equal, final_params(runs["today"]), final_params(runs["earlier"]))
  with open(os.path.join(runs["earlier"], "config.json")) as f:
    written = json.load(f)
  assert (written["data"]["augment"], written["combine"]["rule"]) == ("flip_rotate_crop", "rescale_per_tensor")


def test_bad_names(tmp_path, tiny_config):
  with pytest.raises(ValueError, match="not a network; valid"):
    train.train_and_evaluate(tiny_config("teacher", model__name="vgg99"), str(tmp_path))
  with pytest.raises(ValueError, match="mechanism"):
    train.train_and_evaluate(tiny_config("kd_svd_exact", distill__mechanism="3stage"), str(tmp_path))


def test_missing_teacher(tmp_path, tiny_config):
  with pytest.raises(ValueError, match="needs a teacher"):
    train.train_and_evaluate(tiny_config("kd_svd_exact"), str(tmp_path / "a"))
  with pytest.raises(FileNotFoundError, match="Train the teacher first"):
    train.train_and_evaluate(tiny_config("kd_svd_exact", teacher__workdir=str(tmp_path / "nothing")),
                             str(tmp_path / "b"))
  with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
    train.train_and_evaluate(tiny_config("kd_svd_exact", teacher__checkpoint=str(tmp_path)), str(tmp_path / "c"))


@pytest.mark.slow
def test_teacher_workdir_may_be_relative(teacher_dir, monkeypatch, tiny_config):
  """experiments/run_table.py passes the --root it was given, often relative; orbax needs absolute paths."""
  monkeypatch.chdir(os.path.dirname(teacher_dir))
  config = tiny_config("kd_svd_exact", teacher__workdir=os.path.basename(teacher_dir))
  step_dir = checkpoint.find_teacher_step_dir(os.path.basename(teacher_dir))
  assert str(step_dir).startswith(os.path.basename(teacher_dir)) and step_dir.exists()  # as given: no machine path
  teacher = train.restore_teacher(config, 2, mesh=parallel.create_mesh())  # raised "should be absolute" before
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(teacher.variables["params"]))


@pytest.mark.slow
def test_mismatched_teacher_then_the_fix_trains(teacher_dir, tmp_path, tiny_config):
  """A run that cannot start (here: its teacher is another network) writes no config.json, so the corrected run
  is not refused as another run."""
  config = tiny_config("kd_svd_exact", teacher__workdir=teacher_dir, teacher__width=0.25, model__width=0.25,
                       train__max_steps=1)  # the taps pair (checked first), but the checkpoint is another width
  with pytest.raises(ValueError, match=r"holds vgg_teacher \(width 0.125, 2 classes\).*width 0.25.*config.teacher"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "config.json").exists()
  config.teacher.width = config.model.width = 0.125
  assert train.train_and_evaluate(config, str(tmp_path))["step"] == 1


def test_tap_mismatch_is_refused_before_the_workdir_is_touched(tmp_path, tiny_config):
  config = tiny_config("kd_svd_exact", teacher__workdir=str(tmp_path / "teacher"), model__width=0.25)  # channels x2
  with pytest.raises(ValueError, match=r"^kd_svd: tap 0 channel counts differ: student \(2, 16, 16, 16\), teacher "
                                       r"\(2, 16, 16, 8\); kd_svd compares"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_workdir_with_other_config(tmp_path, tiny_config):
  train.train_and_evaluate(tiny_config("student", train__max_steps=1), str(tmp_path))
  with pytest.raises(ValueError, match=r"different config.*optim.learning_rate.*--overwrite"):
    train.train_and_evaluate(tiny_config("student", train__max_steps=1, optim__learning_rate=0.5), str(tmp_path))
  summary = train.train_and_evaluate(tiny_config("student", train__max_steps=1, optim__learning_rate=0.5),
                                     str(tmp_path), overwrite=True)
  assert summary["step"] == 1
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["optim"]["learning_rate"] == 0.5


@pytest.mark.slow
def test_non_finite_loss_stops(tmp_path, tiny_config, final_params):
  config = tiny_config("student", optim__learning_rate=1e30, train__checkpoint_every_steps=1)
  with pytest.raises(FloatingPointError, match=r"at step \d+.*last good checkpoint is step"):
    train.train_and_evaluate(config, str(tmp_path))
  params = final_params(str(tmp_path))  # Whatever was saved is finite.
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_config_dropout_reaches_the_paper_vggs_only(tiny_config):
  """config.model.dropout / config.teacher.dropout set the paper VGGs' FC dropout; other networks ignore them."""
  mesh = parallel.create_mesh(jax.devices()[:1])
  module = lambda net: nnx.merge(net.train_def, net.variables["params"], net.variables["rest"])  # noqa: E731
  config = tiny_config("student", model__dropout=0.0, teacher__dropout=0.25)
  student, teacher = train.create_models(config, 2, mesh=mesh)
  assert teacher is None and module(student).dropout.rate == 0.0
  assert module(train.random_teacher(config, 2, mesh=mesh)).dropout.rate == 0.25
  config = tiny_config("student", model__name="resnet20", model__dropout=0.0)
  assert not hasattr(module(train.create_models(config, 2, mesh=mesh)[0]), "dropout")


@pytest.mark.parametrize("n", [2, 3, 8, 128])
def test_derangement_moves_every_image(n):
  for seed in range(20):
    perm = np.asarray(steps_lib.derangement(jax.random.key(seed), n))
    assert sorted(perm.tolist()) == list(range(n))  # a permutation
    assert not np.any(perm == np.arange(n))  # no image meets itself
  draws = {tuple(np.asarray(steps_lib.derangement(jax.random.key(s), 8)).tolist()) for s in range(20)}
  assert len(draws) > 15  # seeded, and not one fixed shift


@pytest.mark.slow
def test_controls_untrained_teacher_and_deranged_images_train(tmp_path, tiny_config, final_params):
  """The controls need no teacher run (an untrained teacher) and change the distillation target (deranged images):
  the two runs, and a run with both, end in different places, all finite."""
  ends = {}
  for name, options in {"untrained": {}, "deranged": {"distill__teacher_images": "deranged"}}.items():
    config = tiny_config("kd_svd_exact", teacher__weights="random", distill__svd_grad="exact", train__max_steps=3,
                         **options)
    summary = train.train_and_evaluate(config, str(tmp_path / name))
    assert summary["step"] == 3 and np.isfinite(summary["last_eval_accuracy"])
    ends[name] = by_path(final_params(str(tmp_path / name)))
  assert max(float(np.abs(ends["untrained"][k] - ends["deranged"][k]).max()) for k in ends["untrained"]) > 1e-5
  with pytest.raises(ValueError, match="teacher.weights='bogus'; valid: trained, random"):
    train.train_and_evaluate(tiny_config("kd_svd_exact", teacher__weights="bogus"), str(tmp_path / "bad"))
