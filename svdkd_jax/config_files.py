"""Loading config files (`configs/*.py`) by path: the one way every entry point and config file does it.

`configs/` is a folder of files, not a package (ml_collections' `--config` flag reads them by path), so a config
that builds on another (`configs/cpu_cifar10.py` on `configs/cifar100_vgg.py`) and the scripts that read them
(`train.py` for the schema in `configs/default.py`, the quickstart, the table runner, benchmarks, tests) import them
through this module.
"""

import importlib.util
import pathlib
import types

import ml_collections

# The source tree's configs folder (present in a clone or an editable install).
CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load_module(path: str | pathlib.Path) -> types.ModuleType:
  """Imports the config file at `path`; FileNotFoundError (naming the path) when it does not exist."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"Config file {str(path)!r} does not exist (give a path like configs/cifar100_vgg.py).")
  spec = importlib.util.spec_from_file_location(f"svdkd_configs_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling(name: str, file: str) -> types.ModuleType:
  """The config file `name`.py in the same folder as `file` (pass `__file__`)."""
  return load_module(pathlib.Path(file).resolve().with_name(f"{name}.py"))


def get_config(spec: str | pathlib.Path) -> ml_collections.ConfigDict:
  """`get_config(variant)` of a `path[:variant]` spec, as `--config path[:variant]` would give it."""
  path, _, variant = str(spec).partition(":")
  module = load_module(path)
  return module.get_config(variant) if variant else module.get_config()
