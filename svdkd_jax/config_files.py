"""Config files and the command line that names them.

`load_module(path)` imports a Python file by path: config files (`configs/*.py` is a folder of files, not a
package, as ml_collections' `--config` flag expects) and the experiments scripts that tests and other scripts
import. `get_config("FILE.py:ARG")` is the config `--config FILE.py:ARG` gives. `parse_flags` is absl's flag parsing
for the entry points, with what absl reports badly (a config file that does not load, an override of a key the
schema lacks, a value that does not parse, a required flag left out) as one `error:` line.

Config files themselves import `svdkd_jax.recipes`, never each other; the package reads nothing from the source tree.
"""

import importlib.util
import inspect
import pathlib
import types

from absl import flags
import ml_collections

from svdkd_jax import config as config_lib
from svdkd_jax import user_errors


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
  """`get_config(arg)` of a `path[:arg]` spec, as `--config path[:arg]` would give it; a one-line ValueError when
  the file's `get_config` takes no argument but the spec gives one."""
  path, _, arg = str(spec).partition(":")
  module = load_module(path)
  if not arg:
    return module.get_config()
  if not inspect.signature(module.get_config).parameters:
    raise ValueError(f"Config file {path!r} takes no argument after ':' (got {arg!r}); give --config {path}.")
  return module.get_config(arg)


def check_command_line(argv: list[str]) -> None:
  """Raises a one-line FileNotFoundError or ValueError if `argv`'s `--config FILE[:ARG]` does not load (a missing
  file, an argument its file rejects) or an override `--config.KEY=VALUE` names a key the schema lacks.

  ml_collections loads the file while absl parses the flags and reports these as a traceback (or, for a missing
  file, not until the config is first read); checking first gives the file's and the schema's own messages.
  """
  spec, keys = None, []
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith("--config="):
      spec = arg[len("--config="):]
    elif arg == "--config" and i + 1 < len(argv):
      spec = argv[i + 1]
    elif arg.startswith("--config."):
      keys.append(arg[len("--config."):].split("=", 1)[0])
  if spec is not None:
    get_config(spec)
  for key in keys:
    config_lib.check_key(key)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (an `app.run` flags_parser) after `check_command_line`. Errors of either (a value that does
  not parse, a required flag left out) exit with status 2 and one `error: ...` line (SVDKD_TRACEBACK=1 shows the
  trace instead)."""
  with user_errors.one_line():
    check_command_line(argv)
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:  # absl would print "FATAL Flags parsing error" and exit 1
      raise ValueError(str(e)) from None
