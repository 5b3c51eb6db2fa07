"""Training: `train_and_evaluate(config, workdir)` trains one network (teacher, student alone, or distilled student).

A run, in order: check the config and the workdir, build the mesh and the data, create the student (and restore
the frozen teacher for a distillation run), resume from the latest checkpoint if any, then loop over steps with one
jitted train step, evaluating on the full eval split at each epoch end and checkpointing every
`train.checkpoint_every_steps` and at each epoch end. Metrics go to `WORKDIR/metrics.jsonl` and TensorBoard, the
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
  step_fn = train.make_train_step(config, student, tx, steps_per_epoch=..., mesh=mesh, mean=..., std=...,
                                  teacher=teacher, stage="1stage")   # stage: "1stage" | "init" | "main"
  state, metrics = step_fn(state, teacher_vars(teacher), global_batch)   # global_batch via input_pipeline.to_global
  `train.random_teacher(config, num_classes, mesh=mesh)` gives an untrained frozen teacher (no checkpoint needed).
  With distill.method="none" and a teacher, the step still runs the teacher forward (its accuracy is a metric):
  that is the "student + teacher forward" baseline.
"""

from collections.abc import Callable
import dataclasses
import json
import logging
import os
import shutil
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
from svdkd_jax import optim
from svdkd_jax import parallel

PyTree = Any
STAGES = ("1stage", "init", "main")
# Keys that steer a run without changing its result: they may differ when a run is resumed.
RUN_CONTROL_KEYS = ("train.max_steps", "train.log_every_steps", "train.checkpoint_every_steps",
                    "train.keep_checkpoints", "data.num_workers", "data.data_dir", "data.cache_dir", "data.path",
                    "teacher.workdir", "teacher.checkpoint")
CONFIG_FILE = "config.json"


# ---------------------------------------------------------------------------------------------------------------
# config and workdir checks


def _comparable(config_dict: dict) -> dict:
  flat = {}

  def walk(d, prefix):
    for k, v in d.items():
      if isinstance(v, dict):
        walk(v, f"{prefix}{k}.")
      elif f"{prefix}{k}" not in RUN_CONTROL_KEYS:
        flat[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v

  walk(config_dict, "")
  return flat


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False) -> None:
  """Creates `workdir` and writes its config; refuses a workdir holding a different run unless `overwrite`.

  With `overwrite`, the previous run's checkpoints, metrics and summary are deleted.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  new = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    a, b = _comparable(old), _comparable(new)
    # A key added to the schema after the old run was written counts as its default there.
    defaults = _comparable(json.loads(config_lib.default().to_json_best_effort()))
    a = {**{k: v for k, v in defaults.items() if k in b and k not in a}, **a}
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff and not overwrite:
      shown = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:8])
      raise ValueError(f"{workdir} holds a run with a different config ({shown}). Use another --workdir, or pass "
                       "--overwrite to delete that run and start again.")
    if diff and overwrite and jax.process_index() == 0:
      logging.warning("--overwrite: deleting the previous run in %s", workdir)
      for name in ("checkpoints", "tensorboard", metrics_lib.METRICS_FILE, metrics_lib.SUMMARY_FILE, CONFIG_FILE):
        target = os.path.join(workdir, name)
        if os.path.isdir(target):
          shutil.rmtree(target)
        elif os.path.exists(target):
          os.remove(target)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(path + ".tmp", "w") as f:  # Atomic: other processes may be reading it.
      json.dump(new, f, indent=2)
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------------------------------------------
# networks and state


@dataclasses.dataclass(frozen=True)
class Network:
  """A network split for functional use: one graphdef per mode plus its variables (replicated on the mesh)."""
  name: str
  train_def: Any  # nnx.GraphDef with train-mode BatchNorm/dropout
  eval_def: Any  # nnx.GraphDef with eval-mode BatchNorm/dropout
  variables: dict  # {"params": nnx.State, "rest": nnx.State}


def _split(module: nnx.Module) -> tuple[Any, Any, dict]:
  module.train()
  train_def, _, _ = nnx.split(module, nnx.Param, ...)
  module.eval()
  eval_def, params, rest = nnx.split(module, nnx.Param, ...)
  return train_def, eval_def, {"params": params, "rest": rest}


def _create(name: str, num_classes: int, width: float, seed: int, image_size: int,
            dropout: float | None = None) -> nnx.Module:
  rngs = nnx.Rngs(params=seed, dropout=seed + 1)
  accepted = models.options(name)
  # The paper VGGs flatten their last map (they need the input size) and are the only networks with dropout.
  options = {"input_size": image_size or 32, "dropout": dropout}
  options = {k: v for k, v in options.items() if k in accepted and v is not None}
  return models.create(name, num_classes, rngs=rngs, width=width, **options)


def build_network(name: str, width: float, num_classes: int, seed: int, *, mesh, image_size: int = 32,
                  dropout: float | None = None) -> Network:
  """Creates `models.create(name, ...)` and places its variables, replicated, on `mesh`.

  `dropout` (paper VGGs only; None = the network's default, the paper's 0.5) is the rate on the hidden FC layers.
  """
  module = _create(name, num_classes, width, seed, image_size, dropout)
  train_def, eval_def, variables = _split(module)
  return Network(name, train_def, eval_def, parallel.replicate(variables, mesh))


def _abstract(tree: PyTree, mesh) -> PyTree:
  sharding = parallel.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def restore_teacher(config: ml_collections.ConfigDict, num_classes: int, *, mesh, image_size: int = 32) -> Network:
  """The frozen teacher of a distillation run, restored from `config.teacher.checkpoint` or `.workdir`."""
  step_dir = checkpoint.find_teacher_step_dir(config.teacher.workdir, config.teacher.checkpoint)
  meta = checkpoint.read_meta(step_dir)
  saved = meta.get("config", {}).get("model", {})
  saved_classes = meta.get("num_classes")
  want = {"name": config.teacher.name, "width": config.teacher.width}
  if saved and (saved.get("name") != want["name"] or float(saved.get("width", 1.0)) != float(want["width"])):
    raise ValueError(f"Teacher checkpoint {step_dir} holds {saved.get('name')} (width {saved.get('width')}), but "
                     f"config.teacher asks for {want['name']} (width {want['width']}): fix config.teacher.name/width "
                     "or point config.teacher.workdir at the right run.")
  if saved_classes is not None and saved_classes != num_classes:
    raise ValueError(f"Teacher checkpoint {step_dir} was trained with {saved_classes} classes, this data has "
                     f"{num_classes}.")
  abstract_module = nnx.eval_shape(lambda: _create(config.teacher.name, num_classes, config.teacher.width, 0,
                                                   image_size, config.teacher.dropout))
  train_def, eval_def, abstract_vars = _split(abstract_module)
  try:
    variables = checkpoint.restore_model(step_dir, _abstract(abstract_vars, mesh))
  except Exception as e:  # orbax raises several types on structure/shape mismatch.
    raise ValueError(f"Teacher checkpoint {step_dir} does not match the network {config.teacher.name} "
                     f"(width {config.teacher.width}, {num_classes} classes): {type(e).__name__}: "
                     f"{str(e)[:500]}") from None
  logging.info("Teacher %s restored from %s", config.teacher.name, step_dir)
  return Network(config.teacher.name, train_def, eval_def, variables)


def random_teacher(config: ml_collections.ConfigDict, num_classes: int, *, mesh, image_size: int = 32) -> Network:
  """An untrained teacher (for benchmarks and tests that need a teacher forward but no trained weights)."""
  return build_network(config.teacher.name, config.teacher.width, num_classes, config.seed + 100, mesh=mesh,
                       image_size=image_size, dropout=config.teacher.dropout)


def create_models(config: ml_collections.ConfigDict, num_classes: int, *, mesh,
                  image_size: int = 32) -> tuple[Network, Network | None]:
  """The student (config.model, seeded by config.seed) and, for distillation runs, the restored teacher."""
  student = build_network(config.model.name, config.model.width, num_classes, config.seed, mesh=mesh,
                          image_size=image_size, dropout=config.model.dropout)
  teacher = None
  if config.distill.method != "none":
    teacher = restore_teacher(config, num_classes, mesh=mesh, image_size=image_size)
  return student, teacher


def teacher_vars(teacher: Network | None) -> dict | None:
  return None if teacher is None else teacher.variables


def create_train_state(config: ml_collections.ConfigDict, student: Network, steps_per_epoch: int, *,
                       mesh) -> tuple[dict, optax.GradientTransformation]:
  """`({"params", "rest", "opt_state", "step"}, tx)`: the student's variables and optax state, replicated."""
  tx = optim.create_optimizer(config.optim, steps_per_epoch)
  replicated = parallel.replicated(mesh)
  # A copy: the step donates the state, `student.variables` stays usable.
  variables = jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=replicated)(student.variables)
  opt_state = jax.jit(tx.init, out_shardings=replicated)(variables["params"])
  step = parallel.replicate(jnp.zeros((), jnp.int32), mesh)
  return {"params": variables["params"], "rest": variables["rest"], "opt_state": opt_state, "step": step}, tx


def check_taps(config: ml_collections.ConfigDict, student: Network, teacher: Network | None,
               image_shape: tuple[int, ...]) -> None:
  """Runs the distillation loss on abstract shapes so tap mismatches fail now, with distill's clear message."""
  if teacher is None:
    return
  x = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
  fn = distill.from_config(config.distill)

  def loss(s_vars, t_vars, x):
    s_logits, s_taps = nnx.merge(student.eval_def, s_vars["params"], s_vars["rest"])(x)
    t_logits, t_taps = nnx.merge(teacher.eval_def, t_vars["params"], t_vars["rest"])(x)
    if s_logits.shape != t_logits.shape and config.distill.method == "soft_target":
      raise ValueError(f"soft_target: student logits {s_logits.shape} vs teacher {t_logits.shape}.")
    return fn(s_taps, t_taps, s_logits, t_logits)

  jax.eval_shape(loss, student.variables, teacher.variables, x)


# ---------------------------------------------------------------------------------------------------------------
# steps


def _accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
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


def make_train_step(config: ml_collections.ConfigDict, student: Network, tx: optax.GradientTransformation, *,
                    steps_per_epoch: int, mesh, mean, std, teacher: Network | None = None,
                    stage: str = "1stage") -> Callable[[dict, dict | None, dict], tuple[dict, dict]]:
  """The jitted train step `(state, teacher_variables, batch) -> (state, metrics)`; `state` is donated.

  Stages: "1stage" (main + distillation gradients combined; without a teacher, the main task alone), "init"
  (distillation gradient alone: 2stage's first phase), "main" (main task alone, no teacher: 2stage's second phase).
  `batch`: {"image": uint8 [B, H, W, 3], "label": int32 [B]}, sharded on the "data" axis.
  """
  if stage not in STAGES:
    raise ValueError(f"stage={stage!r}; valid: {', '.join(STAGES)}.")
  if stage == "main":
    teacher = None
  if stage == "init" and teacher is None:
    raise ValueError("stage 'init' (distillation alone) needs a teacher.")
  distill_fn = distill.from_config(config.distill)
  seed_key = jax.random.key(config.seed)
  wd = 0.0 if config.optim.decoupled_weight_decay else config.optim.weight_decay
  # The learning rate and the epoch follow the stage's own step count (2stage restarts the schedule).
  offset = config.distill.init_epochs * steps_per_epoch if stage == "main" else 0
  schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch)
  mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

  def loss_fn(params, rest, images, labels, t_logits, t_taps):
    # Fresh Variables at this trace level: NNX refuses to update (BatchNorm, RNG count) ones from the outer jit.
    rest = jax.tree.map(lambda x: x, rest)
    model = nnx.merge(student.train_def, params, rest)
    logits, taps = model(images)
    ce = cross_entropy(logits, labels, config.train.ce_reduction)
    main = ce + (optim.l2_penalty(params, wd) if wd else 0.0)
    if t_logits is None:
      dist, dist_aux = jnp.zeros((), jnp.float32), {}
    else:
      dist, dist_aux = distill_fn(taps, t_taps, logits, t_logits)
    _, _, new_rest = nnx.split(model, nnx.Param, ...)
    return (main, dist), {"logits": logits, "rest": new_rest, "ce": ce, "dist_aux": dist_aux}

  def step_fn(state, t_vars, batch):
    step = state["step"]
    key = jax.random.fold_in(seed_key, step)
    aug_key, dropout_key = jax.random.split(key)
    images = input_pipeline.preprocess(batch["image"], aug_key, train=True, mean=mean, std=std,
                                       augment=config.data.augment)
    labels = batch["label"]
    t_logits = t_taps = None
    metrics = {}
    if teacher is not None:
      t_model = nnx.merge(teacher.eval_def, t_vars["params"], t_vars["rest"])
      t_logits, t_taps = jax.lax.stop_gradient(t_model(images))
      metrics["teacher_accuracy"] = _accuracy(t_logits, labels)
    # Dropout keys from (seed, step), set outside the differentiated function (NNX forbids it inside).
    model = nnx.merge(student.train_def, state["params"], state["rest"])
    nnx.reseed(model, dropout=dropout_key)
    rest = nnx.split(model, nnx.Param, ...)[2]
    args = (rest, images, labels, t_logits, t_taps)
    if teacher is None:
      def main_only(p):
        losses, aux = loss_fn(p, *args)
        return losses[0], (losses, aux)
      (_, ((main, dist), aux)), main_grads = jax.value_and_grad(main_only, has_aux=True)(state["params"])
      grads, dist_grads = main_grads, None
    else:
      (main, dist), aux, main_grads, dist_grads = optim.main_and_dist_grads(loss_fn, state["params"], *args)
      if stage == "init":
        grads = dist_grads
      else:
        epoch = (step - offset) // steps_per_epoch
        grads = optim.combine_gradients(main_grads, dist_grads, epoch, rule=config.combine.rule,
                                        weight=config.combine.weight)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {"params": params, "rest": aux["rest"], "opt_state": opt_state, "step": step + 1}
    metrics.update(
        loss=(dist if stage == "init" else main + (dist if teacher is not None else 0.0)),
        main_loss=main, ce_loss=aux["ce"], dist_loss=dist, accuracy=_accuracy(aux["logits"], labels),
        lr=schedule(step - offset), grad_norm_main=optax.tree.norm(main_grads),
        grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params))
    if dist_grads is not None:
      metrics["grad_norm_dist"] = optax.tree.norm(dist_grads)
    for k, v in aux["dist_aux"].items():
      if jnp.ndim(v) == 0:
        metrics[f"dist/{k}"] = v
    return new_state, metrics

  replicated, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(step_fn, in_shardings=(replicated, replicated, data), out_shardings=(replicated, replicated),
                 donate_argnums=0)


def make_eval_step(student: Network, *, mesh, mean, std) -> Callable[[dict, dict, dict], dict]:
  """Jitted `(params, rest, batch) -> {"correct", "loss", "count"}` sums over the real (mask = 1) examples."""
  mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

  def eval_fn(params, rest, batch):
    images = input_pipeline.preprocess(batch["image"], None, train=False, mean=mean, std=std, augment="none")
    logits, _ = nnx.merge(student.eval_def, params, rest)(images)
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


def _stage_at(config, step: int, steps_per_epoch: int, has_teacher: bool) -> str:
  if config.distill.mechanism == "2stage" and has_teacher:
    return "init" if step < config.distill.init_epochs * steps_per_epoch else "main"
  return "1stage"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False) -> dict:
  """Trains `config.model` (distilled from `config.teacher` unless distill.method == "none"); returns the summary.

  Restarting the same command resumes from the latest checkpoint. See the module docstring for the step.
  """
  t_start = time.time()
  config_lib.validate(config)
  prepare_workdir(config, workdir, overwrite)
  done = metrics_lib.read_summary(workdir)
  if done and done.get("complete"):
    logging.info("%s is complete (summary.json); nothing to do.", workdir)
    return done

  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.train.batch_size, mesh)
  parallel.check_batch_size(config.train.eval_batch_size, mesh, "train.eval_batch_size")
  ds = input_pipeline.create_datasets(config.data, global_batch_size=config.train.batch_size,
                                      eval_batch_size=config.train.eval_batch_size, seed=config.seed)
  spe = ds.steps_per_epoch
  student, teacher = create_models(config, ds.num_classes, mesh=mesh, image_size=ds.image_shape[0])
  check_taps(config, student, teacher, ds.image_shape)
  state, tx = create_train_state(config, student, spe, mesh=mesh)
  has_teacher = teacher is not None
  init_epochs = config.distill.init_epochs if (config.distill.mechanism == "2stage" and has_teacher) else 0
  total_epochs = init_epochs + config.train.epochs
  total_steps = total_epochs * spe
  last_step = min(total_steps, config.train.max_steps) if config.train.max_steps > 0 else total_steps

  train_iter = ds.train_iterator()
  manager = checkpoint.create_manager(os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints)
  writer = metrics_lib.MetricWriter(workdir)
  meta = {"best_eval_accuracy": None, "best_epoch": None, "last_eval_accuracy": None, "last_epoch": None,
          "train_time": 0.0}
  start = manager.latest_step()
  if start is not None:
    model_vars, opt, saved_meta = checkpoint.restore(
        manager, start, model=_abstract({"params": state["params"], "rest": state["rest"]}, mesh),
        opt=_abstract({"opt_state": state["opt_state"], "step": state["step"]}, mesh), data_iterator=train_iter)
    state = {**model_vars, **opt}
    meta.update({k: saved_meta[k] for k in meta if k in saved_meta})
    writer.truncate_after(start)
    logging.info("Resumed from %s at step %d.", manager.directory, start)
  start = int(start or 0)

  def save(step, eval_metrics=None):
    m = {**meta, "train_time": meta["train_time"] + time.time() - t_start, "step": step, "epoch": step / spe,
         "num_classes": ds.num_classes, "config": json.loads(config.to_json_best_effort())}
    checkpoint.save(manager, step, model={"params": state["params"], "rest": state["rest"]},
                    opt={"opt_state": state["opt_state"], "step": state["step"]}, meta=m,
                    data_iterator=train_iter, metrics=eval_metrics)

  steps = {}  # One jitted step per stage, compiled on first use.
  eval_step = make_eval_step(student, mesh=mesh, mean=ds.mean, std=ds.std)
  sharding = parallel.data_sharding(mesh)
  progress = metrics_lib.Progress(last_step, start, config.train.batch_size, log_every=config.train.log_every_steps)
  logging.info("Training %s for %d steps (%d per epoch, %d epochs%s) on %d devices.", config.model.name,
               total_steps, spe, total_epochs, f", {init_epochs} of them distillation alone" if init_epochs else "",
               mesh.size)
  pending, history = None, []  # Metrics of the previous step, fetched one step late to keep dispatch async.
  t_log, n_log = time.perf_counter(), 0

  def check(step_metrics, step):
    host = jax.device_get(step_metrics)
    if not (np.isfinite(host["loss"]) and np.isfinite(host["param_norm"])):
      manager.wait_until_finished()
      good = manager.latest_step()
      raise FloatingPointError(
          f"Non-finite loss ({host['loss']}) or parameters (norm {host['param_norm']}) at step {step} (epoch {(step - 1) // spe}); stopped. The last good "
          f"checkpoint is step {good} in {manager.directory}. Lower optim.learning_rate or check the data.")
    return host

  step = start
  stop = _StopRequest()
  try:
    with stop:
      while step < last_step:
        stage = _stage_at(config, step, spe, has_teacher)
        if stage not in steps:
          steps[stage] = make_train_step(config, student, tx, steps_per_epoch=spe, mesh=mesh, mean=ds.mean,
                                         std=ds.std, teacher=teacher, stage=stage)
        if stage == "main" and step == init_epochs * spe:
          logging.info("2stage: initialisation done at step %d; main task from here, optimiser state reset.", step)
          state["opt_state"] = jax.jit(tx.init, out_shardings=parallel.replicated(mesh))(state["params"])
        batch = input_pipeline.to_global(next(train_iter), sharding)
        state, step_metrics = steps[stage](state, teacher_vars(teacher), batch)
        step += 1
        if pending is not None:
          history.append(check(*pending))
        pending = (step_metrics, step)
        n_log += 1
        if step == start + 1:  # images/s leaves out the compilation of the first step.
          jax.block_until_ready(state["step"])
          t_log, n_log = time.perf_counter(), 0
        epoch_end = step % spe == 0
        if step % config.train.log_every_steps == 0 or epoch_end or step == last_step or stop.signum:
          history.append(check(*pending))
          pending = None
          row = {k: float(np.mean([h[k] for h in history])) for k in history[-1]}
          if n_log:
            row["images_per_sec"] = n_log * config.train.batch_size / (time.perf_counter() - t_log)
          row["epoch"] = (step - 1) // spe
          row["stage"] = stage
          if step % config.train.log_every_steps == 0 or step == last_step or epoch_end:
            writer.write(step, row)
          progress.update(step, {"loss": row["loss"], "acc": row["accuracy"]})
          history, t_log, n_log = [], time.perf_counter(), 0
        if epoch_end or step == last_step:
          eval_metrics = evaluate(eval_step, state, ds, mesh)
          epoch = (step - 1) // spe
          meta["last_eval_accuracy"], meta["last_epoch"] = eval_metrics["eval_accuracy"], epoch
          if meta["best_eval_accuracy"] is None or eval_metrics["eval_accuracy"] > meta["best_eval_accuracy"]:
            meta["best_eval_accuracy"], meta["best_epoch"] = eval_metrics["eval_accuracy"], epoch
          writer.write(step, {"epoch": epoch, **eval_metrics})
          logging.info("step %d epoch %d: eval accuracy %.4f, loss %.4f", step, epoch,
                       eval_metrics["eval_accuracy"], eval_metrics["eval_loss"])
          save(step, eval_metrics if epoch_end else None)
          t_log = time.perf_counter()  # images/s measures training only.
        elif step % config.train.checkpoint_every_steps == 0 or stop.signum:
          save(step)
        if stop.signum:
          break
  finally:
    progress.close()
    manager.wait_until_finished()
    writer.close()

  meta["train_time"] = meta.get("train_time", 0.0) + time.time() - t_start
  summary = {
      "complete": step >= total_steps,
      "step": step, "total_steps": total_steps, "epochs": total_epochs,
      "best_eval_accuracy": meta["best_eval_accuracy"], "best_epoch": meta["best_epoch"],
      "last_eval_accuracy": meta["last_eval_accuracy"], "last_epoch": meta["last_epoch"],
      "wall_time_sec": meta["train_time"], "devices": mesh.size, "processes": jax.process_count(),
      "model": config.model.name, "distill": config.distill.method, "mechanism": config.distill.mechanism,
      "versions": _versions(), "config": json.loads(config.to_json_best_effort()),
  }
  if stop.signum:
    summary["interrupted"] = int(stop.signum)
  metrics_lib.write_summary(workdir, summary)
  manager.close()
  if stop.signum:
    logging.warning("Interrupted at step %d; checkpoint saved in %s. Rerun the same command to resume.", step,
                    workdir)
  return summary
