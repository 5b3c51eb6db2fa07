"""Loading a Python file by path: config files (`configs/*.py` is a folder of files, not a package, as
ml_collections' `--config` flag expects) and the experiments scripts that tests and other scripts import.

Config files themselves import `svdkd_jax.recipes`, never each other; the package reads nothing from the source tree.
"""

import importlib.util
import pathlib
import types

import ml_collections


def load_module(path: str | pathlib.Path) -> types.ModuleType:
  """Imports the Python file at `path`; FileNotFoundError (naming the path) when it does not exist."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"Config file {str(path)!r} does not exist (give a path like configs/cifar100_vgg.py).")
  spec = importlib.util.spec_from_file_location(f"svdkd_configs_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(spec: str | pathlib.Path) -> ml_collections.ConfigDict:
  """`get_config(variant)` of a `path[:variant]` spec, as `--config path[:variant]` would give it."""
  path, _, variant = str(spec).partition(":")
  module = load_module(path)
  return module.get_config(variant) if variant else module.get_config()
