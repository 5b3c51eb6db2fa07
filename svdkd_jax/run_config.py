"""A run's config against the registries: the layer above the schema (`svdkd_jax.config`).

    run_config.validate_run(config)          # the schema's check, then network and method names and options
    run_config.unread_keys(config_dict)      # {"distill.temperature", ...}: keys a run of that config never reads

The schema knows every key and value but no network or method; this module checks the names against
`models.names()` and `distill.NAMES`, and the options in `config.distill` against those the chosen method declares:
an option no method declares is unknown, and a value other than the default for an option the chosen method does
not read would be silently ignored, so both are errors.
"""

import ml_collections

from svdkd_jax import config as config_lib
from svdkd_jax import distill
from svdkd_jax import models


def _options(config: ml_collections.ConfigDict | dict) -> list[str]:
  """The option keys of `config.distill`: every key the trainer itself does not read."""
  return [k for k in config["distill"].keys() if k not in config_lib.DISTILL_RUN_KEYS]


def _check_distill_options(config: ml_collections.ConfigDict) -> None:
  method, defaults = config.distill.method, config_lib.default().distill
  declared, read = set(distill.all_option_names()), distill.option_names(method)
  for key in _options(config):
    if key not in declared:
      raise ValueError(f"config.distill.{key} is an option of no distillation method (their options: "
                       f"{', '.join(sorted(declared))}).")
    if key not in read and config.distill[key] != defaults[key]:
      reads = f"it reads {', '.join(read)}" if read else "it has no options"
      raise ValueError(f"config.distill.{key}={config.distill[key]!r} is not read by distill.method={method!r} "
                       f"({reads}): leave it at its default {defaults[key]!r}, or choose a method that reads it.")
  missing = [key for key in read if key not in config.distill]
  if missing:
    raise ValueError(f"distill.method={method!r} reads option(s) {', '.join(missing)}, which config.distill lacks: "
                     "add them to svdkd_jax.config.default().")


def validate_run(config: ml_collections.ConfigDict) -> None:
  """Raises a one-line ValueError naming the first problem: `config_lib.validate`'s, an unknown network or
  distillation method, or an unknown or unused distillation option."""
  config_lib.validate(config)
  for field in ("model.name", "teacher.name"):
    section, key = field.split(".")
    if config[section][key] not in models.names():
      raise ValueError(f"config.{field}={config[section][key]!r} is not a network; valid: "
                       f"{', '.join(sorted(models.names()))}.")
  if not distill.is_method(config.distill.method):
    raise ValueError(f"config.distill.method={config.distill.method!r}; valid: {', '.join(distill.NAMES)}, or "
                     "several joined by '+'.")
  _check_distill_options(config)


def unread_keys(config: dict) -> set[str]:
  """The dotted `distill.*` option keys that a run of `config` (a dict, e.g. a run's config.json) does not read:
  the options of the methods it does not use. An unknown method reads every option."""
  method = config.get("distill", {}).get("method") or ""
  every = set(distill.all_option_names())
  read = set(distill.option_names(method)) if distill.is_method(method) else every
  return {f"distill.{key}" for key in every - read}
