"""svdkd_jax.networks: build, restore a finished student or teacher run (workdir or step directory), apply.

The runs are written, not trained: each workdir holds its config.json and one checkpoint of a built network, in the
layout `train.train_and_evaluate` writes, so a restore must give back exactly the variables that were saved.
"""

import json
import os
import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from svdkd_jax import checkpoint
from svdkd_jax import config_files
from svdkd_jax import networks
from svdkd_jax import parallel
from svdkd_jax import workdir

ROOT = pathlib.Path(__file__).resolve().parents[1]
WIDTH, CLASSES = 0.125, 3


@pytest.fixture(scope="module")
def mesh():
  return parallel.create_mesh(jax.devices()[:1])


def _write_run(path: str, variant: str, network: networks.Network, step: int) -> None:
  """config.json of configs/quickstart.py:VARIANT at width 1/8 and a checkpoint of `network` at `step`."""
  config = config_files.load_module(ROOT / "configs" / "quickstart.py").get_config(variant)
  config.model.width = config.teacher.width = WIDTH
  workdir.prepare(config, path)
  manager = checkpoint.create_manager(os.path.join(path, "checkpoints"), keep=1)
  meta = {"step": step, "num_classes": CLASSES, "config": json.loads(config.to_json_best_effort())}
  checkpoint.save(manager, step, model=network.variables, opt={"step": np.full((), step, np.int32)}, meta=meta)
  manager.wait_until_finished()
  manager.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mesh) -> dict:
  root = tmp_path_factory.mktemp("runs")
  built = {"teacher": networks.build("vgg_teacher", WIDTH, CLASSES, 0, mesh=mesh),
           "student": networks.build("vgg_student", WIDTH, CLASSES, 1, mesh=mesh)}
  for variant, network in built.items():
    _write_run(str(root / variant), variant, network, step=7)
  return {variant: (str(root / variant), network) for variant, network in built.items()}


def _numpy(x) -> np.ndarray:
  return np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)


def _assert_same(a: dict, b: dict) -> None:
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(_numpy(x), _numpy(y)), a, b)


def test_build_is_seeded_and_takes_the_paper_vgg_options(mesh, abstract_variables):
  a, b = (networks.build("vgg_student", WIDTH, CLASSES, 0, mesh=mesh, image_size=64) for _ in range(2))
  _assert_same(a.variables, b.variables)
  c = networks.build("vgg_student", WIDTH, CLASSES, 1, mesh=mesh, image_size=64)
  assert not np.array_equal(a.variables["params"]["head"]["kernel"][...], c.variables["params"]["head"]["kernel"][...])
  shapes = abstract_variables("vgg_student", WIDTH, CLASSES, image_size=64)
  assert jax.tree.map(lambda x: x.shape, shapes) == jax.tree.map(lambda x: x.shape, a.variables)
  module = nnx.merge(a.train_def, a.variables["params"], a.variables["rest"])
  assert module.input_size == 64 and module.dropout.rate == 0.5  # the paper's default rate
  assert a.name == "vgg_student" and a.step_dir is None


@pytest.mark.parametrize("variant", ["student", "teacher"])
def test_restore_a_finished_run_from_its_workdir_or_step_dir(runs, mesh, variant):
  path, built = runs[variant]
  for where in (path, os.path.join(path, "checkpoints", "7")):
    net = networks.restore(where, built.name, WIDTH, CLASSES, mesh=mesh)
    assert net.name == built.name and net.step_dir == os.path.join(path, "checkpoints", "7")
    _assert_same(net.variables, built.variables)
  x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
  logits, taps, rest = networks.apply(net, net.variables, x)
  want_logits, want_taps, _ = networks.apply(built, built.variables, x)
  np.testing.assert_array_equal(logits, want_logits)
  assert [t.shape for t in taps] == [t.shape for t in want_taps] and rest is net.variables["rest"]


def test_restore_names_what_it_found_and_what_was_asked(runs, mesh, tmp_path):
  path = runs["teacher"][0]
  asked = {"name": ("vgg_student", WIDTH, CLASSES), "width": ("vgg_teacher", 0.25, CLASSES),
           "classes": ("vgg_teacher", WIDTH, 10)}
  for what, (name, width, classes) in asked.items():
    with pytest.raises(ValueError) as e:
      networks.restore(path, name, width, classes, mesh=mesh)
    message = str(e.value)
    assert "\n" not in message, message
    assert f"holds vgg_teacher (width {WIDTH}, {CLASSES} classes), not the {name} (width {width}, {classes} " \
           "classes) asked for" in message, (what, message)
  with pytest.raises(FileNotFoundError, match="No finished checkpoint"):
    networks.restore(str(tmp_path), "vgg_teacher", WIDTH, CLASSES, mesh=mesh)


def test_apply_train_mode_updates_batch_stats_and_takes_dropout_rngs(mesh):
  x = np.random.default_rng(1).standard_normal((4, 32, 32, 3)).astype(np.float32)
  bn = networks.build("vgg8", WIDTH, CLASSES, 0, mesh=mesh)

  @jax.jit
  def grads(variables):  # train mode inside autodiff: BatchNorm updates its statistics in this trace
    def loss(params):
      logits, _, rest = networks.apply(bn, {"params": params, "rest": variables["rest"]}, x, train=True)
      return logits.sum(), rest
    return jax.grad(loss, has_aux=True)(variables["params"])

  _, rest = grads(bn.variables)
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(rest), jax.tree.leaves(bn.variables["rest"]))]
  assert any(moved)
  _, _, same = networks.apply(bn, bn.variables, x)  # eval mode: running statistics, nothing updated
  assert same is bn.variables["rest"]

  vgg = networks.build("vgg_teacher", WIDTH, CLASSES, 0, mesh=mesh)  # two dropout calls per forward
  key = jax.random.key(5)
  drop = lambda k: networks.apply(vgg, vgg.variables, x, train=True, rngs=nnx.Rngs(dropout=k))[0]  # noqa: E731
  np.testing.assert_array_equal(drop(key), drop(key))
  assert not np.array_equal(drop(key), drop(jax.random.key(6)))
  # The masks `nnx.reseed(model, dropout=k)` gave the network's own stream (the trainer's former way), with
  # rngs = Rngs(dropout=fold_in(k, 0)): runs resumed across that change draw the same masks.
  model = nnx.merge(vgg.train_def, vgg.variables["params"], vgg.variables["rest"], copy=True)
  nnx.reseed(model, dropout=key)
  np.testing.assert_array_equal(model(x)[0], drop(jax.random.fold_in(key, 0)))
  eval_logits = networks.apply(vgg, vgg.variables, x)[0]
  np.testing.assert_array_equal(eval_logits, networks.apply(vgg, vgg.variables, x, rngs=nnx.Rngs(dropout=key))[0])


# Tolerances of a bfloat16 step against the float32 step (bfloat16 keeps 8 significant bits, a relative rounding of
# 2^-9 per operation): the losses within 1 %, each gradient (main and distillation) within 8 % in norm for the paper's
# VGG pair and 25 % for the CRD benchmark's VGG pair with BatchNorm (measured: losses 0.3 %, gradients 1.4 to 4 % and
# 6 to 15 %).
BF16_LOSS_RTOL = 0.01
BF16_GRAD_RTOL = {"vgg": 0.08, "vgg13": 0.25}


@pytest.mark.parametrize("pair", ["vgg", pytest.param("vgg13", marks=pytest.mark.slow)])
def test_bfloat16_step_is_close_to_the_float32_step(mesh, tiny_config, pair):
  """train.compute_dtype = bfloat16: the layers compute in bfloat16 (taps and logits come in it), the parameters,
  the BatchNorm statistics and the gradients stay float32, and the KD-SVD step's losses and its main and
  distillation gradients are those of the float32 step within the stated tolerances."""
  from svdkd_jax import distill, models, optim, steps  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  x = rng.standard_normal((16, 32, 32, 3)).astype(np.float32)
  labels = rng.integers(0, CLASSES, 16).astype(np.int32)
  teacher_name, student_name = models.PAIRS[pair]
  out = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config("kd_svd_exact_mean", train__compute_dtype=dtype)
    student = networks.build(student_name, WIDTH, CLASSES, 0, mesh=mesh, dropout=0.0, compute_dtype=dtype)
    teacher = networks.build(teacher_name, WIDTH, CLASSES, 1, mesh=mesh, dropout=0.0, compute_dtype=dtype)
    t_logits, t_taps, _ = networks.apply(teacher, teacher.variables, x)
    assert t_logits.dtype == dtype and all(t.dtype == dtype for t in t_taps)
    loss_fn = steps.make_loss_fn(config, student, distill.from_config(config.distill))
    losses, aux, g_main, g_dist = jax.jit(optim.main_and_dist_grads, static_argnums=0)(
        loss_fn, student.variables["params"], student.variables["rest"], jax.random.key(0), x, labels, 0, t_logits,
        t_taps)
    floats = [a for a in jax.tree.leaves((losses, g_main, g_dist, aux["rest"])) if jnp.issubdtype(a.dtype, jnp.floating)]
    assert {a.dtype for a in floats} == {np.dtype("float32")}
    out[dtype] = np.asarray(losses), g_main, g_dist
  (want, *want_grads), (got, *got_grads) = out["float32"], out["bfloat16"]
  np.testing.assert_allclose(got, want, rtol=BF16_LOSS_RTOL)
  for g, w in zip(got_grads, want_grads):
    diff = jax.tree.map(lambda a, b: a - b, g, w)
    assert float(optax.tree.norm(diff) / optax.tree.norm(w)) <= BF16_GRAD_RTOL[pair]
