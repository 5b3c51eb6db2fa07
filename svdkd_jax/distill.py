"""Distillation methods behind one registry and one signature.

  fn = distill.get("kd_svd", k=1)
  loss, aux = fn(student_taps, teacher_taps, student_logits, teacher_logits)

Taps are lists of feature maps `[B, H, W, D]` (student and teacher, same order), logits `[B, C]`. `loss` is a scalar
(float32 at least), `aux` a dict of scalar diagnostics (one entry per tap pair, or the KL term). The teacher never
receives a gradient: its taps and logits are wrapped in `stop_gradient` here, whatever the caller did.

Methods (see docs/method.md):
  none         the student alone: loss 0.
  kd_svd       Lee et al. 2018 (sections 2-4): truncated SVD per tap, alignment, DFV by RBF between consecutive taps.
  fsp          Yim et al. 2017 as the KD-SVD authors implemented it (section 9).
  soft_target  Hinton et al. 2015: KL between temperature-softened distributions, times T^2.
"""

from collections.abc import Callable, Sequence
import dataclasses
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import optax

from svdkd_jax import eig
from svdkd_jax import svd

Array = jax.Array
DistillFn = Callable[[Sequence[Array], Sequence[Array], Array, Array], tuple[Array, dict[str, Array]]]

LOSS_SCALES = ("sum", "mean")
# svd_grad -> the `grad_mode` of svd.truncated_svd that computes it (svd.py's own names are accepted as they are).
SVD_GRADS = {"exact": "exact", "kept_triplets": "paper", "released_code": "sskd_code"}


def _as_float(x: Array) -> Array:
  """Upcasts half precision to float32 (SVD and squared sums need it); float64 stays float64."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_taps(method: str, student_taps, teacher_taps, *, same_channels: bool) -> None:
  """Raises a ValueError naming the offending taps when student and teacher taps cannot be paired."""
  if len(student_taps) != len(teacher_taps):
    raise ValueError(
        f"{method}: the student has {len(student_taps)} taps but the teacher has {len(teacher_taps)}; "
        "both networks must expose the same number of tapped feature maps.")
  if len(student_taps) < 2:
    raise ValueError(f"{method}: needs at least 2 taps (losses pair consecutive taps), got {len(student_taps)}.")
  for i, (s, t) in enumerate(zip(student_taps, teacher_taps)):
    if s.ndim != 4 or t.ndim != 4:
      raise ValueError(f"{method}: tap {i} must be [B, H, W, D]; got student {s.shape}, teacher {t.shape}.")
    if s.shape[0] != t.shape[0]:
      raise ValueError(f"{method}: tap {i} batch sizes differ: student {s.shape}, teacher {t.shape}.")
    if same_channels and s.shape[-1] != t.shape[-1]:
      raise ValueError(
          f"{method}: tap {i} channel counts differ: student {s.shape}, teacher {t.shape}; {method} compares "
          "student and teacher channel by channel, so pick taps (or widths) with equal D at every tap.")


# ---------------------------------------------------------------------------------------------------------------
# none


def none() -> DistillFn:
  """The student alone: zero loss, no diagnostics."""

  def fn(student_taps, teacher_taps, student_logits, teacher_logits):
    del student_taps, teacher_taps, student_logits, teacher_logits
    return jnp.zeros((), jnp.float32), {}

  return fn


# ---------------------------------------------------------------------------------------------------------------
# kd_svd


def dfv(front: Array, back: Array, beta: float) -> Array:
  """Distilled feature vectors of one tap pair by RBF (docs/method.md section 4).

  Args:
    front: `[B, D_l, k]` aligned, weighted singular vectors of tap l.
    back: `[B, D_l+1, k]` the same for tap l+1.
    beta: RBF width (8 in the paper).

  Returns:
    `[B, D_l, D_l+1, k]` with entries `exp(-(front[b, m, i] - back[b, n, i])^2 / beta)`.
  """
  return jnp.moveaxis(_dfv_k_major(front, back, beta), 1, -1)


def _dfv_k_major(front: Array, back: Array, beta: float) -> Array:
  """`dfv` laid out `[B, k, D_l, D_l+1]`: with the channel dims minor, XLA's CPU reductions over it vectorise.

  (A reduction of the `[..., k]` layout with k = 1 compiled to a scalar loop: 140 ms instead of 2 ms for the
  forward of the width-0.25 VGG taps at batch 128.)
  """
  front, back = jnp.swapaxes(front, 1, 2), jnp.swapaxes(back, 1, 2)  # [B, k, D]
  return jnp.exp(-jnp.square(front[:, :, :, None] - back[:, :, None, :]) / beta)


def _aligned_features(student: Array, teacher: Array, k: int, grad_mode: str,
                      solver: str) -> tuple[Array, Array]:
  """One tap: `[B, H, W, D]` x2 -> aligned, weighted right singular vectors `[B, D, k]` x2 (docs/method.md 3)."""
  b, h, w, d = student.shape
  _, th, tw, _ = teacher.shape
  _, _, student_v = svd.truncated_svd(student.reshape(b, h * w, d), k + 1, grad_mode=grad_mode, solver=solver)
  _, teacher_s, teacher_v = svd.truncated_svd(teacher.reshape(b, th * tw, d), k, grad_mode=grad_mode, solver=solver)
  return svd.align(student_v, teacher_v, teacher_s)


def kd_svd(*, k: int = 1, beta: float = 8.0, svd_grad: str = "exact", loss_scale: str = "mean",
           svd_solver: str = "auto") -> DistillFn:
  """KD-SVD (Lee, Kim, Song, ECCV 2018) as in the authors' released code (docs/method.md 2-4).

  Per tap l, each sample's map `M = reshape(F, [HW, D])` is decomposed: the student keeps k+1 right singular
  vectors as candidates, the teacher k; `svd.align` picks for each teacher vector the student candidate with the
  largest |cosine|, weights both by `sigma_T / ||sigma_T||` and flips the teacher's sign to match. For consecutive
  taps (l, l+1) the DFV is `dfv(f_l, f_l+1, beta)`, `[B, D_l, D_l+1, k]`, and the loss per pair is
  `c * sum_{m,n,i} (DFV_S - stop_gradient(DFV_T))^2` per sample, with `c = 1/2 * sqrt(k)` (TF `l2_loss` x sqrt(k)).

  Args:
    k: distilled singular vectors per tap (paper: 1). Every tap needs `min(HW, D) >= k + 1`.
    beta: RBF width (paper: 8).
    svd_grad: the SVD backward (docs/svd_gradient.md): "exact" (the gradient of the loss), "kept_triplets" (the
      poster's gradient on the k kept triplets) or "released_code" (what the authors' released code computes);
      `SVD_GRADS` names the `svd.truncated_svd` grad_mode of each, and those names work here too.
    loss_scale: "mean": the per-sample losses are averaged over the batch (the scale KD-SVD gains with in the regime
      tables, experiments/results/README.md). "sum": summed over the batch, as the released code, i.e. exactly the
      "mean" loss times B; the gradient clipping of `optim.combine_gradients` then sets the effective scale. Both
      keep the 1/2 * sqrt(k) factor.
    svd_solver: the Gram matrices' top-k eigensolver, one of `eig.SOLVERS` (svdkd_jax/eig.py).

  Returns:
    `fn(student_taps, teacher_taps, student_logits, teacher_logits) -> (loss, {"pair_l": loss of pair l})`.

  Deliberate difference from the released code: a sample whose singular vectors are not finite (student or
  teacher, any tap) is dropped from the loss (its features are zeroed, so its DFV difference is 0) rather than
  having the surviving samples' gradients rescaled by B / #finite.
  """
  if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
    raise ValueError(f"kd_svd: k must be a positive integer, got {k!r}.")
  if not beta > 0:
    raise ValueError(f"kd_svd: beta must be positive, got {beta!r}.")
  grad_mode = SVD_GRADS.get(svd_grad, svd_grad)
  if grad_mode not in svd.GRAD_MODES:
    raise ValueError(f"kd_svd: unknown svd_grad {svd_grad!r}; valid: {', '.join(SVD_GRADS)}.")
  if loss_scale not in LOSS_SCALES:
    raise ValueError(f"kd_svd: unknown loss_scale {loss_scale!r}; valid: {', '.join(LOSS_SCALES)}.")
  if svd_solver not in eig.SOLVERS:
    raise ValueError(f"kd_svd: unknown svd_solver {svd_solver!r}; valid: {', '.join(eig.SOLVERS)}.")
  k = int(k)
  scale = 0.5 * math.sqrt(k)

  def fn(student_taps, teacher_taps, student_logits, teacher_logits):
    del student_logits, teacher_logits
    _check_taps("kd_svd", student_taps, teacher_taps, same_channels=True)
    for i, (s, t) in enumerate(zip(student_taps, teacher_taps)):
      for who, x in (("student", s), ("teacher", t)):
        if min(x.shape[1] * x.shape[2], x.shape[3]) < k + 1:
          raise ValueError(
              f"kd_svd: tap {i} {who} map {x.shape} has min(H*W, D) = {min(x.shape[1] * x.shape[2], x.shape[3])} "
              f"< k + 1 = {k + 1} singular vectors; lower k or tap a larger feature map.")
    feats = [_aligned_features(_as_float(s), jax.lax.stop_gradient(_as_float(t)), k, grad_mode, svd_solver)
             for s, t in zip(student_taps, teacher_taps)]
    # Per-sample guard: a non-finite decomposition must not poison the batch (its loss and gradient become 0).
    finite = jnp.all(jnp.stack([jnp.isfinite(f).all(axis=(1, 2)) for pair in feats for f in pair]), axis=0)
    feats = [tuple(jnp.where(finite[:, None, None], f, 0.0) for f in pair) for pair in feats]

    aux = {}
    for l in range(len(feats) - 1):
      dfv_s = _dfv_k_major(feats[l][0], feats[l + 1][0], beta)
      dfv_t = jax.lax.stop_gradient(_dfv_k_major(feats[l][1], feats[l + 1][1], beta))
      per_sample = scale * jnp.sum(jnp.square(dfv_s - dfv_t), axis=(1, 2, 3))  # [B]
      aux[f"pair_{l}"] = jnp.sum(per_sample) if loss_scale == "sum" else jnp.mean(per_sample)
    return sum(aux.values()), aux

  return fn


# ---------------------------------------------------------------------------------------------------------------
# fsp


def _max_pool_to(x: Array, h: int, w: int) -> Array:
  """Max-pools `[B, H, W, D]` to `[B, h, w, D]` with window = stride = H / h (the authors' 2x2/2 when H = 2h)."""
  b, hx, wx, d = x.shape
  if hx == h and wx == w:
    return x
  if hx % h or wx % w or hx // h != wx // w:
    raise ValueError(f"fsp: cannot max-pool a {x.shape} map to {h}x{w}; consecutive taps' spatial sizes must "
                     "differ by an integer factor, equal in H and W.")
  f = hx // h
  return x.reshape(b, h, f, w, f, d).max(axis=(2, 4))


def fsp_matrix(top: Array, bottom: Array) -> Array:
  """Flow-of-solution-procedure matrix of two taps (docs/method.md section 9).

  Args:
    top: `[B, H_t, W_t, D_t]` the earlier tap.
    bottom: `[B, H_b, W_b, D_b]` the next tap.

  Returns:
    `[B, D_t, D_b]`, `G = T^T Bm / (H W)` after max-pooling the larger map to the smaller's size (the authors pool
    only `top`, which is always the larger in their networks).
  """
  h = min(top.shape[1], bottom.shape[1])
  w = min(top.shape[2], bottom.shape[2])
  top, bottom = _max_pool_to(top, h, w), _max_pool_to(bottom, h, w)
  return jnp.einsum("bhwi,bhwj->bij", top, bottom) / (h * w)


def fsp() -> DistillFn:
  """FSP (Yim et al., CVPR 2017) as in SSKD `nets/FSP.py` (docs/method.md section 9).

  `loss = sum_pairs mean_b( sum_{i,j} (G_S - stop_gradient(G_T))^2 / 2 ) / N` with `N = sum_pairs D_t * D_b`
  over consecutive tap pairs. Student and teacher need equal channel counts at every tap.

  Returns:
    `fn(...) -> (loss, {"pair_l": contribution of pair l})`.
  """

  def fn(student_taps, teacher_taps, student_logits, teacher_logits):
    del student_logits, teacher_logits
    _check_taps("fsp", student_taps, teacher_taps, same_channels=True)
    s = [_as_float(x) for x in student_taps]
    t = [jax.lax.stop_gradient(_as_float(x)) for x in teacher_taps]
    n = sum(s[l].shape[-1] * s[l + 1].shape[-1] for l in range(len(s) - 1))
    aux = {}
    for l in range(len(s) - 1):
      diff = fsp_matrix(s[l], s[l + 1]) - fsp_matrix(t[l], t[l + 1])
      aux[f"pair_{l}"] = jnp.mean(0.5 * jnp.sum(jnp.square(diff), axis=(1, 2))) / n
    return sum(aux.values()), aux

  return fn


# ---------------------------------------------------------------------------------------------------------------
# soft_target


def soft_target(*, temperature: float = 4.0) -> DistillFn:
  """Hinton et al. 2015: `T^2 * mean_b KL(softmax(z_T / T) || softmax(z_S / T))`, teacher under stop_gradient.

  The T^2 factor keeps the gradient's scale independent of T. Returns `fn(...) -> (loss, {"kl": loss})`.
  """
  if not temperature > 0:
    raise ValueError(f"soft_target: temperature must be positive, got {temperature!r}.")

  def fn(student_taps, teacher_taps, student_logits, teacher_logits):
    del student_taps, teacher_taps
    if student_logits.shape != teacher_logits.shape:
      raise ValueError(f"soft_target: student logits {student_logits.shape} and teacher logits "
                       f"{teacher_logits.shape} differ; both networks must predict the same classes.")
    log_p_s = jax.nn.log_softmax(_as_float(student_logits) / temperature, axis=-1)
    log_p_t = jax.nn.log_softmax(jax.lax.stop_gradient(_as_float(teacher_logits)) / temperature, axis=-1)
    loss = temperature**2 * jnp.mean(optax.losses.kl_divergence_with_log_targets(log_p_s, log_p_t))
    return loss, {"kl": loss}

  return fn


# ---------------------------------------------------------------------------------------------------------------
# registry


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered method: `build(**options)` returns its `DistillFn`; `options` names the keyword options it takes
  (each is a `config.distill` key of the same name)."""
  build: Callable[..., DistillFn]
  options: tuple[str, ...] = ()


_REGISTRY: dict[str, Method] = {
    "none": Method(none),
    "kd_svd": Method(kd_svd, ("k", "beta", "svd_grad", "loss_scale", "svd_solver")),
    "fsp": Method(fsp),
    "soft_target": Method(soft_target, ("temperature",)),
}
NAMES = tuple(_REGISTRY)


def is_method(name: str) -> bool:
  """Whether `name` is a method of the registry, or several joined by "+" (e.g. "kd_svd+soft_target")."""
  parts = name.split("+")
  return all(p in _REGISTRY for p in parts) and len(set(parts)) == len(parts)


def option_names(name: str) -> tuple[str, ...]:
  """The keyword options `get(name, ...)` accepts, e.g. `("k", "beta", "svd_grad", "loss_scale")` for kd_svd."""
  if not is_method(name):
    raise ValueError(f"unknown distillation method {name!r}; valid methods: {', '.join(NAMES)}, or several "
                     "joined by '+'.")
  return tuple(o for part in name.split("+") for o in _REGISTRY[part].options)


def all_option_names() -> tuple[str, ...]:
  """Every option of every registered method, in registry order."""
  return tuple(dict.fromkeys(o for method in _REGISTRY.values() for o in method.options))


def _sum_of(fns: dict[str, DistillFn]) -> DistillFn:
  """The sum of several methods' losses (one distillation gradient); aux keys are prefixed `<method>/`."""

  def fn(student_taps, teacher_taps, student_logits, teacher_logits):
    total, aux = jnp.zeros((), jnp.float32), {}
    for name, part in fns.items():
      loss, part_aux = part(student_taps, teacher_taps, student_logits, teacher_logits)
      total = total + loss
      aux.update({f"{name}/{k}": v for k, v in part_aux.items()})
    return total, aux

  return fn


def get(name: str, **options: Any) -> DistillFn:
  """Returns the distillation function `fn(student_taps, teacher_taps, student_logits, teacher_logits)`.

  Args:
    name: one of `NAMES`, or several joined by "+": their losses are summed, each with its own options.
    **options: the method's options (see `option_names(name)` and each method's docstring).

  Raises:
    ValueError: unknown method, unknown option or invalid option value.
  """
  valid = option_names(name)
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(f"distill.get({name!r}): unknown option(s) {', '.join(unknown)}; valid options for {name!r}: "
                     f"{', '.join(valid) if valid else '(none)'}.")
  if "+" not in name:
    return _REGISTRY[name].build(**options)
  return _sum_of({part: get(part, **{k: v for k, v in options.items() if k in option_names(part)})
                  for part in name.split("+")})


def from_config(distill_config) -> DistillFn:
  """`get(config.distill.method, ...)` with the options that method declares, each read from the `config.distill`
  key of its name (`run_config.validate_run` checks that the other options are at their defaults)."""
  name = distill_config.method
  return get(name, **{key: distill_config[key] for key in option_names(name)})
