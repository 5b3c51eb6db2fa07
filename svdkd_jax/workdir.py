"""A run's workdir: its `config.json`, and the check that a restart continues the same run (or extends it).

    workdir.prepare(config, "runs/x", schema=default_config)   # refuses a workdir holding another run
    workdir.read_config("runs/x")                              # the dict of config.json

Rerunning with the same config resumes. Rerunning with a larger `train.epochs` and nothing else changed extends the
run: it continues from its last checkpoint to the new length, as if it had been started with it (the data order,
the learning-rate schedule and every step depend on the step number, not on the run's length). Any other change is
refused unless `overwrite`. Files go through `etils.epath`, so the workdir may be a URL (gs://...).
"""

import json
import logging

from etils import epath
import jax
import ml_collections

from svdkd_jax import distill
from svdkd_jax import metrics as metrics_lib

CONFIG_FILE = "config.json"
# Keys that steer a run without changing its result: they may differ when a run is resumed.
RUN_CONTROL_KEYS = ("train.max_steps", "train.log_every_steps", "train.checkpoint_every_steps",
                    "train.keep_checkpoints", "data.num_workers", "data.data_dir", "data.cache_dir", "data.path",
                    "teacher.workdir", "teacher.checkpoint")
# The one key whose growth extends a run instead of making it another run.
EXTENDABLE_KEY = "train.epochs"
# What `prepare(..., overwrite=True)` deletes: everything a run writes.
RUN_OUTPUTS = ("checkpoints", "tensorboard", metrics_lib.METRICS_FILE, metrics_lib.SUMMARY_FILE, CONFIG_FILE)


def _load(path: epath.Path) -> dict | None:
  """The dict in a run's `config.json`; None if there is none; a ValueError saying what to do if it is damaged."""
  damaged = ValueError(f"{path} is damaged (not valid JSON), so this workdir's run cannot be checked against the "
                       "config: restore it, or pass --overwrite to start the run again.")
  try:
    config = metrics_lib.read_json(path, strict=True)
  except ValueError:  # Cut short or overwritten: checking a restart against it would be a guess.
    raise damaged from None
  if config is not None and not isinstance(config, dict):
    raise damaged
  return config


def read_config(workdir: str) -> dict:
  """The config a run was started with, as the dict of `WORKDIR/config.json` (FileNotFoundError if missing,
  ValueError if damaged)."""
  path = epath.Path(workdir) / CONFIG_FILE
  config = _load(path)
  if config is None:
    raise FileNotFoundError(f"{path} is missing: {workdir} is not the workdir of a run.")
  return config


def _comparable(config_dict: dict) -> dict:
  """`{"section.key": value}` of the keys that decide a run's result (tuples as lists, as JSON reads them back)."""
  flat = {}

  def walk(d, prefix):
    for k, v in d.items():
      if isinstance(v, dict):
        walk(v, f"{prefix}{k}.")
      elif f"{prefix}{k}" not in RUN_CONTROL_KEYS:
        flat[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v

  walk(config_dict, "")
  return flat


def _unread_distill_options(config_dict: dict) -> set[str]:
  """The `distill.X` keys the run's method does not read (`svd_grad` of an FSP or student run): a new default for
  them changes nothing the run computes."""
  method = config_dict.get("distill", {}).get("method")
  every = {o for name in distill.NAMES for o in distill.option_names(name)}
  read = set(distill.option_names(method)) if distill.is_method(method or "") else every
  return {f"distill.{o}" for o in every - read}


def config_changes(old: dict, new: dict, schema: ml_collections.ConfigDict | None) -> list[tuple[str, object, object]]:
  """`(key, old value, new value)` for each result-deciding key that differs between two configs (as dicts).

  A key missing from `old` (added to the schema after that run was written) counts as its `schema` default there.
  Options of distillation methods the run does not use (in both configs) are not compared.
  """
  a, b = _comparable(old), _comparable(new)
  defaults = _comparable(json.loads(schema.to_json_best_effort())) if schema is not None else {}
  a = {**{k: v for k, v in defaults.items() if k in b and k not in a}, **a}
  unread = _unread_distill_options(old) & _unread_distill_options(new)
  return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in unread]


def _grows_epochs(change: tuple[str, object, object]) -> bool:
  key, old, new = change
  return key == EXTENDABLE_KEY and isinstance(old, int) and isinstance(new, int) and new > old


def extension(changes: list[tuple[str, object, object]]) -> tuple[int, int] | None:
  """`(old epochs, new epochs)` if `changes` (see `config_changes`) extend a run: `train.epochs` grew, nothing
  else changed. None otherwise."""
  if len(changes) == 1 and _grows_epochs(changes[0]):
    return changes[0][1], changes[0][2]
  return None


def _refusal(workdir: str, changes: list[tuple[str, object, object]]) -> str:
  """The one-line message refusing to continue a run under `changes` (which are not an extension)."""
  shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes[:8])
  note = ""
  if any(_grows_epochs(c) for c in changes):
    others = [k for k, _, _ in changes if k != EXTENDABLE_KEY]
    note = f" Only {EXTENDABLE_KEY} alone may grow to extend a run; here {', '.join(others)} changed with it."
    if others == ["optim.boundaries"]:  # configs whose boundaries follow the epoch count (the CPU recipes)
      old = {k: a for k, a, _ in changes}["optim.boundaries"]
      note += (f" To extend it on the schedule it was trained with, also pass "
               f"--config.optim.boundaries='{tuple(old or ())}'.")
  return (f"{workdir} holds a run with a different config ({shown}).{note} Use another --workdir, or pass "
          "--overwrite to delete that run and start again.")


def _delete_run(workdir: str) -> None:
  logging.warning("--overwrite: deleting the previous run in %s", workdir)
  for name in RUN_OUTPUTS:
    target = epath.Path(workdir) / name
    if target.is_dir():
      target.rmtree()
    elif target.exists():
      target.unlink()


def prepare(config: ml_collections.ConfigDict, workdir: str, *, schema: ml_collections.ConfigDict | None,
            overwrite: bool = False) -> None:
  """Creates `workdir` and writes its config; refuses a workdir holding a different run unless `overwrite`.

  `schema` (every key with its default, or None) fills keys an older config.json lacks. A larger `train.epochs`
  alone extends the run (logged; with `overwrite`, the run starts again instead). With `overwrite`, a different or
  damaged previous run's checkpoints, metrics and summary are deleted.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  new = json.loads(config.to_json_best_effort())
  try:
    old = _load(path)
  except ValueError:  # damaged: only --overwrite goes on, by starting again
    if not overwrite:
      raise
    changes = [(CONFIG_FILE, "damaged", None)]
  else:
    changes = [] if old is None else config_changes(old, new, schema)
  extended = None if overwrite else extension(changes)
  if extended:
    logging.info("Extending the run in %s from %d to %d epochs: it continues from its last checkpoint.", workdir,
                 *extended)
  elif changes and not overwrite:
    raise ValueError(_refusal(workdir, changes))
  elif changes and jax.process_index() == 0:
    _delete_run(workdir)
  if jax.process_index() == 0:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    metrics_lib.write_json(path, new)  # Atomic: other processes may be reading it.
