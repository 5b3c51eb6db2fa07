"""Distillation methods behind one registry and one signature.

  fn = distill.get("kd_svd", k=1)
  loss, aux = fn(student_taps, teacher_taps, student_logits, teacher_logits)
  loss, aux = distill.get("dkd")(student_taps, teacher_taps, student_logits, teacher_logits, labels=y, epoch=e)

Taps are lists of feature maps `[B, H, W, D]` (student and teacher, same order), logits `[B, C]`; `labels` `[B]`
integers (-1: an unlabelled image) and `epoch` (from 0, may be traced) are keyword arguments every method takes and
only some read (dkd). `loss` is a scalar (float32 at least), `aux` a dict of scalar diagnostics (one entry per tap
or tap pair, or the KL terms). The teacher never receives a gradient: its taps and logits are wrapped in
`stop_gradient` here, whatever the caller did.

Methods (see docs/method.md, section 12 for the list with formulas):
  none                the student alone: loss 0.
  kd_svd              Lee et al. 2018 (sections 2-4): truncated SVD per tap, alignment, DFV by RBF between
                      consecutive taps.
  fsp                 Yim et al. 2017 as the KD-SVD authors implemented it (section 9).
  soft_target         Hinton et al. 2015: KL between temperature-softened distributions, times T^2.
  attention_transfer  Zagoruyko & Komodakis 2017: per tap, the normalised channel mean of squared activations.
  dkd                 Zhao et al. 2022: decoupled KD, the target-class and the non-target-class KL weighted apart.
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
# fn(student_taps, teacher_taps, student_logits, teacher_logits, *, labels=None, epoch=None) -> (loss, aux)
DistillFn = Callable[..., tuple[Array, dict[str, Array]]]

LOSS_SCALES = ("sum", "mean")


def _as_float(x: Array) -> Array:
  """Upcasts half precision to float32 (SVD and squared sums need it); float64 stays float64."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_taps(method: str, student_taps, teacher_taps, *, same_channels: bool, consecutive: bool = True) -> None:
  """Raises a ValueError naming the offending taps when student and teacher taps cannot be paired; `consecutive`:
  the method pairs consecutive taps, so it needs at least 2."""
  if len(student_taps) != len(teacher_taps):
    raise ValueError(
        f"{method}: the student has {len(student_taps)} taps but the teacher has {len(teacher_taps)}; "
        "both networks must expose the same number of tapped feature maps.")
  if len(student_taps) < (2 if consecutive else 1):
    raise ValueError(f"{method}: needs at least {2 if consecutive else 1} taps"
                     f"{' (its losses pair consecutive taps)' if consecutive else ''}, got {len(student_taps)}; a "
                     "network that returns logits only has the taps a run names (config.model.taps, teacher.taps).")
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

  def fn(student_taps, teacher_taps, student_logits, teacher_logits, *, labels=None, epoch=None):
    del student_taps, teacher_taps, student_logits, teacher_logits, labels, epoch
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
      poster's gradient on the k kept triplets) or "released_code" (what the authors' released code computes): the
      `grad_mode` of `svd.truncated_svd`.
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
  if svd_grad not in svd.GRAD_MODES:
    raise ValueError(f"kd_svd: unknown svd_grad {svd_grad!r}; valid: {', '.join(svd.GRAD_MODES)}.")
  if loss_scale not in LOSS_SCALES:
    raise ValueError(f"kd_svd: unknown loss_scale {loss_scale!r}; valid: {', '.join(LOSS_SCALES)}.")
  if svd_solver not in eig.SOLVERS:
    raise ValueError(f"kd_svd: unknown svd_solver {svd_solver!r}; valid: {', '.join(eig.SOLVERS)}.")
  k = int(k)
  scale = 0.5 * math.sqrt(k)

  def fn(student_taps, teacher_taps, student_logits, teacher_logits, *, labels=None, epoch=None):
    del student_logits, teacher_logits, labels, epoch
    _check_taps("kd_svd", student_taps, teacher_taps, same_channels=True)
    for i, (s, t) in enumerate(zip(student_taps, teacher_taps)):
      for who, x in (("student", s), ("teacher", t)):
        if min(x.shape[1] * x.shape[2], x.shape[3]) < k + 1:
          raise ValueError(
              f"kd_svd: tap {i} {who} map {x.shape} has min(H*W, D) = {min(x.shape[1] * x.shape[2], x.shape[3])} "
              f"< k + 1 = {k + 1} singular vectors; lower k or tap a larger feature map.")
    feats = [_aligned_features(_as_float(s), jax.lax.stop_gradient(_as_float(t)), k, svd_grad, svd_solver)
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


def _pool_to(x: Array, h: int, w: int, reduce: Callable[..., Array], *, why: str) -> Array:
  """Pools `[B, H, W, D]` to `[B, h, w, D]` by `reduce` (jnp.max, jnp.mean) over windows of stride = size = H / h;
  a ValueError beginning with `why` when the sizes do not differ by one integer factor in H and W."""
  b, hx, wx, d = x.shape
  if hx == h and wx == w:
    return x
  if hx % h or wx % w or hx // h != wx // w:
    raise ValueError(f"{why}: cannot pool a {x.shape} map to {h}x{w}; the spatial sizes must differ by an integer "
                     "factor, equal in H and W.")
  f = hx // h
  return reduce(x.reshape(b, h, f, w, f, d), axis=(2, 4))


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
  top, bottom = (_pool_to(x, h, w, jnp.max, why="fsp: consecutive taps") for x in (top, bottom))
  return jnp.einsum("bhwi,bhwj->bij", top, bottom) / (h * w)


def fsp() -> DistillFn:
  """FSP (Yim et al., CVPR 2017) as in SSKD `nets/FSP.py` (docs/method.md section 9).

  `loss = sum_pairs mean_b( sum_{i,j} (G_S - stop_gradient(G_T))^2 / 2 ) / N` with `N = sum_pairs D_t * D_b`
  over consecutive tap pairs. Student and teacher need equal channel counts at every tap.

  Returns:
    `fn(...) -> (loss, {"pair_l": contribution of pair l})`.
  """

  def fn(student_taps, teacher_taps, student_logits, teacher_logits, *, labels=None, epoch=None):
    del student_logits, teacher_logits, labels, epoch
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


def _check_logits(method: str, student_logits: Array, teacher_logits: Array) -> None:
  if student_logits.shape != teacher_logits.shape:
    raise ValueError(f"{method}: student logits {student_logits.shape} and teacher logits {teacher_logits.shape} "
                     "differ; both networks must predict the same classes.")


def soft_target(*, temperature: float = 4.0) -> DistillFn:
  """Hinton et al. 2015: `T^2 * mean_b KL(softmax(z_T / T) || softmax(z_S / T))`, teacher under stop_gradient.

  The T^2 factor keeps the gradient's scale independent of T. Returns `fn(...) -> (loss, {"kl": loss})`.
  """
  if not temperature > 0:
    raise ValueError(f"soft_target: temperature must be positive, got {temperature!r}.")

  def fn(student_taps, teacher_taps, student_logits, teacher_logits, *, labels=None, epoch=None):
    del student_taps, teacher_taps, labels, epoch
    _check_logits("soft_target", student_logits, teacher_logits)
    log_p_s = jax.nn.log_softmax(_as_float(student_logits) / temperature, axis=-1)
    log_p_t = jax.nn.log_softmax(jax.lax.stop_gradient(_as_float(teacher_logits)) / temperature, axis=-1)
    loss = temperature**2 * jnp.mean(optax.losses.kl_divergence_with_log_targets(log_p_s, log_p_t))
    return loss, {"kl": loss}

  return fn


# ---------------------------------------------------------------------------------------------------------------
# attention_transfer


def attention_map(x: Array) -> Array:
  """`[B, H, W, D]` -> `[B, H * W]`: the channel mean of the squared activations at each position, divided by its
  L2 norm over positions (at least 1e-12, as torch's `F.normalize`)."""
  q = jnp.mean(jnp.square(x), axis=-1).reshape(x.shape[0], -1)
  return q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), 1e-12)


def attention_transfer(*, at_beta: float = 1000.0) -> DistillFn:
  """Attention transfer (Zagoruyko & Komodakis, ICLR 2017) as mdistiller's `AT` and RepDistiller's `Attention`.

  `loss = at_beta * sum_l mean_{b, p} (a_S[b, p] - a_T[b, p])^2`, `a = attention_map(F_l)` per tap l (p: positions);
  `at_beta = 1000` is the published weight (the authors' code, mdistiller, RepDistiller), power p = 2. Channel
  counts may differ between student and teacher. Where a pair's spatial sizes differ by an integer factor, the
  larger map is average-pooled to the smaller first (the references' `adaptive_avg_pool2d`; the paper pairs equal
  sizes). Returns `fn(...) -> (loss, {"tap_l": contribution of tap l})`.
  """
  if not at_beta > 0:
    raise ValueError(f"attention_transfer: at_beta must be positive, got {at_beta!r}.")

  def fn(student_taps, teacher_taps, student_logits, teacher_logits, *, labels=None, epoch=None):
    del student_logits, teacher_logits, labels, epoch
    _check_taps("attention_transfer", student_taps, teacher_taps, same_channels=False, consecutive=False)
    aux = {}
    for l, (s, t) in enumerate(zip(student_taps, teacher_taps)):
      h, w = min(s.shape[1], t.shape[1]), min(s.shape[2], t.shape[2])
      why = f"attention_transfer: tap {l} (student {s.shape}, teacher {t.shape})"
      a_s = attention_map(_pool_to(_as_float(s), h, w, jnp.mean, why=why))
      a_t = attention_map(_pool_to(jax.lax.stop_gradient(_as_float(t)), h, w, jnp.mean, why=why))
      aux[f"tap_{l}"] = at_beta * jnp.mean(jnp.square(a_s - a_t))
    return sum(aux.values()), aux

  return fn


# ---------------------------------------------------------------------------------------------------------------
# dkd


def dkd(*, dkd_alpha: float = 1.0, dkd_beta: float = 8.0, temperature: float = 4.0,
        dkd_warmup: int = 20) -> DistillFn:
  """Decoupled knowledge distillation (Zhao, Cui, Song, Qiu, Liang, CVPR 2022) as mdistiller's `DKD`.

  With `p = softmax(z / T)` over the classes, `b = (p_y, 1 - p_y)` the target-class binary split for the label y
  and `q = softmax(z / T)` over the C - 1 other classes, per image
    TCKD = T^2 KL(b_T || b_S),   NCKD = T^2 KL(q_T || q_S),
  and `loss = min((epoch + 1) / dkd_warmup, 1) * sum_b (dkd_alpha TCKD + dkd_beta NCKD) / B`. mdistiller's epochs
  count from 1, ours from 0: the factor is theirs at the same epoch. `dkd_warmup = 0`: no warm-up. Defaults are
  mdistiller's (the paper's CIFAR-100 setting): alpha 1, beta 8, T 4, warm-up 20 epochs. An unlabelled image
  (label -1; the reference has none) counts in B with zero loss.

  Returns `fn(..., labels=[B], epoch=...) -> (loss, {"tckd", "nckd": their weighted parts, "warmup": the factor})`.
  """
  for name, value in (("dkd_alpha", dkd_alpha), ("dkd_beta", dkd_beta)):
    if not value >= 0:
      raise ValueError(f"dkd: {name} must be >= 0, got {value!r}.")
  if not temperature > 0:
    raise ValueError(f"dkd: temperature must be positive, got {temperature!r}.")
  if isinstance(dkd_warmup, bool) or not isinstance(dkd_warmup, numbers.Integral) or dkd_warmup < 0:
    raise ValueError(f"dkd: dkd_warmup must be an integer >= 0 (epochs), got {dkd_warmup!r}.")

  def fn(student_taps, teacher_taps, student_logits, teacher_logits, *, labels=None, epoch=None):
    del student_taps, teacher_taps
    _check_logits("dkd", student_logits, teacher_logits)
    if labels is None or (dkd_warmup and epoch is None):
      raise ValueError("dkd: needs the labels (labels=[B] integers)" + (" and the epoch (epoch=, from 0) for its "
                       "warm-up" if dkd_warmup else "") + ".")
    z_s = _as_float(student_logits) / temperature
    z_t = jax.lax.stop_gradient(_as_float(teacher_logits)) / temperature
    labelled = labels >= 0
    target = jax.nn.one_hot(jnp.maximum(labels, 0), z_s.shape[-1], dtype=bool)  # unlabelled: any class, masked

    def splits(z):
      """log b = (log p_y, log (1 - p_y)) `[B, 2]` and log q `[B, C]` (meaningless at y, where q is 0)."""
      log_all = jax.nn.logsumexp(z, axis=-1, keepdims=True)
      log_others = jax.nn.logsumexp(z, axis=-1, keepdims=True, where=~target)
      log_b = jnp.concatenate([jnp.sum(jnp.where(target, z, 0.0), -1, keepdims=True), log_others], -1) - log_all
      return log_b, z - log_others

    (log_b_s, log_q_s), (log_b_t, log_q_t) = splits(z_s), splits(z_t)
    tckd = jnp.sum(jnp.exp(log_b_t) * (log_b_t - log_b_s), axis=-1)
    nckd = jnp.sum(jnp.where(target, 0.0, jnp.exp(log_q_t) * (log_q_t - log_q_s)), axis=-1)
    warm = jnp.minimum((jnp.asarray(epoch) + 1).astype(z_s.dtype) / dkd_warmup, 1.0) if dkd_warmup else 1.0
    scale = warm * temperature**2 / labels.shape[0]
    aux = {"tckd": scale * dkd_alpha * jnp.sum(jnp.where(labelled, tckd, 0.0)),
           "nckd": scale * dkd_beta * jnp.sum(jnp.where(labelled, nckd, 0.0))}
    return aux["tckd"] + aux["nckd"], {**aux, "warmup": jnp.asarray(warm, jnp.float32)}

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
    "attention_transfer": Method(attention_transfer, ("at_beta",)),
    "dkd": Method(dkd, ("dkd_alpha", "dkd_beta", "temperature", "dkd_warmup")),
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

  def fn(student_taps, teacher_taps, student_logits, teacher_logits, *, labels=None, epoch=None):
    total, aux = jnp.zeros((), jnp.float32), {}
    for name, part in fns.items():
      loss, part_aux = part(student_taps, teacher_taps, student_logits, teacher_logits, labels=labels, epoch=epoch)
      total = total + loss
      aux.update({f"{name}/{k}": v for k, v in part_aux.items()})
    return total, aux

  return fn


def get(name: str, **options: Any) -> DistillFn:
  """Returns the distillation function `fn(student_taps, teacher_taps, student_logits, teacher_logits, *,
  labels=None, epoch=None)`.

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
