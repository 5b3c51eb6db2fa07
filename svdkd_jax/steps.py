"""The jitted train and eval steps: pure functions of (state, teacher variables, batch), used by `svdkd_jax.train`.

    step_fn = steps.make_train_step(config, student, optimizer, distill_fn=distill.from_config(config.distill),
                                    steps_per_epoch=..., mesh=mesh, mean=ds.mean, std=ds.std, teacher=teacher)
    state, metrics = step_fn(state, teacher.variables, global_batch)   # state donated
    eval_step = steps.make_eval_step(student, mesh=mesh, mean=ds.mean, std=ds.std)
    steps.evaluate(eval_step, state, ds, mesh)                          # {"eval_accuracy", "eval_loss"}

One train step, jitted with the batch sharded over the "data" mesh axis and the state replicated:
  images = preprocess(uint8 batch, key(seed, step))                   augmentation inside the step
  teacher: eval-mode forward (frozen: no gradient, no BatchNorm update) -> taps_T, logits_T
  student: train-mode forward -> taps_S, logits_S; main = CE + coupled L2; dist = distill_fn(..., labels, epoch)
  g_main, g_dist from ONE forward (optim.main_and_dist_grads); g = optim.combine_gradients(g_main, g_dist, epoch)
  optax update; metrics incl. ||g_main||, ||g_dist||, ||g|| (is the clipped distillation gradient doing anything?)
The epoch and learning rate are computed from the traced step counter: one compilation per stage, none per epoch.
Augmentation and dropout keys are `fold_in(key(seed), step)`, so a resumed run repeats an uninterrupted one.
`state` is `{"params", "rest", "opt_state", "step"}` (see `train.create_train_state`).
"""

from collections.abc import Callable, Sequence
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import optax

from svdkd_jax import distill
from svdkd_jax import input_pipeline
from svdkd_jax import networks
from svdkd_jax import optim
from svdkd_jax import parallel

PyTree = Any
ChannelStats = jax.typing.ArrayLike | Sequence[float]  # per-channel mean or std [3], [0, 255] units
# 1stage: main + distillation gradients combined (without a teacher, the main task alone); 2stage's two phases:
# init (the distillation gradient alone) and main (the main task alone, no teacher).
STAGES = ("1stage", "init", "main")


def derangement(key: jax.Array, n: int) -> jax.Array:
  """A random permutation of `range(n)` with no fixed point (one n-cycle through a random order), `[n]` int32."""
  order = jax.random.permutation(key, n)
  return jnp.zeros(n, jnp.int32).at[order].set(jnp.roll(order, -1).astype(jnp.int32))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Accuracy over the labelled examples (label >= 0) of `logits` [B, C], `labels` [B]; 0 if there are none."""
  labelled = labels >= 0
  return jnp.sum((jnp.argmax(logits, -1) == labels) & labelled) / jnp.maximum(jnp.sum(labelled), 1)


def cross_entropy(logits: jax.Array, labels: jax.Array, reduction: str = "batch") -> jax.Array:
  """Softmax cross-entropy of `logits` [B, C] against `labels` [B], where label -1 marks an unlabelled example.

  Unlabelled examples have weight zero. `reduction`: "batch" divides by B (the released code: its unlabelled images
  have an all-zero one-hot target and still count in the batch mean), "labelled" by the number of labelled ones.
  """
  labelled = labels >= 0
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), jnp.maximum(labels, 0))
  ce = jnp.where(labelled, ce, 0.0)
  if reduction == "labelled":
    return jnp.sum(ce) / jnp.maximum(jnp.sum(labelled), 1)
  return jnp.mean(ce)


def _gradients(loss_fn: Callable, params: PyTree, args: tuple, *, stage: str, epoch: jax.Array, with_teacher: bool,
               combine: ml_collections.ConfigDict) -> tuple[tuple, dict, PyTree, PyTree, PyTree | None]:
  """`((main, dist), aux, grads, main_grads, dist_grads)` of one step's `loss_fn(params, *args)`, by stage."""
  if not with_teacher:
    def main_only(p):
      losses, aux = loss_fn(p, *args)
      return losses[0], (losses, aux)
    (_, (losses, aux)), main_grads = jax.value_and_grad(main_only, has_aux=True)(params)
    return losses, aux, main_grads, main_grads, None
  losses, aux, main_grads, dist_grads = optim.main_and_dist_grads(loss_fn, params, *args)
  if stage == "init":
    return losses, aux, dist_grads, main_grads, dist_grads
  grads = optim.combine_gradients(main_grads, dist_grads, epoch, rule=combine.rule, weight=combine.weight)
  return losses, aux, grads, main_grads, dist_grads


def make_loss_fn(config: ml_collections.ConfigDict, student: networks.Network,
                 distill_fn: distill.DistillFn | None) -> Callable[..., tuple[tuple[jax.Array, jax.Array], dict]]:
  """The student's train-mode losses `loss_fn(params, rest, dropout_key, images, labels, epoch, t_logits, t_taps)`.

  Returns `((main, dist), aux)`: main = cross-entropy (+ coupled L2), dist = `distill_fn` of the student's and the
  teacher's taps and logits, the labels and the epoch (0 when `t_logits` is None); aux holds the logits, the
  updated `rest` and the parts.
  """
  wd = 0.0 if config.optim.decoupled_weight_decay else config.optim.weight_decay

  def loss_fn(params, rest, dropout_key, images, labels, epoch, t_logits, t_taps):
    # Dropout call i draws its mask from fold_in(fold_in(dropout_key, 0), i): a function of (seed, step) alone,
    # so a resumed run draws the masks of an uninterrupted one.
    rngs = nnx.Rngs(dropout=jax.random.fold_in(dropout_key, 0))
    variables = {"params": params, "rest": rest}
    logits, taps, new_rest = networks.apply(student, variables, images, train=True, rngs=rngs)
    ce = cross_entropy(logits, labels, config.train.ce_reduction)
    main = ce + (optim.l2_penalty(params, wd) if wd else 0.0)
    if t_logits is None:
      dist, dist_aux = jnp.zeros((), jnp.float32), {}
    else:
      dist, dist_aux = distill_fn(taps, t_taps, logits, t_logits, labels=labels, epoch=epoch)
    return (main, dist), {"logits": logits, "rest": new_rest, "ce": ce, "dist_aux": dist_aux}

  return loss_fn


def make_train_step(config: ml_collections.ConfigDict, student: networks.Network, optimizer: optim.Optimizer,
                    *, distill_fn: distill.DistillFn | None, steps_per_epoch: int, mesh: jax.sharding.Mesh,
                    mean: ChannelStats, std: ChannelStats, teacher: networks.Network | None = None,
                    stage: str = "1stage") -> Callable[[dict, dict | None, dict], tuple[dict, dict]]:
  """The jitted train step `(state, teacher_variables, batch) -> (state, metrics)`; `state` is donated.

  Stages: "1stage" (main + distillation gradients combined; without a teacher, the main task alone), "init"
  (distillation gradient alone: 2stage's first phase), "main" (main task alone, no teacher: 2stage's second phase).
  `optimizer`: `optim.create_optimizer`'s; its schedule gives the logged `lr`. `distill_fn` (see `distill.get`;
  unused without a teacher) maps the taps and logits to the distillation loss. `mean`, `std`: per-channel
  statistics [3] in [0, 255] units (`input_pipeline.Datasets`'s).
  `batch`: {"image": uint8 [B, H, W, 3], "label": int32 [B]}, sharded on the "data" axis.
  """
  if stage not in STAGES:
    raise ValueError(f"stage={stage!r}; valid: {', '.join(STAGES)}.")
  if stage == "main":
    teacher = None
  if teacher is not None and distill_fn is None:
    raise ValueError("a train step with a teacher needs its distill_fn (distill.from_config(config.distill)).")
  if stage == "init" and teacher is None:
    raise ValueError("stage 'init' (distillation alone) needs a teacher.")
  seed_key = jax.random.key(config.seed)
  loss_fn = make_loss_fn(config, student, distill_fn)
  # The learning rate and the epoch follow the stage's own step count (2stage restarts the schedule).
  offset = config.distill.init_epochs * steps_per_epoch if stage == "main" else 0
  mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

  def step_fn(state, t_vars, batch):
    step = state["step"]
    aug_key, dropout_key = jax.random.split(jax.random.fold_in(seed_key, step))
    images = input_pipeline.preprocess(batch["image"], aug_key, train=True, mean=mean, std=std,
                                       augment=config.data.augment)
    labels = batch["label"]
    t_logits = t_taps = None
    metrics = {}
    if teacher is not None:
      t_logits, t_taps, _ = networks.apply(teacher, t_vars, images)
      t_logits, t_taps = jax.lax.stop_gradient((t_logits, t_taps))
      metrics["teacher_accuracy"] = accuracy(t_logits, labels)
      if config.distill.teacher_images == "deranged":  # control: each image meets the teacher on another one
        other = derangement(jax.random.fold_in(jax.random.fold_in(seed_key, step), 1), labels.shape[0])
        t_logits, t_taps = jax.tree.map(lambda t: jnp.take(t, other, axis=0), (t_logits, t_taps))
    epoch = (step - offset) // steps_per_epoch
    args = (state["rest"], dropout_key, images, labels, epoch, t_logits, t_taps)
    (main, dist), aux, grads, main_grads, dist_grads = _gradients(
        loss_fn, state["params"], args, stage=stage, epoch=epoch, with_teacher=teacher is not None,
        combine=config.combine)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {"params": params, "rest": aux["rest"], "opt_state": opt_state, "step": step + 1}
    metrics.update(
        loss=(dist if stage == "init" else main + (dist if teacher is not None else 0.0)),
        main_loss=main, ce_loss=aux["ce"], dist_loss=dist, accuracy=accuracy(aux["logits"], labels),
        lr=optimizer.schedule(step - offset), grad_norm_main=optax.tree.norm(main_grads),
        grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params))
    if dist_grads is not None:
      metrics["grad_norm_dist"] = optax.tree.norm(dist_grads)
    metrics.update({f"dist/{k}": v for k, v in aux["dist_aux"].items() if jnp.ndim(v) == 0})
    return new_state, metrics

  replicated, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(step_fn, in_shardings=(replicated, replicated, data), out_shardings=(replicated, replicated),
                 donate_argnums=0)


def make_eval_step(student: networks.Network, *, mesh: jax.sharding.Mesh, mean: ChannelStats,
                   std: ChannelStats) -> Callable[[dict, dict, dict], dict]:
  """Jitted `(params, rest, batch) -> {"correct", "loss", "count"}` sums over the real (mask = 1) examples.

  `mean`, `std`: per-channel statistics [3] in [0, 255] units; `batch` adds `"mask"` [B] to the train batch's keys.
  """
  mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

  def eval_fn(params, rest, batch):
    images = input_pipeline.preprocess(batch["image"], None, train=False, mean=mean, std=std, augment="none")
    logits, _, _ = networks.apply(student, {"params": params, "rest": rest}, images)
    mask = batch["mask"].astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["label"])
    return {"correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask), "loss": jnp.sum(ce * mask),
            "count": jnp.sum(mask)}

  replicated, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(eval_fn, in_shardings=(replicated, replicated, data), out_shardings=replicated)


def evaluate(eval_step: Callable[[dict, dict, dict], dict], state: dict, ds: input_pipeline.Datasets,
             mesh: jax.sharding.Mesh) -> dict:
  """Accuracy and mean cross-entropy over the whole eval split (padding masked out).

  `eval_step`: `make_eval_step`'s; `state`: holds the student's `"params"` and `"rest"`. Returns
  `{"eval_accuracy", "eval_loss"}` as floats.
  """
  sharding = parallel.data_sharding(mesh)
  totals = None
  for batch in ds.eval_batches():
    out = eval_step(state["params"], state["rest"], input_pipeline.to_global(batch, sharding))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.0)
  return {"eval_accuracy": float(totals["correct"]) / count, "eval_loss": float(totals["loss"]) / count}
