"""Training: `train_and_evaluate(config, workdir)` trains one network (teacher, student alone, or distilled student).

A run, in order: check the config (`run_config.validate_run`), its batch sizes against the mesh and its taps
(`check_taps`: the networks and the loss traced on abstract shapes), so that nothing is touched before they pass; lock the workdir (`workdir_lock`: one run per workdir, for every caller); check that
the workdir holds no other run; build the data, the student and the frozen teacher of a distillation run; write
`config.json`; resume from the newest readable checkpoint if any (a damaged newer one is set aside as
`<step>.unreadable`, with a warning); then loop over steps with one jitted train step (`svdkd_jax.steps`),
evaluating on the full eval split at each epoch end and checkpointing every `train.checkpoint_every_steps` and at
each epoch end. Metrics go to `WORKDIR/metrics.jsonl` and TensorBoard, the final summary to `WORKDIR/summary.json`
(`"complete": true` once every step ran).

SIGINT/SIGTERM stop the run after a step with a checkpoint of it, on every process of a multi-process run after the
same step (`_StopRequest`); a multi-process run that loses a process stops the others with one line naming it and the
last checkpoint (`user_errors.ProcessLostError`); a full disk during a save is one line (`checkpoint.DiskFullError`).

Mechanisms (`config.distill.mechanism`):
  1stage: every step uses the combined gradient (the authors' released code).
  2stage: `distill.init_epochs` epochs of the distillation loss alone (its gradient only, no CE, no weight decay),
    then the optimiser state is reset and the main task alone (CE + weight decay, no teacher) runs the full recipe
    of `train.epochs` epochs with its learning-rate schedule restarted. A 2stage run therefore lasts
    `init_epochs + epochs` epochs. (FSP's authors and KDM's `Optimizer_w_Initializer` do this; the paper's exact
    schedule was never released.)
Networks (build, restore, apply) are `svdkd_jax.networks`; the workdir's config check is `svdkd_jax.workdir`.
"""

from collections.abc import Callable, Iterator
import contextlib
import dataclasses
import json
import logging
import os
import signal
import time

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from svdkd_jax import checkpoint
from svdkd_jax import config as config_lib
from svdkd_jax import distill
from svdkd_jax import input_pipeline
from svdkd_jax import metrics as metrics_lib
from svdkd_jax import networks
from svdkd_jax import optim
from svdkd_jax import parallel
from svdkd_jax import run_config
from svdkd_jax import steps as steps_lib
from svdkd_jax import user_errors
from svdkd_jax import workdir as workdir_lib
from svdkd_jax import workdir_lock


# ---------------------------------------------------------------------------------------------------------------
# networks and state


def restore_teacher(config: ml_collections.ConfigDict, num_classes: int, *, mesh: jax.sharding.Mesh,
                    image_size: int = 32) -> networks.Network:
  """The frozen teacher of a distillation run, restored from `config.teacher.checkpoint` or `.workdir`."""
  step_dir = checkpoint.find_teacher_step_dir(config.teacher.workdir, config.teacher.checkpoint)
  try:
    return networks.restore(str(step_dir), config.teacher.name, config.teacher.width, num_classes, mesh=mesh,
                            image_size=image_size, dropout=config.teacher.dropout, taps=config.teacher.taps,
                            compute_dtype=config.train.compute_dtype)
  except checkpoint.CheckpointUnreadableError:
    raise  # Damaged, not mismatched: its message names the step and what to do.
  except ValueError as e:
    raise ValueError(f"Teacher checkpoint {e} Fix config.teacher.name/width or point config.teacher.workdir at "
                     "the right run.") from None


def random_teacher(config: ml_collections.ConfigDict, num_classes: int, *, mesh: jax.sharding.Mesh,
                   image_size: int = 32) -> networks.Network:
  """An untrained frozen teacher (`teacher.weights = "random"`; also for benchmarks and tests that need a teacher
  forward but no trained weights)."""
  return networks.build(config.teacher.name, config.teacher.width, num_classes, config.seed + 100, mesh=mesh,
                        image_size=image_size, dropout=config.teacher.dropout, taps=config.teacher.taps,
                        compute_dtype=config.train.compute_dtype)


def create_models(config: ml_collections.ConfigDict, num_classes: int, *, mesh: jax.sharding.Mesh,
                  image_size: int = 32) -> tuple[networks.Network, networks.Network | None]:
  """The student (config.model, seeded by config.seed) and, for distillation runs, the frozen teacher."""
  student = networks.build(config.model.name, config.model.width, num_classes, config.seed, mesh=mesh,
                           image_size=image_size, dropout=config.model.dropout, taps=config.model.taps,
                           compute_dtype=config.train.compute_dtype)
  teacher = None
  if config.distill.method != "none" and config.teacher.weights == "random":
    teacher = random_teacher(config, num_classes, mesh=mesh, image_size=image_size)
  elif config.distill.method != "none":
    teacher = restore_teacher(config, num_classes, mesh=mesh, image_size=image_size)
  return student, teacher


def teacher_vars(teacher: networks.Network | None) -> dict | None:
  """The teacher's variables `{"params", "rest"}` for the train step, None without a teacher."""
  return None if teacher is None else teacher.variables


def create_train_state(config: ml_collections.ConfigDict, student: networks.Network, steps_per_epoch: int, *,
                       mesh: jax.sharding.Mesh) -> tuple[dict, optim.Optimizer]:
  """`({"params", "rest", "opt_state", "step"}, optimizer)`: the student's variables and optax state, replicated,
  and the optimiser of `config.optim` (`optim.create_optimizer`)."""
  optimizer = optim.create_optimizer(config.optim, steps_per_epoch)
  replicated = parallel.replicated(mesh)
  # A copy: the step donates the state, `student.variables` stays usable.
  variables = jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=replicated)(student.variables)
  opt_state = jax.jit(optimizer.init, out_shardings=replicated)(variables["params"])
  step = parallel.replicate(jnp.zeros((), jnp.int32), mesh)
  return {"params": variables["params"], "rest": variables["rest"], "opt_state": opt_state, "step": step}, optimizer


def check_taps(config: ml_collections.ConfigDict, num_classes: int, image_size: int) -> None:
  """The student's forward (and, for a distillation run, the teacher's and the loss) on abstract networks and
  images, nothing initialised: a tap path that names no submodule or whose submodule does not run exactly once,
  and taps that do not pair (shapes), fail now with the taps' or the method's one-line message."""
  def abstract(net: ml_collections.ConfigDict) -> networks.Network:
    return networks.abstract(net.name, net.width, num_classes, image_size=image_size, dropout=net.dropout,
                             taps=net.taps, compute_dtype=config.train.compute_dtype)

  student = abstract(config.model)
  teacher = abstract(config.teacher) if config.distill.method != "none" else None
  distill_fn = distill.from_config(config.distill)
  x = jax.ShapeDtypeStruct((2, image_size, image_size, 3), jnp.float32)
  labels = jax.ShapeDtypeStruct((2,), jnp.int32)

  def loss(s_vars, t_vars, x, labels):
    s_logits, s_taps, _ = networks.apply(student, s_vars, x, train=True)
    if teacher is None:
      return None
    t_logits, t_taps, _ = networks.apply(teacher, t_vars, x)
    return distill_fn(s_taps, t_taps, s_logits, t_logits, labels=labels, epoch=0)

  jax.eval_shape(loss, student.variables, None if teacher is None else teacher.variables, x, labels)


# ---------------------------------------------------------------------------------------------------------------
# the run


class _StopRequest:
  """SIGINT/SIGTERM as a request to stop after a step: the run checkpoints that step and exits with 128 + signal.

  One process: a handler sets a flag, read after each step. Several processes must all stop after the same step
  (every step is a collective), yet a signal reaches them at different steps, or only some of them. There JAX's
  preemption sync manager decides: its notifier (started by `jax.distributed.initialize`) catches SIGTERM on any
  process, the coordination service tells every process, and `reached_preemption_sync_point(step)` becomes true after
  the same step on all of them. A SIGINT is handed to that notifier as a SIGTERM.
  """

  def __init__(self):
    self.signum = None  # the signal this process received
    self.stopped = False
    self._shared = jax.process_count() > 1
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGINT,) if self._shared else (signal.SIGINT, signal.SIGTERM):
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
    if self._shared:
      signal.raise_signal(signal.SIGTERM)  # To JAX's notifier, which handles SIGTERM.
    logging.warning("Received signal %d: saving a checkpoint after this step, then stopping.", signum)

  def due(self, step: int) -> bool:
    """Whether to stop after `step` (on every process alike). Call it on every process once before the first step
    and after every step: JAX's protocol stops them after the step that follows the furthest one's last call. (A
    SIGTERM before that first call of a resumed run is therefore missed: the processes have reported no step yet.)"""
    if self._shared:
      self.stopped = multihost_utils.reached_preemption_sync_point(step)
    else:
      self.stopped = self.signum is not None
    return self.stopped

  @property
  def exit_signal(self) -> int:
    """The signal the run stops for: this process's, else the SIGTERM that reached another process."""
    return self.signum or signal.SIGTERM

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
    self.directory = os.path.join(workdir, "checkpoints")
    self.manager = checkpoint.create_manager(self.directory, keep=config.train.keep_checkpoints)
    self._nbytes = 0  # of a checkpoint's arrays
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
    """Saves asynchronously; `eval_metrics` only at epoch ends (the best checkpoint is chosen among those).

    Waits for the step's arrays first, so that a step that failed across processes (a lost process) raises here
    rather than in orbax's barrier, which would wait for the lost process."""
    jax.block_until_ready(state)
    self._nbytes = sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state))
    meta = {**self.record, "train_time": self.train_time(), "step": step, "epoch": step / self._steps_per_epoch,
            **self._meta}
    with self._writing():
      checkpoint.save(self.manager, step, model={"params": state["params"], "rest": state["rest"]},
                      opt={"opt_state": state["opt_state"], "step": state["step"]}, meta=meta,
                      data_iterator=self._data_iterator, metrics=eval_metrics)

  def wait(self) -> None:
    """Waits for the save in progress."""
    with self._writing():
      self.manager.wait_until_finished()

  @contextlib.contextmanager
  def _writing(self) -> Iterator[None]:
    """A save's full disk (raised by the save, or by the next save or wait: orbax writes in the background) as one
    DiskFullError."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except  (orbax raises its writers' errors as they were)
      full = checkpoint.disk_full_error(e, self.directory, self._nbytes)
      if full is None:
        raise
      raise full from None

  def lost_process(self, error: BaseException) -> user_errors.ProcessLostError | None:
    """The error to stop with if `error` is the failure of a step across processes whose peer is gone, else None."""
    lost = parallel.lost_peer(error)
    if lost is None:
      return None
    steps = checkpoint.finished_steps(self.directory)
    saved = f"The last checkpoint is step {steps[-1]} in {self.directory}" if steps else "There is no checkpoint yet"
    return user_errors.ProcessLostError(f"{lost} was lost ({str(error).splitlines()[0][:300]}). {saved}: rerun the "
                                        "same command on every host to resume.")

  def check_finite(self, step_metrics: dict, step: int) -> None:
    """Stops the run (FloatingPointError naming the last good checkpoint) on a non-finite loss or parameters."""
    loss, norm = step_metrics["loss"], step_metrics["param_norm"]
    if not (np.isfinite(loss) and np.isfinite(norm)):
      self.wait()
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
                make_step: Callable[[str], Callable], t_vars: dict | None, optimizer: optim.Optimizer,
                train_iter, mesh, ckpts: _RunCheckpoints, writer: metrics_lib.MetricWriter,
                evaluate_fn: Callable[[dict], dict], stop: _StopRequest) -> int:
  """Runs the steps after `start` up to `plan.last_step` or a stop request; returns the number of steps done."""
  steps = {}  # One jitted step per stage, compiled on first use.
  sharding = parallel.data_sharding(mesh)
  lag = metrics_lib.LaggedMeans(config.train.batch_size, check=ckpts.check_finite)
  log_every, spe = config.train.log_every_steps, plan.steps_per_epoch
  progress = metrics_lib.Progress(plan.last_step, start, config.train.batch_size, log_every=log_every)
  step = start
  stopping = stop.due(step)
  try:
    while step < plan.last_step and not stopping:
      stage = plan.stage_at(step)
      if stage not in steps:
        steps[stage] = make_step(stage)
      if stage == "main" and step == plan.init_epochs * spe:
        logging.info("2stage: initialisation done at step %d; main task from here, optimiser state reset.", step)
        state["opt_state"] = jax.jit(optimizer.init, out_shardings=parallel.replicated(mesh))(state["params"])
      state, step_metrics = steps[stage](state, t_vars, input_pipeline.to_global(next(train_iter), sharding))
      step += 1
      stopping = stop.due(step)
      lag.add(step_metrics, step)
      if step == start + 1:  # images/s leaves out the compilation of the first step.
        jax.block_until_ready(state["step"])
        lag.restart_clock()
      row_due = step % log_every == 0 or step % spe == 0 or step == plan.last_step
      if row_due or stopping:
        row = {**lag.row(), "epoch": plan.epoch_of(step), "stage": stage}
        if row_due:
          writer.write(step, row)
        progress.update(step, {"loss": row["loss"], "acc": row["accuracy"]})
      if step % spe == 0 or step == plan.last_step:
        _evaluate_and_save(step, state, evaluate_fn=evaluate_fn, plan=plan, ckpts=ckpts, writer=writer)
        lag.restart_clock()  # images/s measures training only.
      elif step % config.train.checkpoint_every_steps == 0 or stopping:
        ckpts.save(step, state)
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
  if stop.stopped:
    summary["interrupted"] = int(stop.exit_signal)
  return summary


def _finished(summary: dict | None, config: ml_collections.ConfigDict) -> bool:
  """Whether `summary` (summary.json) is of a complete run as long as `config` asks: a run extended by a larger
  train.epochs keeps its shorter run's complete summary until it finishes, even if it is killed on the way."""
  if not summary or not summary.get("complete"):
    return False
  epochs = summary.get("config", {}).get("train", {}).get("epochs", config.train.epochs)
  return epochs == config.train.epochs


def _train(config: ml_collections.ConfigDict, workdir: str, prepared: workdir_lib.Prepared, *, mesh,
           t_start: float) -> dict:
  """Builds the run (data, networks, state), writes its config.json, resumes and trains; returns the summary."""
  ds = input_pipeline.create_datasets(config.data, global_batch_size=config.train.batch_size,
                                      eval_batch_size=config.train.eval_batch_size, seed=config.seed)
  if ds.image_shape[0] != _checked_image_size(config):  # the data's own size (data.image_size = 0)
    check_taps(config, ds.num_classes, ds.image_shape[0])
  student, teacher = create_models(config, ds.num_classes, mesh=mesh, image_size=ds.image_shape[0])
  distill_fn = distill.from_config(config.distill)
  workdir_lib.write(prepared)  # Only now: a run that cannot start leaves no config.json to refuse its fix.
  state, optimizer = create_train_state(config, student, ds.steps_per_epoch, mesh=mesh)
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
    return steps_lib.make_train_step(config, student, optimizer, distill_fn=distill_fn, mesh=mesh, mean=ds.mean,
                                     std=ds.std, steps_per_epoch=ds.steps_per_epoch, teacher=teacher, stage=stage)

  eval_step = steps_lib.make_eval_step(student, mesh=mesh, mean=ds.mean, std=ds.std)
  stop, step = _StopRequest(), start or 0
  lost = None
  try:
    with stop:
      step = _train_loop(config, plan, state, step, make_step=make_step, t_vars=teacher_vars(teacher),
                         optimizer=optimizer, train_iter=train_iter, mesh=mesh, ckpts=ckpts, writer=writer,
                         stop=stop, evaluate_fn=lambda s: steps_lib.evaluate(eval_step, s, ds, mesh))
  except Exception as e:
    lost = ckpts.lost_process(e)
    if lost is None:
      raise
    raise lost from e
  finally:
    if lost is None:  # (A save in progress would wait for the lost process.)
      ckpts.wait()
    writer.close()
  summary = _summary(config, plan, step, ckpts, mesh, stop)
  metrics_lib.write_summary(workdir, summary)
  ckpts.manager.close()
  if stop.stopped:
    logging.warning("Interrupted at step %d; checkpoint saved in %s. Rerun the same command%s to resume.", step,
                    workdir, " on every host" if jax.process_count() > 1 else "")
  return summary


def _checked_image_size(config: ml_collections.ConfigDict) -> int:
  """The image size `check_taps` runs at before the data is read: the configured one, else the usual 32."""
  return config.data.image_size or 32


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False) -> dict:
  """Trains `config.model` (distilled from `config.teacher` unless distill.method == "none"); returns the summary.

  A bad config is refused (one-line ValueError) before the workdir is touched. The run holds the workdir's lock
  (`workdir_lock.hold`) while it checks and trains, so a second run on it is refused (WorkdirLockedError).
  Restarting the same command resumes from the latest checkpoint; restarting it with a larger `train.epochs` (and
  nothing else changed) extends the run from there (`svdkd_jax.workdir`). With `overwrite`, a previous run with
  another config is deleted and started again.
  """
  t_start = time.time()
  config = config_lib.canonical(config)  # Earlier value names read as today's (config.ALIASES).
  run_config.validate_run(config)
  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.train.batch_size, mesh)
  parallel.check_batch_size(config.train.eval_batch_size, mesh, "train.eval_batch_size")
  check_taps(config, config.data.num_classes or 2, _checked_image_size(config))
  with workdir_lock.hold(workdir):
    prepared = workdir_lib.check(config, workdir, overwrite=overwrite, unread=run_config.unread_keys)
    done = None if prepared.starts_again else metrics_lib.read_summary(workdir)
    if _finished(done, config):
      logging.info("%s is complete (summary.json); nothing to do.", workdir)
      return done
    return _train(config, workdir, prepared, mesh=mesh, t_start=t_start)
