"""Training: `train_and_evaluate(config, workdir)` trains one network (teacher, student alone, or distilled student).

A run, in order: check the config and the workdir, build the mesh and the data, create the student (and restore
the frozen teacher for a distillation run), resume from the newest readable checkpoint if any (a damaged newer one
is set aside as `<step>.unreadable`, with a warning), then loop over steps with one jitted train step, evaluating
on the full eval split at each epoch end and checkpointing every `train.checkpoint_every_steps` and at each epoch
end. Metrics go to `WORKDIR/metrics.jsonl` and TensorBoard, the
final summary to `WORKDIR/summary.json` (`"complete": true` once every step ran).

The train step (`make_train_step`), a pure function of (state, teacher variables, batch) jitted with the batch
sharded over the "data" mesh axis and the state replicated (state donated):
  images = preprocess(uint8 batch, key(seed, step))                   augmentation inside the step
  teacher: eval-mode forward (frozen: no gradient, no BatchNorm update) -> taps_T, logits_T
  student: train-mode forward -> taps_S, logits_S; main = CE + coupled L2; dist = distill_fn(...)
  g_main, g_dist from ONE forward (optim.main_and_dist_grads); g = optim.combine_gradients(g_main, g_dist, epoch)
  optax update; metrics incl. ||g_main||, ||g_dist||, ||g|| (is the clipped distillation gradient doing anything?)
The epoch and learning rate are computed from the traced step counter: one compilation per stage, none per epoch.

Mechanisms (`config.distill.mechanism`):
  1stage: every step uses the combined gradient (the authors' released code).
  2stage: `distill.init_epochs` epochs of the distillation loss alone (its gradient only, no CE, no weight decay),
    then the optimiser state is reset and the main task alone (CE + weight decay, no teacher) runs the full recipe
    of `train.epochs` epochs with its learning-rate schedule restarted. A 2stage run therefore lasts
    `init_epochs + epochs` epochs. (FSP's authors and KDM's `Optimizer_w_Initializer` do this; the paper's exact
    schedule was never released.)
Dropout and augmentation keys are `fold_in(key(seed), step)`, so a resumed run repeats an uninterrupted one.

For experiments/bench_step.py (public, stable):
  mesh = parallel.create_mesh()
  student, teacher = train.create_models(config, num_classes, mesh=mesh)    # teacher=None unless given
  state, tx = train.create_train_state(config, student, steps_per_epoch, mesh=mesh)
  step_fn = train.make_train_step(config, student, tx, distill_fn=distill.from_config(config.distill),
                                  steps_per_epoch=..., mesh=mesh, mean=..., std=..., teacher=teacher,
                                  stage="1stage")   # stage: "1stage" | "init" | "main"
  state, metrics = step_fn(state, teacher_vars(teacher), global_batch)   # global_batch via input_pipeline.to_global
  `train.random_teacher(config, num_classes, mesh=mesh)` gives an untrained frozen teacher (no checkpoint needed).
  With distill.method="none" and a teacher, the step still runs the teacher forward (its accuracy is a metric).
Networks (build, restore, apply) are `svdkd_jax.networks`; the workdir's config check is `svdkd_jax.workdir`.
"""

from collections.abc import Callable
import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from svdkd_jax import checkpoint
from svdkd_jax import config as config_lib
from svdkd_jax import distill
from svdkd_jax import input_pipeline
from svdkd_jax import metrics as metrics_lib
from svdkd_jax import models
from svdkd_jax import networks
from svdkd_jax import optim
from svdkd_jax import parallel
from svdkd_jax import workdir as workdir_lib

PyTree = Any
STAGES = ("1stage", "init", "main")


# ---------------------------------------------------------------------------------------------------------------
# config checks




# ---------------------------------------------------------------------------------------------------------------
# networks and state


def restore_teacher(config: ml_collections.ConfigDict, num_classes: int, *, mesh,
                    image_size: int = 32) -> networks.Network:
  """The frozen teacher of a distillation run, restored from `config.teacher.checkpoint` or `.workdir`."""
  step_dir = checkpoint.find_teacher_step_dir(config.teacher.workdir, config.teacher.checkpoint)
  try:
    return networks.restore(str(step_dir), config.teacher.name, config.teacher.width, num_classes, mesh=mesh,
                            image_size=image_size, dropout=config.teacher.dropout)
  except checkpoint.CheckpointUnreadableError:
    raise  # Damaged, not mismatched: its message names the step and what to do.
  except ValueError as e:
    raise ValueError(f"Teacher checkpoint {e} Fix config.teacher.name/width or point config.teacher.workdir at "
                     "the right run.") from None


def random_teacher(config: ml_collections.ConfigDict, num_classes: int, *, mesh,
                   image_size: int = 32) -> networks.Network:
  """An untrained teacher (for benchmarks and tests that need a teacher forward but no trained weights)."""
  return networks.build(config.teacher.name, config.teacher.width, num_classes, config.seed + 100, mesh=mesh,
                        image_size=image_size, dropout=config.teacher.dropout)


def create_models(config: ml_collections.ConfigDict, num_classes: int, *, mesh,
                  image_size: int = 32) -> tuple[networks.Network, networks.Network | None]:
  """The student (config.model, seeded by config.seed) and, for distillation runs, the restored teacher."""
  student = networks.build(config.model.name, config.model.width, num_classes, config.seed, mesh=mesh,
                           image_size=image_size, dropout=config.model.dropout)
  teacher = None
  if config.distill.method != "none" and config.teacher.weights == "random":
    teacher = random_teacher(config, num_classes, mesh=mesh, image_size=image_size)
  elif config.distill.method != "none":
    teacher = restore_teacher(config, num_classes, mesh=mesh, image_size=image_size)
  return student, teacher


def teacher_vars(teacher: networks.Network | None) -> dict | None:
  return None if teacher is None else teacher.variables


def create_train_state(config: ml_collections.ConfigDict, student: networks.Network, steps_per_epoch: int, *,
                       mesh) -> tuple[dict, optax.GradientTransformation]:
  """`({"params", "rest", "opt_state", "step"}, tx)`: the student's variables and optax state, replicated."""
  tx = optim.create_optimizer(config.optim, steps_per_epoch)
  replicated = parallel.replicated(mesh)
  # A copy: the step donates the state, `student.variables` stays usable.
  variables = jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=replicated)(student.variables)
  opt_state = jax.jit(tx.init, out_shardings=replicated)(variables["params"])
  step = parallel.replicate(jnp.zeros((), jnp.int32), mesh)
  return {"params": variables["params"], "rest": variables["rest"], "opt_state": opt_state, "step": step}, tx


def check_taps(config: ml_collections.ConfigDict, distill_fn: distill.DistillFn, student: networks.Network,
               teacher: networks.Network | None, image_shape: tuple[int, ...]) -> None:
  """Runs the distillation loss on abstract shapes so tap mismatches fail now, with distill's clear message."""
  if teacher is None:
    return
  x = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)

  def loss(s_vars, t_vars, x):
    s_logits, s_taps, _ = networks.apply(student, s_vars, x)
    t_logits, t_taps, _ = networks.apply(teacher, t_vars, x)
    if s_logits.shape != t_logits.shape and config.distill.method == "soft_target":
      raise ValueError(f"soft_target: student logits {s_logits.shape} vs teacher {t_logits.shape}.")
    return distill_fn(s_taps, t_taps, s_logits, t_logits)

  jax.eval_shape(loss, student.variables, teacher.variables, x)


# ---------------------------------------------------------------------------------------------------------------
# steps


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
  """The student's train-mode losses `loss_fn(params, rest, dropout_key, images, labels, t_logits, t_taps)`.

  Returns `((main, dist), aux)`: main = cross-entropy (+ coupled L2), dist = `distill_fn` of the student's and the
  teacher's taps and logits (0 when `t_logits` is None); aux holds the logits, the updated `rest` and the parts.
  """
  wd = 0.0 if config.optim.decoupled_weight_decay else config.optim.weight_decay

  def loss_fn(params, rest, dropout_key, images, labels, t_logits, t_taps):
    # Dropout call i draws its mask from fold_in(fold_in(dropout_key, 0), i): the masks that the former
    # nnx.reseed(model, dropout=dropout_key) gave, so runs resumed across that change stay bit-identical.
    rngs = nnx.Rngs(dropout=jax.random.fold_in(dropout_key, 0))
    variables = {"params": params, "rest": rest}
    logits, taps, new_rest = networks.apply(student, variables, images, train=True, rngs=rngs)
    ce = cross_entropy(logits, labels, config.train.ce_reduction)
    main = ce + (optim.l2_penalty(params, wd) if wd else 0.0)
    if t_logits is None:
      dist, dist_aux = jnp.zeros((), jnp.float32), {}
    else:
      dist, dist_aux = distill_fn(taps, t_taps, logits, t_logits)
    return (main, dist), {"logits": logits, "rest": new_rest, "ce": ce, "dist_aux": dist_aux}

  return loss_fn


def make_train_step(config: ml_collections.ConfigDict, student: networks.Network, tx: optax.GradientTransformation,
                    *, distill_fn: distill.DistillFn | None, steps_per_epoch: int, mesh, mean, std,
                    teacher: networks.Network | None = None,
                    stage: str = "1stage") -> Callable[[dict, dict | None, dict], tuple[dict, dict]]:
  """The jitted train step `(state, teacher_variables, batch) -> (state, metrics)`; `state` is donated.

  Stages: "1stage" (main + distillation gradients combined; without a teacher, the main task alone), "init"
  (distillation gradient alone: 2stage's first phase), "main" (main task alone, no teacher: 2stage's second phase).
  `distill_fn` (see `distill.get`; unused without a teacher) maps the taps and logits to the distillation loss.
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
  schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch)
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
    args = (state["rest"], dropout_key, images, labels, t_logits, t_taps)
    (main, dist), aux, grads, main_grads, dist_grads = _gradients(
        loss_fn, state["params"], args, stage=stage, epoch=(step - offset) // steps_per_epoch,
        with_teacher=teacher is not None, combine=config.combine)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {"params": params, "rest": aux["rest"], "opt_state": opt_state, "step": step + 1}
    metrics.update(
        loss=(dist if stage == "init" else main + (dist if teacher is not None else 0.0)),
        main_loss=main, ce_loss=aux["ce"], dist_loss=dist, accuracy=accuracy(aux["logits"], labels),
        lr=schedule(step - offset), grad_norm_main=optax.tree.norm(main_grads),
        grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params))
    if dist_grads is not None:
      metrics["grad_norm_dist"] = optax.tree.norm(dist_grads)
    metrics.update({f"dist/{k}": v for k, v in aux["dist_aux"].items() if jnp.ndim(v) == 0})
    return new_state, metrics

  replicated, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(step_fn, in_shardings=(replicated, replicated, data), out_shardings=(replicated, replicated),
                 donate_argnums=0)


def make_eval_step(student: networks.Network, *, mesh, mean, std) -> Callable[[dict, dict, dict], dict]:
  """Jitted `(params, rest, batch) -> {"correct", "loss", "count"}` sums over the real (mask = 1) examples."""
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


def evaluate(eval_step, state: dict, ds, mesh) -> dict:
  """Accuracy and mean cross-entropy over the whole eval split (padding masked out)."""
  sharding = parallel.data_sharding(mesh)
  totals = None
  for batch in ds.eval_batches():
    out = eval_step(state["params"], state["rest"], input_pipeline.to_global(batch, sharding))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.0)
  return {"eval_accuracy": float(totals["correct"]) / count, "eval_loss": float(totals["loss"]) / count}


# ---------------------------------------------------------------------------------------------------------------
# the run


class _StopRequest:
  """Turns SIGINT/SIGTERM into a flag checked between steps, so the run saves a consistent checkpoint and exits."""

  def __init__(self):
    self.signum = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:  # Second Ctrl-C: give up at once.
      raise KeyboardInterrupt
    self.signum = signum
    logging.warning("Received signal %d: saving a checkpoint after this step, then stopping.", signum)

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def _versions() -> dict:
  import flax
  import orbax.checkpoint
  return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
          "orbax": orbax.checkpoint.__version__, "python": os.sys.version.split()[0]}


@dataclasses.dataclass(frozen=True)
class _Plan:
  """A run's length in steps. 2stage (with a teacher) runs `init_epochs` of distillation alone, then the recipe."""
  steps_per_epoch: int
  two_stage: bool
  init_epochs: int
  total_epochs: int
  total_steps: int
  last_step: int  # where this invocation stops: train.max_steps may stop it before total_steps

  @classmethod
  def of(cls, config: ml_collections.ConfigDict, steps_per_epoch: int, *, has_teacher: bool) -> "_Plan":
    two_stage = config.distill.mechanism == "2stage" and has_teacher
    init_epochs = config.distill.init_epochs if two_stage else 0
    total_epochs = init_epochs + config.train.epochs
    total = total_epochs * steps_per_epoch
    last = min(total, config.train.max_steps) if config.train.max_steps > 0 else total
    return cls(steps_per_epoch, two_stage, init_epochs, total_epochs, total, last)

  def stage_at(self, step: int) -> str:
    """The stage of the step that starts at `step` steps done."""
    if not self.two_stage:
      return "1stage"
    return "init" if step < self.init_epochs * self.steps_per_epoch else "main"

  def epoch_of(self, step: int) -> int:
    """The epoch of the `step`-th step (steps count from 1)."""
    return (step - 1) // self.steps_per_epoch


class _RunCheckpoints:
  """The run's checkpoints; each holds the run's record (best and last eval accuracy, train time) for a resume."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, num_classes: int, steps_per_epoch: int,
               data_iterator, t_start: float):
    self.manager = checkpoint.create_manager(os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints)
    self.record = {"best_eval_accuracy": None, "best_epoch": None, "last_eval_accuracy": None, "last_epoch": None,
                   "train_time": 0.0}
    self._meta = {"num_classes": num_classes, "config": json.loads(config.to_json_best_effort())}
    self._steps_per_epoch, self._data_iterator, self._t_start = steps_per_epoch, data_iterator, t_start

  def restore_latest(self, state: dict, mesh) -> tuple[dict, int | None]:
    """`(state, step)` of the newest readable checkpoint, setting the data iterator and the record; `(state, None)`
    if none. A damaged newer one is set aside with a warning (`checkpoint.restore_latest`); if the restore fails,
    the manager is closed before the error goes up (no background saver left to trip over at exit)."""
    try:
      found = checkpoint.restore_latest(
          self.manager, model=parallel.abstract({"params": state["params"], "rest": state["rest"]}, mesh),
          opt=parallel.abstract({"opt_state": state["opt_state"], "step": state["step"]}, mesh),
          data_iterator=self._data_iterator)
    except BaseException:
      self.manager.close()
      raise
    if found is None:
      return state, None
    step, model, opt, meta = found
    self.record.update({k: meta[k] for k in self.record if k in meta})
    logging.info("Resumed from %s at step %d.", self.manager.directory, step)
    return {**model, **opt}, int(step)

  def train_time(self) -> float:
    """Seconds of this run so far, over every resume."""
    return self.record["train_time"] + time.time() - self._t_start

  def add_eval(self, epoch: int, accuracy: float) -> None:
    self.record["last_eval_accuracy"], self.record["last_epoch"] = accuracy, epoch
    if self.record["best_eval_accuracy"] is None or accuracy > self.record["best_eval_accuracy"]:
      self.record["best_eval_accuracy"], self.record["best_epoch"] = accuracy, epoch

  def save(self, step: int, state: dict, eval_metrics: dict | None = None) -> None:
    """Saves asynchronously; `eval_metrics` only at epoch ends (the best checkpoint is chosen among those)."""
    meta = {**self.record, "train_time": self.train_time(), "step": step, "epoch": step / self._steps_per_epoch,
            **self._meta}
    checkpoint.save(self.manager, step, model={"params": state["params"], "rest": state["rest"]},
                    opt={"opt_state": state["opt_state"], "step": state["step"]}, meta=meta,
                    data_iterator=self._data_iterator, metrics=eval_metrics)

  def check_finite(self, step_metrics: dict, step: int) -> None:
    """Stops the run (FloatingPointError naming the last good checkpoint) on a non-finite loss or parameters."""
    loss, norm = step_metrics["loss"], step_metrics["param_norm"]
    if not (np.isfinite(loss) and np.isfinite(norm)):
      self.manager.wait_until_finished()
      last = self.manager.latest_step()
      saved = (f"The last good checkpoint is step {last} in {self.manager.directory}." if last is not None else
               "There is no checkpoint yet, so a rerun starts from scratch.")
      raise FloatingPointError(
          f"Non-finite loss ({loss}) or parameters (norm {norm}) at step {step} (epoch "
          f"{(step - 1) // self._steps_per_epoch}); stopped. {saved} Lower optim.learning_rate or check the data.")


def _evaluate_and_save(step: int, state: dict, *, evaluate_fn: Callable[[dict], dict], plan: _Plan,
                       ckpts: _RunCheckpoints, writer: metrics_lib.MetricWriter) -> None:
  """Evaluates, records best/last accuracy, logs, and checkpoints (with the eval metrics at an epoch end)."""
  eval_metrics = evaluate_fn(state)
  epoch = plan.epoch_of(step)
  ckpts.add_eval(epoch, eval_metrics["eval_accuracy"])
  writer.write(step, {"epoch": epoch, **eval_metrics})
  logging.info("step %d epoch %d: eval accuracy %.4f, loss %.4f", step, epoch, eval_metrics["eval_accuracy"],
               eval_metrics["eval_loss"])
  ckpts.save(step, state, eval_metrics if step % plan.steps_per_epoch == 0 else None)


def _train_loop(config: ml_collections.ConfigDict, plan: _Plan, state: dict, start: int, *,
                make_step: Callable[[str], Callable], t_vars: dict | None, tx: optax.GradientTransformation,
                train_iter, mesh, ckpts: _RunCheckpoints, writer: metrics_lib.MetricWriter,
                evaluate_fn: Callable[[dict], dict], stop: _StopRequest) -> int:
  """Runs the steps after `start` up to `plan.last_step` or a stop request; returns the number of steps done."""
  steps = {}  # One jitted step per stage, compiled on first use.
  sharding = parallel.data_sharding(mesh)
  lag = metrics_lib.LaggedMeans(config.train.batch_size, check=ckpts.check_finite)
  log_every, spe = config.train.log_every_steps, plan.steps_per_epoch
  progress = metrics_lib.Progress(plan.last_step, start, config.train.batch_size, log_every=log_every)
  step = start
  try:
    while step < plan.last_step:
      stage = plan.stage_at(step)
      if stage not in steps:
        steps[stage] = make_step(stage)
      if stage == "main" and step == plan.init_epochs * spe:
        logging.info("2stage: initialisation done at step %d; main task from here, optimiser state reset.", step)
        state["opt_state"] = jax.jit(tx.init, out_shardings=parallel.replicated(mesh))(state["params"])
      state, step_metrics = steps[stage](state, t_vars, input_pipeline.to_global(next(train_iter), sharding))
      step += 1
      lag.add(step_metrics, step)
      if step == start + 1:  # images/s leaves out the compilation of the first step.
        jax.block_until_ready(state["step"])
        lag.restart_clock()
      row_due = step % log_every == 0 or step % spe == 0 or step == plan.last_step
      if row_due or stop.signum:
        row = {**lag.row(), "epoch": plan.epoch_of(step), "stage": stage}
        if row_due:
          writer.write(step, row)
        progress.update(step, {"loss": row["loss"], "acc": row["accuracy"]})
      if step % spe == 0 or step == plan.last_step:
        _evaluate_and_save(step, state, evaluate_fn=evaluate_fn, plan=plan, ckpts=ckpts, writer=writer)
        lag.restart_clock()  # images/s measures training only.
      elif step % config.train.checkpoint_every_steps == 0 or stop.signum:
        ckpts.save(step, state)
      if stop.signum:
        break
  finally:
    progress.close()
  return step


def _summary(config: ml_collections.ConfigDict, plan: _Plan, step: int, ckpts: _RunCheckpoints, mesh,
             stop: _StopRequest) -> dict:
  record = ckpts.record
  summary = {
      "complete": step >= plan.total_steps,
      "step": step, "total_steps": plan.total_steps, "epochs": plan.total_epochs,
      "best_eval_accuracy": record["best_eval_accuracy"], "best_epoch": record["best_epoch"],
      "last_eval_accuracy": record["last_eval_accuracy"], "last_epoch": record["last_epoch"],
      "wall_time_sec": ckpts.train_time(), "devices": mesh.size, "processes": jax.process_count(),
      "model": config.model.name, "distill": config.distill.method, "mechanism": config.distill.mechanism,
      "versions": _versions(), "config": json.loads(config.to_json_best_effort()),
  }
  if stop.signum:
    summary["interrupted"] = int(stop.signum)
  return summary


def _finished(summary: dict | None, config: ml_collections.ConfigDict) -> bool:
  """Whether `summary` (summary.json) is of a complete run as long as `config` asks: a run extended by a larger
  train.epochs keeps its shorter run's complete summary until it finishes, even if it is killed on the way."""
  if not summary or not summary.get("complete"):
    return False
  epochs = summary.get("config", {}).get("train", {}).get("epochs", config.train.epochs)
  return epochs == config.train.epochs


def _create_datasets(config: ml_collections.ConfigDict, mesh) -> input_pipeline.Datasets:
  parallel.check_batch_size(config.train.batch_size, mesh)
  parallel.check_batch_size(config.train.eval_batch_size, mesh, "train.eval_batch_size")
  return input_pipeline.create_datasets(config.data, global_batch_size=config.train.batch_size,
                                        eval_batch_size=config.train.eval_batch_size, seed=config.seed)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False) -> dict:
  """Trains `config.model` (distilled from `config.teacher` unless distill.method == "none"); returns the summary.

  Restarting the same command resumes from the latest checkpoint; restarting it with a larger `train.epochs` (and
  nothing else changed) extends the run from there (`workdir.prepare`). See the module docstring for the step.
  """
  t_start = time.time()
  distill_fn = config_lib.validate(config)  # The run's distillation loss, built once here.
  workdir_lib.prepare(config, workdir, schema=config_lib.default(), overwrite=overwrite)
  done = metrics_lib.read_summary(workdir)
  if _finished(done, config):
    logging.info("%s is complete (summary.json); nothing to do.", workdir)
    return done

  mesh = parallel.create_mesh()
  ds = _create_datasets(config, mesh)
  student, teacher = create_models(config, ds.num_classes, mesh=mesh, image_size=ds.image_shape[0])
  check_taps(config, distill_fn, student, teacher, ds.image_shape)
  state, tx = create_train_state(config, student, ds.steps_per_epoch, mesh=mesh)
  plan = _Plan.of(config, ds.steps_per_epoch, has_teacher=teacher is not None)
  train_iter = ds.train_iterator()
  ckpts = _RunCheckpoints(config, workdir, num_classes=ds.num_classes, steps_per_epoch=ds.steps_per_epoch,
                          data_iterator=train_iter, t_start=t_start)
  writer = metrics_lib.MetricWriter(workdir)
  state, start = ckpts.restore_latest(state, mesh)
  if start is not None:
    writer.truncate_after(start)
  logging.info("Training %s for %d steps (%d per epoch, %d epochs%s) on %d devices.", config.model.name,
               plan.total_steps, plan.steps_per_epoch, plan.total_epochs,
               f", {plan.init_epochs} of them distillation alone" if plan.init_epochs else "", mesh.size)

  def make_step(stage: str) -> Callable:
    return make_train_step(config, student, tx, distill_fn=distill_fn, steps_per_epoch=ds.steps_per_epoch,
                           mesh=mesh, mean=ds.mean, std=ds.std, teacher=teacher, stage=stage)

  eval_step = make_eval_step(student, mesh=mesh, mean=ds.mean, std=ds.std)
  stop, step = _StopRequest(), start or 0
  try:
    with stop:
      step = _train_loop(config, plan, state, step, make_step=make_step, t_vars=teacher_vars(teacher), tx=tx,
                         train_iter=train_iter, mesh=mesh, ckpts=ckpts, writer=writer, stop=stop,
                         evaluate_fn=lambda s: evaluate(eval_step, s, ds, mesh))
  finally:
    ckpts.manager.wait_until_finished()
    writer.close()
  summary = _summary(config, plan, step, ckpts, mesh, stop)
  metrics_lib.write_summary(workdir, summary)
  ckpts.manager.close()
  if stop.signum:
    logging.warning("Interrupted at step %d; checkpoint saved in %s. Rerun the same command to resume.", step,
                    workdir)
  return summary
