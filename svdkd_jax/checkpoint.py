"""Checkpoints with orbax: save, resume, keep the last few and the best, restore a frozen teacher.

Layout of `WORKDIR/checkpoints/<step>/` (one orbax `CheckpointManager`, one sub-directory per item):
  model/   {"params": nnx.State, "rest": nnx.State}  network variables (BatchNorm statistics and RNG in "rest")
  opt/     {"opt_state": optax state, "step": int}
  data/    process_<i>-of-<n>.json                    each process's input-iterator position
  meta/    JSON: step, epoch, stage and the run's config (so a teacher can be checked against its network)
Kept: the last `keep` checkpoints plus the best one by `eval_accuracy` (saved with metrics at each epoch end).
A finished run's network (a teacher, or a student for the probes) is restored from its best checkpoint (else latest) or
from an explicit `<step>` directory (`find_step_dir`); only its `model` item is read, so its optimiser does not matter.
"""

import dataclasses
import json
import os
from typing import Any

from etils import epath
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers

BEST_METRIC = "eval_accuracy"


class DataIteratorHandler(ocp.CheckpointHandler):
  """Saves `iterator.get_state()` (a JSON-able dict or bytes) of every process in its own file (like grain's)."""

  def _file(self, directory: epath.Path) -> epath.Path:
    return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

  def save(self, directory: epath.Path, args: "DataIteratorSave"):
    state = args.item.get_state()
    if isinstance(state, bytes):
      state = {"__bytes__": state.decode("latin-1")}
    self._file(directory).write_text(json.dumps(state))

  def restore(self, directory: epath.Path, args: "DataIteratorRestore"):
    path = self._file(directory)
    if not path.exists():
      raise FileNotFoundError(
          f"{path} is missing: the checkpoint was written by a run with a different number of processes.")
    state = json.loads(path.read_text())
    if isinstance(state, dict) and set(state) == {"__bytes__"}:
      state = state["__bytes__"].encode("latin-1")
    args.item.set_state(state)
    return args.item

  def metadata(self, directory):
    return None

  def finalize(self, directory):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
  item: Any


def _best_fn(metrics: dict) -> float:
  return float(metrics[BEST_METRIC])


def _absolute(path: str) -> epath.Path:
  """Local paths made absolute (orbax refuses relative ones); URLs such as gs://... as they are."""
  return epath.Path(path if "://" in path else os.path.abspath(path))


def create_manager(directory: str, *, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  """A manager keeping the latest `keep` checkpoints and the best one by eval accuracy (asynchronous saves)."""
  if keep < 1:
    raise ValueError(f"train.keep_checkpoints={keep} must be >= 1.")
  policy = ocp_managers.AnyPreservationPolicy([
      ocp_managers.LatestN(n=keep),
      ocp_managers.BestN(get_metric_fn=_best_fn, reverse=False, n=1, keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      best_fn=_best_fn, best_mode="max", preservation_policy=None if read_only else policy,
      create=not read_only, read_only=read_only, enable_async_checkpointing=not read_only,
      cleanup_tmp_directories=not read_only)  # A SIGKILL mid-save leaves a tmp directory: drop it on restart.
  return ocp.CheckpointManager(_absolute(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, *, model: Any, opt: Any, meta: dict,
         data_iterator: Any = None, metrics: dict | None = None) -> bool:
  """Saves one checkpoint (asynchronously). Pass `metrics` (with "eval_accuracy") at epoch ends only."""
  items = dict(model=ocp.args.StandardSave(model), opt=ocp.args.StandardSave(opt), meta=ocp.args.JsonSave(meta))
  if data_iterator is not None:
    items["data"] = DataIteratorSave(data_iterator)
  return manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


def restore(manager: ocp.CheckpointManager, step: int, *, model: Any, opt: Any,
            data_iterator: Any = None) -> tuple[Any, Any, dict]:
  """Restores (model, opt, meta) of `step` onto the shardings of the abstract targets; sets the iterator state."""
  items = dict(model=ocp.args.StandardRestore(model), opt=ocp.args.StandardRestore(opt), meta=ocp.args.JsonRestore())
  if data_iterator is not None:
    items["data"] = DataIteratorRestore(data_iterator)
  out = manager.restore(step, args=ocp.args.Composite(**items))
  return out["model"], out["opt"], out["meta"]


def _best_or_latest(ckpt_dir: epath.Path) -> int | None:
  manager = create_manager(str(ckpt_dir), keep=1, read_only=True)
  step = manager.best_step()
  if step is None:
    step = manager.latest_step()
  manager.close()
  return step


def find_step_dir(path: str) -> epath.Path:
  """The checkpoint a finished run is read from: `path` itself if it is a `<step>` directory (holding `model/`),
  else the best (else latest) checkpoint of the run workdir `path`. FileNotFoundError when there is none."""
  path = _absolute(path)
  if (path / "model").exists():
    return path
  step = _best_or_latest(path / "checkpoints") if (path / "checkpoints").exists() else None
  if step is None:
    raise FileNotFoundError(f"No finished checkpoint in {path} (neither {path / 'model'} nor {path / 'checkpoints'}).")
  return path / "checkpoints" / str(step)


def find_teacher_step_dir(workdir: str = "", checkpoint: str = "") -> epath.Path:
  """The checkpoint directory a distillation run reads its teacher from (`find_step_dir` with the config's fixes).

  `checkpoint` (a `<step>` directory holding `model/`) wins; otherwise the best (else latest) checkpoint of the
  teacher run in `workdir`. Raises FileNotFoundError with the fix when nothing is there.
  """
  if checkpoint:
    path = _absolute(checkpoint)
    if not (path / "model").exists():
      raise FileNotFoundError(
          f"config.teacher.checkpoint={checkpoint!r} is not a checkpoint directory (expected {path / 'model'}). "
          "Point it at WORKDIR/checkpoints/<step> of a teacher run, or set config.teacher.workdir instead.")
    return path
  if not workdir:
    raise ValueError(
        "A distillation run needs a teacher: set --config.teacher.workdir=DIR (a finished teacher run) or "
        "--config.teacher.checkpoint=DIR/checkpoints/<step>.")
  ckpt_dir = _absolute(workdir) / "checkpoints"
  if not ckpt_dir.exists():
    raise FileNotFoundError(
        f"No checkpoints in config.teacher.workdir={workdir!r} (looked for {ckpt_dir}). Train the teacher first: "
        f"python -m svdkd_jax.main --config ...:teacher --workdir {workdir}")
  step = _best_or_latest(ckpt_dir)
  if step is None:
    raise FileNotFoundError(f"No finished checkpoint in {ckpt_dir}; train the teacher first.")
  return ckpt_dir / str(step)


def read_meta(step_dir: epath.Path) -> dict:
  """The `meta` item of a checkpoint directory ({} if absent)."""
  path = epath.Path(step_dir) / "meta"
  if not path.exists():
    return {}
  return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path)


def restore_model(step_dir: epath.Path, abstract_model: Any) -> Any:
  """Restores only the `model` item of a checkpoint onto the shardings of `abstract_model`."""
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(epath.Path(step_dir) / "model", abstract_model)
