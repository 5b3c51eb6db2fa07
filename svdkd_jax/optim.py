"""The optimiser (an optax chain built from `config.optim`) and the multi-task gradient combination.

A KD-SVD step needs two gradients of the student from one forward pass, the main task's and the distillation's
(`main_and_dist_grads`), joined per parameter tensor with the distillation part clipped to a fraction of the main
part's norm (`combine_gradients`, docs/method.md section 5), then fed to the optax chain (`create_optimizer`):

  (losses, aux, g_main, g_dist) = optim.main_and_dist_grads(loss_fn, params, batch)
  grads = optim.combine_gradients(g_main, g_dist, epoch, rule=config.combine.rule, weight=config.combine.weight)
  updates, opt_state = tx.update(grads, opt_state, params)

Weight decay (on conv/dense kernels only, i.e. parameters whose path ends in "kernel"):
  coupled (`decoupled_weight_decay=False`, the authors' code): the trainer adds `l2_penalty(params, wd)` to the main
    loss, so it is part of g_main and of the clipping threshold (as in SSKD HEAD);
  decoupled: `create_optimizer` adds `optax.add_decayed_weights` after momentum/Adam, so the step is
    `-lr * (direction + wd * w)` (SGDW/AdamW as optax.adamw does it).
`config.optim` and `config.combine` are checked by `svdkd_jax.config.validate`; this module reads them as given.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

try:  # JAX's symbolic zero cotangent: an internal type, so used only where this JAX has it (see zero_cotangent).
  from jax.interpreters.ad import Zero as _SymbolicZero
except ImportError:
  _SymbolicZero = None

PyTree = Any
COMBINE_RULES = ("clip_per_tensor", "rescale_per_tensor", "sum", "clip_global_norm")


# ---------------------------------------------------------------------------------------------------------------
# optimiser


class Optimizer(NamedTuple):
  """An optax gradient transformation (`init`, `update`) together with the learning-rate schedule it applies, so
  that the train step logs the rate of each step from the very schedule that set it."""
  init: Callable[[PyTree], Any]
  update: Callable[..., tuple[PyTree, Any]]
  schedule: optax.Schedule


def learning_rate_schedule(optim_config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """Piecewise-constant learning rate by epoch.

  `learning_rate * decay_factor ** (number of boundaries <= epoch)` with `epoch = step // steps_per_epoch`; the
  paper: 1e-2, 1e-3 from epoch 100, 1e-4 from epoch 150.
  """
  if steps_per_epoch < 1:
    raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
  return optax.piecewise_constant_schedule(
      optim_config.learning_rate, {int(b) * steps_per_epoch: optim_config.decay_factor
                                   for b in optim_config.boundaries})


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def is_kernel(path: tuple) -> bool:
  """True when a pytree path names a conv/dense kernel (last name "kernel", ignoring an NNX Variable's ".value")."""
  names = [_key_name(k) for k in path]
  while names and names[-1] in ("value", "raw_value"):
    names.pop()
  return bool(names) and names[-1] == "kernel"


def kernel_mask(params: PyTree) -> PyTree:
  """Boolean pytree like `params`: True on kernels (the tensors weight decay applies to)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: is_kernel(path), params)


def l2_penalty(params: PyTree, weight_decay: float) -> jax.Array:
  """Coupled L2 regulariser `0.5 * weight_decay * sum ||w||^2` over kernels (TF `l2_loss` on conv/FC weights)."""
  leaves = [w for path, w in jax.tree_util.tree_flatten_with_path(params)[0] if is_kernel(path)]
  total = sum((jnp.sum(jnp.square(w.astype(jnp.promote_types(w.dtype, jnp.float32)))) for w in leaves),
              jnp.zeros((), jnp.float32))
  return 0.5 * weight_decay * total


def create_optimizer(optim_config: ml_collections.ConfigDict, steps_per_epoch: int) -> Optimizer:
  """The optax chain of `config.optim`, with its learning-rate schedule.

  sgd: `optax.trace(momentum, nesterov)` (TF MomentumOptimizer semantics, = optax.sgd); adam: `optax.scale_by_adam`
  with optax's defaults (momentum/nesterov unused). Then decoupled weight decay on kernels if asked, then the
  learning-rate schedule. With coupled weight decay the chain holds no decay: add `l2_penalty` to the main loss.
  """
  schedule = learning_rate_schedule(optim_config, steps_per_epoch)
  if optim_config.name == "adam":
    parts = [optax.scale_by_adam()]
  else:
    parts = [optax.trace(decay=optim_config.momentum, nesterov=optim_config.nesterov)]
  if optim_config.decoupled_weight_decay and optim_config.weight_decay > 0:
    parts.append(optax.add_decayed_weights(optim_config.weight_decay, mask=kernel_mask))
  parts.append(optax.scale_by_learning_rate(schedule))
  tx = optax.chain(*parts)
  return Optimizer(tx.init, tx.update, schedule)


# ---------------------------------------------------------------------------------------------------------------
# multi-task gradients


def _norm(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.promote_types(x.dtype, jnp.float32)))))


def clip_by_norm(x: jax.Array, max_norm: jax.Array) -> jax.Array:
  """`x * max_norm / max(||x||, max_norm)` (TF `clip_by_norm`), without NaN when `||x||` or `max_norm` is 0."""
  norm = _norm(x)
  factor = jnp.where(norm > max_norm, max_norm / jnp.where(norm > 0, norm, 1.0), 1.0)
  return (x * factor).astype(x.dtype)


def combine_gradients(main_grads: PyTree, dist_grads: PyTree, epoch: int | jax.Array, *, rule: str = "clip_per_tensor",
                      weight: float = 1.0) -> PyTree:
  """Joins the main-task and distillation gradients (two pytrees of the same structure).

  With `g_d = weight * dist_grads` and `s = sigmoid(epoch)` (epoch may be traced: no retrace per epoch):
    "clip_per_tensor" (the released code, docs/method.md 5.1): `g_m + clip_by_norm(g_d, s * ||g_m||)`.
    "rescale_per_tensor" (the poster, docs/method.md 5.2):
      `g_m + (s * ||g_m|| / ||g_d|| * g_d if ||g_d|| > ||g_m|| else g_d)`.
    "sum": `g_m + g_d`.
    "clip_global_norm": `g_m + clip_by_global_norm(g_d, s * global_norm(g_m))` over the whole pytree.
  `weight` scales the distillation gradient before any clipping (1.0 = the released code); under the clipping
  rules it only matters while the distillation gradient is below its threshold.
  A tensor the distillation loss does not reach (zero g_d) gets g_m; zero norms never produce NaN.
  """
  if rule not in COMBINE_RULES:
    raise ValueError(f"unknown combine rule {rule!r}; valid: {', '.join(COMBINE_RULES)}.")
  if jax.tree.structure(main_grads) != jax.tree.structure(dist_grads):
    raise ValueError("combine_gradients: main and distillation gradients have different structures: "
                     f"{jax.tree.structure(main_grads)} vs {jax.tree.structure(dist_grads)}.")
  s = jax.nn.sigmoid(jnp.asarray(epoch, jnp.float32))
  dist_grads = jax.tree.map(lambda g: g * jnp.asarray(weight, g.dtype), dist_grads)

  if rule == "sum":
    return jax.tree.map(jnp.add, main_grads, dist_grads)
  if rule == "clip_global_norm":
    threshold = s * optax.tree.norm(main_grads)
    norm = optax.tree.norm(dist_grads)
    factor = jnp.where(norm > threshold, threshold / jnp.where(norm > 0, norm, 1.0), 1.0)
    return jax.tree.map(lambda m, d: m + (d * factor).astype(d.dtype), main_grads, dist_grads)
  if rule == "clip_per_tensor":
    return jax.tree.map(lambda m, d: m + clip_by_norm(d, s * _norm(m)), main_grads, dist_grads)

  def rescale(m, d):
    norm_m, norm_d = _norm(m), _norm(d)
    factor = jnp.where(norm_d > norm_m, s * norm_m / jnp.where(norm_d > 0, norm_d, 1.0), 1.0)
    return m + (d * factor).astype(d.dtype)

  return jax.tree.map(rescale, main_grads, dist_grads)


def zero_cotangent(x: jax.Array) -> Any:
  """A zero cotangent for the output `x` of a `jax.vjp` pullback.

  JAX's symbolic zero where available: the pullback then skips the part of the graph that only the other outputs
  need (in `main_and_dist_grads`, the whole SVD backward of the main-task pullback). Where this JAX lacks that
  internal, an array of zeros: the same gradients at the cost of a full backward pass.
  """
  if _SymbolicZero is not None and hasattr(jax.typeof(x), "to_ct_aval"):
    return _SymbolicZero(jax.typeof(x).to_ct_aval())
  return jnp.zeros_like(x)


def main_and_dist_grads(loss_fn: Callable[..., tuple[tuple[jax.Array, jax.Array], Any]], params: PyTree,
                        *args: Any) -> tuple[tuple[jax.Array, jax.Array], Any, PyTree, PyTree]:
  """Gradients of the main and the distillation loss from ONE forward pass (one `jax.vjp`, two pullbacks).

  Args:
    loss_fn: `loss_fn(params, *args) -> ((main_loss, dist_loss), aux)`, both losses scalars.
    params: the pytree to differentiate.
    *args: passed through to `loss_fn` (not differentiated).

  Returns:
    `((main_loss, dist_loss), aux, main_grads, dist_grads)`; the grads have the structure of `params`, with zeros
    where a loss does not depend on a parameter (e.g. the logits layer for a feature-distillation loss).
  """
  losses, pullback, aux = jax.vjp(lambda p: loss_fn(p, *args), params, has_aux=True)
  main_loss, dist_loss = losses
  # Each pullback gets a zero cotangent for the other loss. Measured on CPU: a vmap of the pullback over both
  # cotangents instead was slower than two passes.
  (main_grads,) = pullback((jnp.ones_like(main_loss), zero_cotangent(dist_loss)))
  (dist_grads,) = pullback((zero_cotangent(main_loss), jnp.ones_like(dist_loss)))
  return (main_loss, dist_loss), aux, main_grads, dist_grads
