"""Tests for svdkd_jax.optim: schedule, optax chain, weight decay, gradient combination, one-forward gradients."""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from svdkd_jax import optim


def _optim_config(**overrides):
  cfg = default.get_config().optim
  cfg.update(overrides)
  return cfg


# ---------------------------------------------------------------------------------------------------------------
# optimiser


def test_schedule_is_piecewise_by_epoch():
  sched = optim.learning_rate_schedule(_optim_config(), steps_per_epoch=390)
  steps = np.array([0, 100 * 390 - 1, 100 * 390, 150 * 390 - 1, 150 * 390, 200 * 390])
  np.testing.assert_allclose(sched(steps), [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-6)
  with pytest.raises(ValueError, match="steps_per_epoch"):
    optim.learning_rate_schedule(_optim_config(), 0)


def test_sgd_is_tf_nesterov_momentum_with_schedule():
  """TF MomentumOptimizer(use_nesterov=True): a <- m a + g; w <- w - lr (g + m a), by hand."""
  cfg = _optim_config(boundaries=(1,), learning_rate=0.1, decay_factor=0.5)
  tx = optim.create_optimizer(cfg, steps_per_epoch=2)
  w = {"dense": {"kernel": jnp.array([1.0, -2.0]), "bias": jnp.array([0.5])}}
  state = tx.init(w)
  w_np = jax.tree.map(np.asarray, w)
  acc = jax.tree.map(np.zeros_like, w_np)
  rng = np.random.default_rng(0)
  for step in range(4):
    g = jax.tree.map(lambda x: rng.standard_normal(x.shape), w_np)
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, w)
    w = optax.apply_updates(w, updates)
    lr = 0.1 if step < 2 else 0.05
    acc = jax.tree.map(lambda a, gi: 0.9 * a + gi, acc, g)
    w_np = jax.tree.map(lambda x, gi, a: x - lr * (gi + 0.9 * a), w_np, g, acc)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), w, w_np)


def test_adam_equals_optax_adam():
  cfg = _optim_config(name="adam", learning_rate=1e-3)
  tx, ref = optim.create_optimizer(cfg, 10), optax.adam(1e-3)
  w = {"kernel": jnp.arange(3.0)}
  s1, s2 = tx.init(w), ref.init(w)
  for i in range(3):
    g = {"kernel": jnp.array([1.0, -2.0, 0.5]) * (i + 1)}
    u1, s1 = tx.update(g, s1, w)
    u2, s2 = ref.update(g, s2, w)
    np.testing.assert_allclose(u1["kernel"], u2["kernel"], rtol=1e-6)


def test_optimizer_carries_the_schedule_it_applies():
  """The train step logs `optimizer.schedule(step)`: the rate the chain applied at that step (SGD without momentum:
  the update is -lr * g)."""
  tx = optim.create_optimizer(_optim_config(boundaries=(1, 2), learning_rate=0.1, momentum=0.0), steps_per_epoch=2)
  w = {"kernel": jnp.ones(2)}
  state = tx.init(w)
  for step in range(6):
    updates, state = tx.update({"kernel": jnp.ones(2)}, state, w)
    np.testing.assert_allclose(updates["kernel"], -float(tx.schedule(step)) * np.ones(2), rtol=1e-6)
  np.testing.assert_allclose([float(tx.schedule(s)) for s in (0, 2, 4)], [0.1, 0.01, 0.001], rtol=1e-6)


class _Tiny(nnx.Module):

  def __init__(self, rngs):
    self.conv = nnx.Conv(2, 3, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(3, rngs=rngs)
    self.head = nnx.Linear(3, 4, rngs=rngs)

  def __call__(self, x):
    return self.head(self.bn(self.conv(x)).mean(axis=(1, 2)))


def test_decoupled_weight_decay_touches_kernels_only_through_nnx_optimizer():
  model = _Tiny(nnx.Rngs(0))
  model.conv.bias[...] = jnp.ones(3)
  before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
  cfg = _optim_config(decoupled_weight_decay=True, weight_decay=0.1, learning_rate=0.5, momentum=0.0)
  opt = nnx.Optimizer(model, optim.create_optimizer(cfg, 10), wrt=nnx.Param)
  opt.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param)))
  after = nnx.state(model, nnx.Param)
  np.testing.assert_allclose(after["conv"]["kernel"][...], before["conv"]["kernel"][...] * (1 - 0.5 * 0.1),
                             rtol=1e-6)
  np.testing.assert_allclose(after["head"]["kernel"][...], before["head"]["kernel"][...] * (1 - 0.5 * 0.1),
                             rtol=1e-6)
  for name in (("conv", "bias"), ("bn", "scale"), ("bn", "bias"), ("head", "bias")):
    np.testing.assert_array_equal(after[name[0]][name[1]][...], before[name[0]][name[1]][...])


def test_coupled_weight_decay_leaves_the_chain_without_decay():
  tx = optim.create_optimizer(_optim_config(decoupled_weight_decay=False, weight_decay=0.1), 10)
  w = {"kernel": jnp.ones(3)}
  updates, _ = tx.update({"kernel": jnp.zeros(3)}, tx.init(w), w)
  np.testing.assert_array_equal(updates["kernel"], 0.0)


def test_l2_penalty_on_kernels_only():
  params = {"conv": {"kernel": jnp.array([1.0, 2.0]), "bias": jnp.array([10.0])},
            "bn": {"scale": jnp.array([3.0])}, "blocks": [{"kernel": jnp.array([[0.5]])}]}
  np.testing.assert_allclose(optim.l2_penalty(params, 1e-2), 0.5 * 1e-2 * (1 + 4 + 0.25), rtol=1e-6)
  model = _Tiny(nnx.Rngs(1))
  state = nnx.state(model, nnx.Param)
  expected = 0.5 * 1e-4 * sum(float(jnp.sum(v[...] ** 2)) for v in (model.conv.kernel, model.head.kernel))
  np.testing.assert_allclose(optim.l2_penalty(state, 1e-4), expected, rtol=1e-5)
  assert jax.grad(optim.l2_penalty)(params, 1.0)["conv"]["bias"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# gradient combination


def test_clip_by_norm_bounds():
  rng = np.random.default_rng(1)
  for scale in (1e-6, 1.0, 1e4):
    for threshold in (0.0, 1e-3, 1.0, 10.0):
      x = jnp.asarray(rng.standard_normal((3, 5)) * scale, jnp.float32)
      y = optim.clip_by_norm(x, jnp.float32(threshold))
      norm_x, norm_y = float(jnp.linalg.norm(x)), float(jnp.linalg.norm(y))
      assert norm_y <= threshold * (1 + 1e-6) + 1e-30 or norm_x <= threshold
      if norm_x <= threshold:
        np.testing.assert_array_equal(y, x)  # untouched below the threshold
      else:
        np.testing.assert_allclose(norm_y, threshold, rtol=1e-5)
        np.testing.assert_allclose(y * norm_x, x * norm_y, rtol=1e-5, atol=1e-30)  # same direction
  zero = optim.clip_by_norm(jnp.zeros(3), jnp.float32(0.0))
  assert bool(jnp.all(zero == 0.0))


# A tiny pytree where each rule does something different at epoch 0 (sigmoid(0) = 0.5):
#   a: ||m|| = 5,  ||d|| = 10    -> clipped by clip_per_tensor (to 2.5) and rescale_per_tensor (to 0.5 * 5)
#   b: ||m|| = 1,  ||d|| = 0.1   -> untouched by both
#   c: ||m|| = 2,  ||d|| = 1.5   -> clipped by clip_per_tensor (to 1), untouched by rescale_per_tensor (1.5 <= 2)
#   z: ||m|| = 0,  ||d|| = 3     -> zeroed by clip_per_tensor and rescale_per_tensor (threshold 0), no NaN
#   n: ||m|| = 1,  ||d|| = 0     -> main gradient only (a tensor the distillation loss does not reach)
MAIN = {"a": np.array([3.0, 4.0]), "b": np.array([1.0, 0.0]), "c": np.array([0.0, 2.0]), "z": np.zeros(2),
        "n": np.array([0.0, 1.0])}
DIST = {"a": np.array([6.0, 8.0]), "b": np.array([0.1, 0.0]), "c": np.array([0.0, 1.5]), "z": np.array([3.0, 0.0]),
        "n": np.zeros(2)}
EXPECTED = {
    "clip_per_tensor": {"a": [4.5, 6.0], "b": [1.1, 0.0], "c": [0.0, 3.0], "z": [0.0, 0.0], "n": [0.0, 1.0]},
    "rescale_per_tensor": {"a": [4.5, 6.0], "b": [1.1, 0.0], "c": [0.0, 3.5], "z": [0.0, 0.0], "n": [0.0, 1.0]},
    "sum": {"a": [6.0, 8.0], "b": [1.05, 0.0], "c": [0.0, 2.75], "z": [1.5, 0.0], "n": [0.0, 1.0]},  # weight 0.5
}


@functools.partial(jax.jit, static_argnames=("rule", "weight"))
def _combine(main, dist, epoch, rule, weight=1.0):
  return optim.combine_gradients(main, dist, epoch, rule=rule, weight=weight)


@pytest.mark.parametrize("rule", ["clip_per_tensor", "rescale_per_tensor", "sum"])
def test_combination_equals_hand_computation(rule):
  main, dist = jax.tree.map(jnp.float32, MAIN), jax.tree.map(jnp.float32, DIST)
  out = _combine(main, dist, jnp.int32(0), rule=rule, weight=0.5 if rule == "sum" else 1.0)
  for key, expected in EXPECTED[rule].items():
    np.testing.assert_allclose(out[key], expected, rtol=1e-6, atol=1e-7, err_msg=key)
    assert bool(jnp.all(jnp.isfinite(out[key])))


def test_global_norm_combination_equals_hand_computation():
  main, dist = jax.tree.map(jnp.float32, MAIN), jax.tree.map(jnp.float32, DIST)
  out = _combine(main, dist, jnp.int32(2), rule="clip_global_norm")
  norm_m = np.sqrt(sum(np.sum(v**2) for v in MAIN.values()))  # sqrt(31)
  norm_d = np.sqrt(sum(np.sum(v**2) for v in DIST.values()))
  factor = min(1.0, 1 / (1 + np.exp(-2.0)) * norm_m / norm_d)
  assert factor < 1
  for key in MAIN:
    np.testing.assert_allclose(out[key], MAIN[key] + factor * DIST[key], rtol=1e-6, err_msg=key)


def test_clipped_norm_never_exceeds_threshold_and_epoch_does_not_retrace():
  traces = []

  @jax.jit
  def clipped_part(main, dist, epoch):
    traces.append(None)
    return jax.tree.map(jnp.subtract, optim.combine_gradients(main, dist, epoch, rule="clip_per_tensor"), main)

  rng = np.random.default_rng(2)
  for epoch in range(4):
    main = {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32), "v": jnp.asarray(rng.standard_normal(5))}
    dist = {"w": jnp.asarray(rng.standard_normal((4, 3)) * 10 ** rng.uniform(-3, 3), jnp.float32),
            "v": jnp.asarray(rng.standard_normal(5) * 10 ** rng.uniform(-3, 3), jnp.float32)}
    part = clipped_part(main, dist, jnp.int32(epoch))
    for key in main:
      threshold = float(jnp.linalg.norm(main[key])) / (1 + np.exp(-epoch))
      norm_d = float(jnp.linalg.norm(dist[key]))
      assert float(jnp.linalg.norm(part[key])) <= threshold * (1 + 1e-5)
      if norm_d <= threshold:
        # (g_m + g_d) - g_m in float32: cancellation error is relative to ||g_m||.
        np.testing.assert_allclose(part[key], dist[key], rtol=1e-5, atol=1e-6 * float(jnp.abs(main[key]).max()))
  assert len(traces) == 1


def test_combination_errors():
  with pytest.raises(ValueError, match="clip_per_tensor, rescale_per_tensor, sum, clip_global_norm"):
    optim.combine_gradients({"a": jnp.ones(1)}, {"a": jnp.ones(1)}, 0, rule="pcgrad")
  with pytest.raises(ValueError, match="different structures"):
    optim.combine_gradients({"a": jnp.ones(1)}, {"b": jnp.ones(1)}, 0)


# ---------------------------------------------------------------------------------------------------------------
# one forward, two gradients


def _model_loss(params, x, y, calls):
  """A two-layer net: main = squared error of the logits, dist = a feature loss on the hidden layer only."""
  calls.append(None)
  hidden = jnp.tanh(x @ params["body"]["kernel"] + params["body"]["bias"])
  logits = hidden @ params["head"]["kernel"]
  main = jnp.mean((logits - y) ** 2)
  dist = jnp.sum(jnp.sin(hidden) ** 2)
  return (main, dist), {"logits": logits}


def test_main_and_dist_grads_equal_two_separate_grads_from_one_forward():
  rng = np.random.default_rng(3)
  params = {"body": {"kernel": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32), "bias": jnp.zeros(3)},
            "head": {"kernel": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32)}}
  x, y = jnp.asarray(rng.standard_normal((5, 4)), jnp.float32), jnp.asarray(rng.standard_normal((5, 2)), jnp.float32)
  calls = []
  (main, dist), aux, g_main, g_dist = optim.main_and_dist_grads(
      functools.partial(_model_loss, calls=calls), params, x, y)
  assert len(calls) == 1  # one forward pass
  ref_main = jax.grad(lambda p: _model_loss(p, x, y, [])[0][0])(params)
  ref_dist = jax.grad(lambda p: _model_loss(p, x, y, [])[0][1])(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), g_main, ref_main)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), g_dist, ref_dist)
  np.testing.assert_array_equal(g_dist["head"]["kernel"], 0.0)  # the logits layer gets a zero, not None
  assert float(jnp.abs(g_dist["body"]["kernel"]).max()) > 0
  np.testing.assert_allclose(main, _model_loss(params, x, y, [])[0][0], rtol=1e-6)
  np.testing.assert_allclose(aux["logits"], _model_loss(params, x, y, [])[1]["logits"], rtol=1e-6)
  combined = optim.combine_gradients(g_main, g_dist, 0)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(combined))



def test_main_pullback_skips_the_distillation_only_backward():
  # The distillation branch multiplies by inf, whose transpose turns a zero cotangent ARRAY into NaN: an array of
  # zeros as the other loss's cotangent would poison the shared body's main gradient; a symbolic zero skips it.
  params = {"body": jnp.array([1.0, -2.0]), "head": jnp.array([0.5, 3.0])}

  def loss_fn(p, x):
    h = jnp.tanh(p["body"] * x)
    return (jnp.sum(p["head"] * h), jnp.sum(jnp.inf * h)), None

  x = jnp.array([0.3, 0.7])
  _, _, g_main, g_dist = jax.jit(functools.partial(optim.main_and_dist_grads, loss_fn))(params, x)
  ref = jax.grad(lambda p: loss_fn(p, x)[0][0])(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), g_main, ref)
  assert not bool(jnp.all(jnp.isfinite(g_dist["body"])))  # the distillation pullback does run that branch
  np.testing.assert_array_equal(g_dist["head"], 0.0)


def test_zero_cotangent_fallback_gives_the_same_gradients(monkeypatch):
  """Without JAX's internal symbolic zero, `zero_cotangent` gives an array of zeros: same gradients, more work."""
  rng = np.random.default_rng(4)
  params = {"body": {"kernel": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32), "bias": jnp.zeros(3)},
            "head": {"kernel": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32)}}
  x, y = jnp.asarray(rng.standard_normal((5, 4)), jnp.float32), jnp.asarray(rng.standard_normal((5, 2)), jnp.float32)
  loss_fn = functools.partial(_model_loss, calls=[])
  assert not isinstance(optim.zero_cotangent(jnp.ones(())), jax.Array)  # this JAX has the symbolic zero
  symbolic = jax.jit(functools.partial(optim.main_and_dist_grads, loss_fn))(params, x, y)
  monkeypatch.setattr(optim, "_SymbolicZero", None)
  zero = optim.zero_cotangent(jnp.ones((2,), jnp.bfloat16))
  assert isinstance(zero, jax.Array) and zero.dtype == jnp.bfloat16 and not zero.any()
  arrays = jax.jit(functools.partial(optim.main_and_dist_grads, loss_fn))(params, x, y)
  jax.tree.map(np.testing.assert_array_equal, symbolic, arrays)
