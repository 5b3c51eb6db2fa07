"""A run's workdir: its `config.json`, written once, and the check that a restart continues the same run.

    workdir.prepare(config, "runs/x", schema=default_config)   # refuses a workdir holding another run
    workdir.read_config("runs/x")                              # the dict of config.json
"""

import json
import logging
import os
import shutil

import jax
import ml_collections

from svdkd_jax import metrics as metrics_lib

CONFIG_FILE = "config.json"
# Keys that steer a run without changing its result: they may differ when a run is resumed.
RUN_CONTROL_KEYS = ("train.max_steps", "train.log_every_steps", "train.checkpoint_every_steps",
                    "train.keep_checkpoints", "data.num_workers", "data.data_dir", "data.cache_dir", "data.path",
                    "teacher.workdir", "teacher.checkpoint")
# What `prepare(..., overwrite=True)` deletes: everything a run writes.
RUN_OUTPUTS = ("checkpoints", "tensorboard", metrics_lib.METRICS_FILE, metrics_lib.SUMMARY_FILE, CONFIG_FILE)


def read_config(workdir: str) -> dict:
  """The config a run was started with, as the dict of `WORKDIR/config.json`."""
  with open(os.path.join(workdir, CONFIG_FILE)) as f:
    return json.load(f)


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


def config_changes(old: dict, new: dict, schema: ml_collections.ConfigDict | None) -> list[tuple[str, object, object]]:
  """`(key, old value, new value)` for each result-deciding key that differs between two configs (as dicts).

  A key missing from `old` (added to the schema after that run was written) counts as its `schema` default there.
  """
  a, b = _comparable(old), _comparable(new)
  defaults = _comparable(json.loads(schema.to_json_best_effort())) if schema is not None else {}
  a = {**{k: v for k, v in defaults.items() if k in b and k not in a}, **a}
  return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _delete_run(workdir: str) -> None:
  logging.warning("--overwrite: deleting the previous run in %s", workdir)
  for name in RUN_OUTPUTS:
    target = os.path.join(workdir, name)
    if os.path.isdir(target):
      shutil.rmtree(target)
    elif os.path.exists(target):
      os.remove(target)


def prepare(config: ml_collections.ConfigDict, workdir: str, *, schema: ml_collections.ConfigDict | None,
            overwrite: bool = False) -> None:
  """Creates `workdir` and writes its config; refuses a workdir holding a different run unless `overwrite`.

  `schema` (every key with its default, or None) fills keys an older config.json lacks. With `overwrite`, the
  previous run's checkpoints, metrics and summary are deleted.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  new = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    diff = config_changes(read_config(workdir), new, schema)
    if diff and not overwrite:
      shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:8])
      raise ValueError(f"{workdir} holds a run with a different config ({shown}). Use another --workdir, or pass "
                       "--overwrite to delete that run and start again.")
    if diff and jax.process_index() == 0:
      _delete_run(workdir)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(path + ".tmp", "w") as f:  # Atomic: other processes may be reading it.
      json.dump(new, f, indent=2)
    os.replace(path + ".tmp", path)
