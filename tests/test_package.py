"""The installed distribution is this package: its metadata version is `svdkd_jax.__version__`, written once, and it
declares the console scripts the README names."""

import ast
import configparser
import importlib.metadata
import importlib.util
import pathlib

import svdkd_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = {"svdkd-train": "svdkd_jax.main:run", "svdkd-quickstart": "svdkd_jax.quickstart:run",
           "svdkd-convert": "svdkd_jax.data.convert:run"}


def test_installed_metadata_matches_the_package_version():
  # Fails on a stale install (an old build on the path): reinstall with pip.
  assert importlib.metadata.version("svdkd_jax") == svdkd_jax.__version__


def test_version_is_written_once():
  setup = configparser.ConfigParser()
  setup.read(ROOT / "setup.cfg")
  assert setup["metadata"]["version"] == "attr: svdkd_jax.__version__"


def test_console_scripts_are_declared_and_resolve():
  setup = configparser.ConfigParser()
  setup.read(ROOT / "setup.cfg")
  declared = dict(line.split(" = ") for line in setup["options.entry_points"]["console_scripts"].strip().splitlines())
  assert declared == SCRIPTS
  installed = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")
               if e.dist is not None and e.dist.name == "svdkd_jax"}
  assert installed == SCRIPTS, "stale install: reinstall with pip to get the declared console scripts"
  for target in SCRIPTS.values():  # read, not imported: main and quickstart define the same absl flags
    module, name = target.split(":")
    tree = ast.parse(pathlib.Path(importlib.util.find_spec(module).origin).read_text())
    assert any(isinstance(node, ast.FunctionDef) and node.name == name and not node.args.args for node in tree.body), (
        f"{target} is not a function without arguments")
