"""Checkpoints with orbax: save, resume, keep the last few and the best, restore a frozen teacher.

Layout of `WORKDIR/checkpoints/<step>/` (one orbax `CheckpointManager`, one sub-directory per item):
  model/   {"params": nnx.State, "rest": nnx.State}  network variables (BatchNorm statistics and RNG in "rest")
  opt/     {"opt_state": optax state, "step": int}
  data/    process_<i>-of-<n>.json                    each process's input-iterator position
  meta/    JSON: step, epoch, stage and the run's config (so a teacher can be checked against its network)
Kept: the last `keep` checkpoints plus the best one by `eval_accuracy` (saved with metrics at each epoch end).
A finished run's network (a teacher, or a student for the probes) is restored from its best checkpoint (else latest) or
from an explicit `<step>` directory (`find_step_dir`); only its `model` item is read, so its optimiser does not matter.

Every restore first checks the step directory (`check_step`): each array decodes and the stored names and shapes
match the target. So a damaged checkpoint is reported as `CheckpointUnreadableError` naming its directory, and a
checkpoint of another network as `CheckpointMismatchError`, before orbax reads anything: orbax, when one array read
fails, closes its event loop while the other reads are in flight, whose completions then print "Event loop is
closed" tracebacks until the process exits. `restore_latest` resumes from the newest readable step, setting damaged
newer ones aside as `<step>.unreadable`.

A save that fails for lack of space (ENOSPC, from tensorstore's array writes or etils' file writes) is reported
once, as `DiskFullError` naming the file, the space a checkpoint needs and the step to resume from: orbax's writer
threads log that error with its traceback before it reaches the caller, and those records are dropped
(`_DropWriterTracebacks`). The half-written `<step>.orbax-checkpoint-tmp` folder is removed by the manager of the
next run (`cleanup_tmp_directories`), which resumes from the newest finished step.
"""

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
from typing import Any

from etils import epath
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers
import tensorstore as ts

BEST_METRIC = "eval_accuracy"
UNREADABLE_SUFFIX = ".unreadable"


class CheckpointUnreadableError(ValueError):
  """A checkpoint whose files cannot be read (cut short, overwritten, missing); `step_dir` names it."""

  def __init__(self, step_dir: epath.Path, problem: str, fix: str = ""):
    super().__init__(f"Checkpoint {step_dir} is unreadable: {problem}." + (f" {fix}" if fix else ""))
    self.step_dir, self.problem = step_dir, problem


class CheckpointMismatchError(ValueError):
  """A readable checkpoint holding other arrays (names or shapes) than the network/optimiser it is restored into."""


class DiskFullError(ValueError):
  """A checkpoint that could not be written for lack of space; the message says where, and how much it needs."""


class DataIteratorHandler(ocp.CheckpointHandler):
  """Saves `iterator.get_state()` (a JSON-able dict or bytes) of every process in its own file (like grain's)."""

  def _file(self, directory: epath.Path) -> epath.Path:
    return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

  def save(self, directory: epath.Path, args: "DataIteratorSave") -> None:
    """Writes this process's iterator state to its own JSON file in `directory`."""
    state = args.item.get_state()
    if isinstance(state, bytes):
      state = {"__bytes__": state.decode("latin-1")}
    self._file(directory).write_text(json.dumps(state))

  def restore(self, directory: epath.Path, args: "DataIteratorRestore") -> Any:
    """Sets `args.item`'s state from this process's file in `directory` and returns `args.item`."""
    path = self._file(directory)
    if not path.exists():
      raise FileNotFoundError(
          f"{path} is missing: the checkpoint was written by a run with a different number of processes.")
    state = json.loads(path.read_text())
    if isinstance(state, dict) and set(state) == {"__bytes__"}:
      state = state["__bytes__"].encode("latin-1")
    args.item.set_state(state)
    return args.item

  def metadata(self, directory: epath.Path) -> None:
    """None: the handler keeps no metadata."""
    return None

  def finalize(self, directory: epath.Path) -> None:
    """Nothing to finalise: `save` writes its file at once."""

  def close(self) -> None:
    """Nothing to release."""


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
  """`DataIteratorHandler`'s save argument: `item` has `get_state()`."""
  item: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
  """`DataIteratorHandler`'s restore argument: `item` has `set_state(state)` and is restored in place."""
  item: Any


def _best_fn(metrics: dict) -> float:
  return float(metrics[BEST_METRIC])


def _absolute(path: str | os.PathLike) -> epath.Path:
  """Local paths made absolute for orbax (it refuses relative ones); URLs such as gs://... as they are.

  Only orbax sees these: the paths this module returns (and its messages name) are the caller's, as given, so the
  logs and records that show them hold no machine path.
  """
  path = os.fspath(path)
  return epath.Path(path if "://" in path else os.path.abspath(path))


class _DropReadOnlyNotice(logging.Filter):
  """Drops orbax's warning on every read-only manager (it names the absolute directory; read-only is asked for)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Given directory is read only")


class _DropWriterTracebacks(logging.Filter):
  """Drops the tracebacks orbax logs from its writer threads (and again while waiting for them): each is of an
  error that orbax raises again to the caller, at the next save or wait, which reports it once."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and f"{os.sep}orbax{os.sep}checkpoint{os.sep}" in record.pathname)


_WRITER_TRACEBACKS = _DropWriterTracebacks()


def create_manager(directory: str, *, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  """A manager keeping the latest `keep` checkpoints and the best one by eval accuracy (asynchronous saves)."""
  if keep < 1:
    raise ValueError(f"train.keep_checkpoints={keep} must be >= 1.")
  if not read_only:
    logging.getLogger("absl").addFilter(_WRITER_TRACEBACKS)  # (a no-op once added)
  policy = ocp_managers.AnyPreservationPolicy([
      ocp_managers.LatestN(n=keep),
      ocp_managers.BestN(get_metric_fn=_best_fn, reverse=False, n=1, keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      best_fn=_best_fn, best_mode="max", preservation_policy=None if read_only else policy,
      create=not read_only, read_only=read_only, enable_async_checkpointing=not read_only,
      cleanup_tmp_directories=not read_only)  # A SIGKILL mid-save leaves a tmp directory: drop it on restart.
  if not read_only:
    return ocp.CheckpointManager(_absolute(directory), options=options)
  notice = _DropReadOnlyNotice()
  absl_logger = logging.getLogger("absl")
  absl_logger.addFilter(notice)
  try:
    return ocp.CheckpointManager(_absolute(directory), options=options)
  finally:
    absl_logger.removeFilter(notice)


def save(manager: ocp.CheckpointManager, step: int, *, model: Any, opt: Any, meta: dict,
         data_iterator: Any = None, metrics: dict | None = None) -> bool:
  """Saves one checkpoint (asynchronously). Pass `metrics` (with "eval_accuracy") at epoch ends only."""
  items = dict(model=ocp.args.StandardSave(model), opt=ocp.args.StandardSave(opt), meta=ocp.args.JsonSave(meta))
  if data_iterator is not None:
    items["data"] = DataIteratorSave(data_iterator)
  return manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


def finished_steps(directory: str | os.PathLike) -> list[int]:
  """The steps of the finished checkpoints in `directory` (a save in progress or cut short is not one); reads the
  directory only, so it needs no other process."""
  directory = _absolute(directory)
  return sorted(ocp.path.step.checkpoint_steps(directory)) if directory.exists() else []


def _unwritten_file(error: BaseException) -> str | None:
  """The file a write could not finish for lack of space, if `error` (or what it was raised from) is ENOSPC: an
  OSError from a Python write, or tensorstore's error (naming the file and `os_error_code`); "" if no file is named;
  None for any other error."""
  while error is not None:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return error.filename or ""
    text = str(error)
    if f"os_error_code='{errno.ENOSPC}'" in text:
      found = re.search(r'Failed writing: "([^"]+)"', text)
      return found.group(1) if found else ""
    error = error.__cause__ or error.__context__
  return None


def disk_full_error(error: BaseException, directory: str | os.PathLike, nbytes: int) -> DiskFullError | None:
  """The one-line error for `error` if it is a full disk while saving a checkpoint of `nbytes` bytes of arrays into
  `directory`, else None."""
  file = _unwritten_file(error)
  if file is None:
    return None
  local = "://" not in os.fspath(directory) and os.path.isdir(directory)
  free = f" ({shutil.disk_usage(directory).free / 1e6:.1f} MB free)" if local else ""
  steps = finished_steps(directory)
  resume = f"resume from step {steps[-1]}" if steps else "start again (no checkpoint was finished)"
  return DiskFullError(
      f"No space left on device for a checkpoint in {directory}{free}: writing {file or 'it'} failed. A checkpoint "
      f"of this run needs about {nbytes / 1e6:.1f} MB; free that much there, then rerun the same command to "
      f"{resume}.")


def _short(e: BaseException) -> str:
  """An exception as one short line (tensorstore appends its whole JSON spec to its messages)."""
  text = " ".join(str(e).split("[tensorstore_spec")[0].split())
  return f"{type(e).__name__}: {text[:300]}"


def _kvstore_url(item_dir: epath.Path) -> str:
  path = str(item_dir)
  return (path if "://" in path else "file://" + os.path.abspath(path)).rstrip("/") + "/"


def _check_arrays(step_dir: epath.Path, item: str) -> None:
  """Reads and decodes every array of an OCDBT item (orbax's default format) with blocking tensorstore calls."""
  item_dir = step_dir / item
  if not (item_dir / "manifest.ocdbt").exists():
    if not item_dir.exists():
      raise CheckpointUnreadableError(step_dir, f"its {item}/ directory is missing")
    return  # Not OCDBT (older orbax layouts): orbax alone reads it.
  base = _kvstore_url(item_dir)
  name = ""  # the array being read ("" while listing the database)
  try:
    keys = ts.KvStore.open({"driver": "ocdbt", "base": base}).result().list().result()
    for key in sorted(keys):
      key = key.decode()
      if key.endswith(("/.zarray", "/zarr.json")):
        name, driver = key.rsplit("/", 1)[0], "zarr" if key.endswith(".zarray") else "zarr3"
        spec = {"driver": driver, "kvstore": {"driver": "ocdbt", "base": base, "path": name + "/"}}
        ts.open(spec, open=True, read=True).result().read().result()
  except Exception as e:  # pylint: disable=broad-except  (tensorstore raises several types for damage)
    raise CheckpointUnreadableError(step_dir, f"{item}/{name} ({_short(e)})") from None


def _names_and_shapes(tree: Any) -> dict[str, tuple[int, ...] | None]:
  """{"params.conv.kernel.value": shape} for every leaf; None for PRNG keys (stored as their raw uint32 data)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    dtype = getattr(leaf, "dtype", None)
    key = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    out[jax.tree_util.keystr(path, simple=True, separator=".")] = None if key else tuple(getattr(leaf, "shape", ()))
  return out


def _check_structure(step_dir: epath.Path, item: str, target: Any) -> None:
  """CheckpointMismatchError unless the item stores exactly the target's leaves, with the same shapes."""
  handler = ocp.StandardCheckpointHandler()  # (A Checkpointer would also look for step metadata, and warn.)
  try:
    stored = _names_and_shapes(handler.metadata(_absolute(step_dir / item)).tree)
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointUnreadableError(step_dir, f"the metadata of {item}/ ({_short(e)})") from None
  finally:
    handler.close()
  wanted = _names_and_shapes(target)
  problems = [f"{k} missing" for k in sorted(set(wanted) - set(stored))]
  problems += [f"{k} unexpected" for k in sorted(set(stored) - set(wanted))]
  problems += [f"{k} is {list(stored[k])}, expected {list(wanted[k])}" for k in sorted(set(stored) & set(wanted))
               if None not in (stored[k], wanted[k]) and stored[k] != wanted[k]]
  if problems:
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    raise CheckpointMismatchError(f"Checkpoint {step_dir / item} does not match what it is restored into: "
                                  f"{'; '.join(problems[:5])}{more}.")


def _check_json(step_dir: epath.Path, path: epath.Path) -> None:
  try:
    json.loads(path.read_text())
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointUnreadableError(step_dir, f"{path.relative_to(step_dir)} ({_short(e)})") from None


def check_step(step_dir: epath.Path, targets: dict[str, Any], *, json_items: tuple[str, ...] = ()) -> None:
  """Raises CheckpointUnreadableError if an array of `targets`' items (or a JSON item) cannot be read, and
  CheckpointMismatchError if an item stores other names/shapes than its target. Reads every array once."""
  step_dir = epath.Path(step_dir)
  if not step_dir.exists():
    raise CheckpointUnreadableError(step_dir, "the directory is missing")
  for item, target in targets.items():
    _check_arrays(step_dir, item)
    _check_structure(step_dir, item, target)
  for item in json_items:
    if item == "data":  # A missing file (another process count) is left to DataIteratorHandler's message.
      path = DataIteratorHandler()._file(step_dir / "data")  # pylint: disable=protected-access
      if path.exists():
        _check_json(step_dir, path)
    elif (step_dir / item / "metadata").exists():
      _check_json(step_dir, step_dir / item / "metadata")


def step_dir_of(manager: ocp.CheckpointManager, step: int) -> epath.Path:
  """The directory of checkpoint `step` of `manager` (whether or not it exists)."""
  return epath.Path(manager.directory) / str(step)


def restore(manager: ocp.CheckpointManager, step: int, *, model: Any, opt: Any,
            data_iterator: Any = None) -> tuple[Any, Any, dict]:
  """Restores (model, opt, meta) of `step` onto the shardings of the abstract targets; sets the iterator state.

  Raises CheckpointUnreadableError / CheckpointMismatchError (see `check_step`) without starting orbax's reads.
  """
  step_dir = step_dir_of(manager, step)
  check_step(step_dir, {"model": model, "opt": opt}, json_items=("meta",) + (("data",) if data_iterator else ()))
  items = dict(model=ocp.args.StandardRestore(model), opt=ocp.args.StandardRestore(opt), meta=ocp.args.JsonRestore())
  if data_iterator is not None:
    items["data"] = DataIteratorRestore(data_iterator)
  out = manager.restore(step, args=ocp.args.Composite(**items))
  return out["model"], out["opt"], out["meta"]


def _set_aside(manager: ocp.CheckpointManager, step: int) -> epath.Path:
  """Renames a damaged step directory to `<step>.unreadable` (kept for inspection, invisible to orbax: not a step
  name), so that later saves of that step number and the keep-last-N policy see only good checkpoints."""
  src = step_dir_of(manager, step)
  dst = src.parent / f"{step}{UNREADABLE_SUFFIX}"
  if jax.process_index() == 0:
    n = 1
    while dst.exists():
      dst, n = src.parent / f"{step}{UNREADABLE_SUFFIX}{n}", n + 1
    src.rename(dst)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"svdkd_set_aside_{step}")
  return dst


def restore_latest(manager: ocp.CheckpointManager, *, model: Any, opt: Any, data_iterator: Any = None
                  ) -> tuple[int, Any, Any, dict] | None:
  """(step, model, opt, meta) of the newest readable checkpoint, or None if there is none at all.

  A newer damaged checkpoint is set aside as `<step>.unreadable` with a warning naming it, and the run resumes from
  the one before. A structure mismatch is raised, not skipped (an older step would not match either). If every
  checkpoint is damaged, raises CheckpointUnreadableError for the newest.
  """
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      model_out, opt_out, meta = restore(manager, step, model=model, opt=opt, data_iterator=data_iterator)
    except CheckpointUnreadableError as e:
      damaged.append(e)
      continue
    for e in damaged:
      dst = _set_aside(manager, int(e.step_dir.name))
      logging.warning("%s Resuming from step %d instead; the damaged checkpoint is kept as %s.", e, step, dst)
    if damaged:
      manager.reload()
    return step, model_out, opt_out, meta
  if damaged:
    steps = ", ".join(e.step_dir.name for e in damaged)
    raise CheckpointUnreadableError(
        damaged[0].step_dir, damaged[0].problem,
        f"No checkpoint of this run is readable (steps {steps}): restore {manager.directory} from a copy, or move "
        "it away to train from scratch.")
  return None


def _best_or_latest(ckpt_dir: epath.Path) -> int | None:
  manager = create_manager(str(ckpt_dir), keep=1, read_only=True)
  step = manager.best_step()
  if step is None:
    step = manager.latest_step()
  manager.close()
  return step


def find_step_dir(path: str) -> epath.Path:
  """The checkpoint a finished run is read from: `path` itself if it is a `<step>` directory (holding `model/`),
  else the best (else latest) checkpoint of the run workdir `path`, as a path under `path` as given.
  FileNotFoundError when there is none."""
  path = epath.Path(path)
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
    path = epath.Path(checkpoint)
    if not (path / "model").exists():
      raise FileNotFoundError(
          f"config.teacher.checkpoint={checkpoint!r} is not a checkpoint directory (expected {path / 'model'}). "
          "Point it at WORKDIR/checkpoints/<step> of a teacher run, or set config.teacher.workdir instead.")
    return path
  if not workdir:
    raise ValueError(
        "A distillation run needs a teacher: set --config.teacher.workdir=DIR (a finished teacher run) or "
        "--config.teacher.checkpoint=DIR/checkpoints/<step>.")
  ckpt_dir = epath.Path(workdir) / "checkpoints"
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
  return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(_absolute(path))


def restore_model(step_dir: epath.Path, abstract_model: Any) -> Any:
  """Restores only the `model` item of a checkpoint onto the shardings of `abstract_model`.

  Raises CheckpointUnreadableError (naming the step directory; point config.teacher.checkpoint at another step)
  or CheckpointMismatchError before orbax reads anything.
  """
  step_dir = epath.Path(step_dir)
  try:
    check_step(step_dir, {"model": abstract_model})
  except CheckpointUnreadableError as e:
    others = sorted((p.name for p in step_dir.parent.iterdir() if p.name.isdigit() and p.name != step_dir.name),
                    key=int) if step_dir.parent.exists() else []
    hint = f" (other steps there: {', '.join(others)})" if others else ""
    raise CheckpointUnreadableError(
        step_dir, e.problem, f"Point config.teacher.checkpoint at another step of that run{hint}, or train the "
        "teacher again.") from None
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(_absolute(step_dir / "model"), abstract_model)
