"""A run's workdir: its `config.json`, and the check that a restart continues the same run (or extends it).

    prepared = workdir.check(config, "runs/x")   # read-only: refuses a workdir holding another run
    workdir.write(prepared)                      # config.json written (with overwrite, the other run deleted first)
    workdir.prepare(config, "runs/x")            # both at once
    workdir.read_config("runs/x")                # the dict of config.json, in today's value names

Rerunning with the same config resumes. Rerunning with a larger `train.epochs` and nothing else changed extends the
run: it continues from its last checkpoint to the new length, as if it had been started with it (the data order,
the learning-rate schedule and every step depend on the step number, not on the run's length). Any other change is
refused unless `overwrite`. Configs are compared in today's value names (`config.canonical`), keys a config.json
lacks count as their defaults, and the run-control keys (`config.RUN_CONTROL_KEYS`) are not compared. A workdir's
config.json is written when its run starts and rewritten only when its config changes (an extension, an overwrite),
so a run's record keeps the names it was written with. Files go through `etils.epath`, so the workdir may be a URL
(gs://...).
"""

from collections.abc import Callable
import dataclasses
import json
import logging

from etils import epath
import jax
import ml_collections

from svdkd_jax import config as config_lib
from svdkd_jax import metrics as metrics_lib

CONFIG_FILE = "config.json"
# What `write` deletes for an overwrite: everything a run writes.
RUN_OUTPUTS = ("checkpoints", "tensorboard", metrics_lib.METRICS_FILE, metrics_lib.SUMMARY_FILE, CONFIG_FILE)
Change = tuple[str, object, object]  # (dotted key, old value, new value)
Unread = Callable[[dict], set[str]]  # config dict -> the dotted keys a run of it does not read


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
  """The config a run was started with, as the dict of `WORKDIR/config.json` with today's value names
  (FileNotFoundError if missing, ValueError if damaged)."""
  path = epath.Path(workdir) / CONFIG_FILE
  config = _load(path)
  if config is None:
    raise FileNotFoundError(f"{path} is missing: {workdir} is not the workdir of a run.")
  return config_lib.canonical(config)


def _comparable(config_dict: dict) -> dict:
  """`{"section.key": value}` of the keys that decide a run's result (tuples as lists, as JSON reads them back)."""
  flat = {}

  def walk(d, prefix):
    for k, v in d.items():
      if isinstance(v, dict):
        walk(v, f"{prefix}{k}.")
      elif f"{prefix}{k}" not in config_lib.RUN_CONTROL_KEYS:
        flat[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v

  walk(config_lib.canonical(config_dict), "")
  return flat


def config_changes(old: dict, new: dict, unread: Unread | None = None) -> list[Change]:
  """`(key, old value, new value)` for each result-deciding key that differs between two configs (as dicts).

  A key missing from `old` (added to the schema after that run was written) counts as its default there. Keys that
  `unread` (e.g. `run_config.unread_keys`) says neither config's run reads are not compared.
  """
  a, b = _comparable(old), _comparable(new)
  defaults = _comparable(json.loads(config_lib.default().to_json_best_effort()))
  a = {**{k: v for k, v in defaults.items() if k in b and k not in a}, **a}
  ignored = (unread(old) & unread(new)) if unread is not None else set()
  return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in ignored]


def _grows_epochs(change: Change) -> bool:
  key, old, new = change
  return key == config_lib.EXTENDABLE_KEY and isinstance(old, int) and isinstance(new, int) and new > old


def extension(changes: list[Change]) -> tuple[int, int] | None:
  """`(old epochs, new epochs)` if `changes` (see `config_changes`) extend a run: `train.epochs` grew, nothing
  else changed. None otherwise."""
  if len(changes) == 1 and _grows_epochs(changes[0]):
    return changes[0][1], changes[0][2]
  return None


def _refusal(workdir: str, changes: list[Change]) -> str:
  """The one-line message refusing to continue a run under `changes` (which are not an extension)."""
  shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes[:8])
  note, extendable = "", config_lib.EXTENDABLE_KEY
  if any(_grows_epochs(c) for c in changes):
    others = [k for k, _, _ in changes if k != extendable]
    note = f" Only {extendable} alone may grow to extend a run; here {', '.join(others)} changed with it."
    if others == ["optim.boundaries"]:  # configs whose boundaries follow the epoch count (the CPU recipes)
      old = {k: a for k, a, _ in changes}["optim.boundaries"]
      note += (f" To extend it on the schedule it was trained with, also pass "
               f"--config.optim.boundaries='{tuple(old or ())}'.")
  return (f"{workdir} holds a run with a different config ({shown}).{note} Use another --workdir, or pass "
          "--overwrite to delete that run and start again.")


@dataclasses.dataclass(frozen=True)
class Prepared:
  """What `check` found in a workdir, for `write`."""
  workdir: str
  config: dict  # the config to write, as JSON
  changes: list[Change]  # from the workdir's config.json to `config`; empty for a new or the same run
  exists: bool  # the workdir has a config.json
  starts_again: bool  # overwrite of another (or damaged) run: `write` deletes its outputs first
  extended: tuple[int, int] | None  # (old, new) train.epochs of an extension


def check(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False,
          unread: Unread | None = None) -> Prepared:
  """Checks that `workdir` is new or holds the run of `config` (or a shorter one to extend), touching nothing.

  Raises a one-line ValueError for a workdir holding another run, or a damaged config.json, unless `overwrite`
  (then `write` deletes that run). A larger `train.epochs` alone extends the run (with `overwrite`, the run starts
  again instead). `unread(config_dict)`: keys a run does not read, not compared (see `config_changes`).
  """
  new = json.loads(config.to_json_best_effort())
  try:
    old = _load(epath.Path(workdir) / CONFIG_FILE)
  except ValueError:  # damaged: only --overwrite goes on, by starting again
    if not overwrite:
      raise
    return Prepared(workdir, new, [(CONFIG_FILE, "damaged", None)], True, True, None)
  changes = [] if old is None else config_changes(old, new, unread)
  extended = None if overwrite else extension(changes)
  if changes and not extended and not overwrite:
    raise ValueError(_refusal(workdir, changes))
  return Prepared(workdir, new, changes, old is not None, bool(changes) and overwrite, extended)


def _delete_run(workdir: str) -> None:
  logging.warning("--overwrite: deleting the previous run in %s", workdir)
  for name in RUN_OUTPUTS:
    target = epath.Path(workdir) / name
    if target.is_dir():
      target.rmtree()
    elif target.exists():
      target.unlink()


def write(prepared: Prepared) -> None:
  """Creates the workdir and writes its config.json, unless it already holds this very run's (process 0 only;
  config.json is replaced atomically: other processes may be reading it). An overwrite deletes the other run first."""
  if prepared.extended:
    logging.info("Extending the run in %s from %d to %d epochs: it continues from its last checkpoint.",
                 prepared.workdir, *prepared.extended)
  if jax.process_index() != 0 or (prepared.exists and not prepared.changes):
    return
  if prepared.starts_again:
    _delete_run(prepared.workdir)
  epath.Path(prepared.workdir).mkdir(parents=True, exist_ok=True)
  metrics_lib.write_json(epath.Path(prepared.workdir) / CONFIG_FILE, prepared.config)


def prepare(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False,
            unread: Unread | None = None) -> None:
  """`write(check(...))`: refuses a workdir holding another run, or writes (or keeps) the run's config.json."""
  write(check(config, workdir, overwrite=overwrite, unread=unread))
