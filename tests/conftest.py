"""Fixtures shared by the end-to-end tests: the tiny training problem and a reader of a run's checkpointed parameters.

`pytest -m "not slow"` skips the long end-to-end tests (marked `slow`); `pytest tests` runs everything. The tests
marked `real_data` read the real archives in the data root; the end of the log names those that ran and those that
did not.
"""

import os
import tempfile

# One persistent compilation cache for the whole run, shared by the xdist workers and inherited by the processes the
# end-to-end tests start: they compile the same tiny steps many times over.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"svdkd_jax_tests_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

from flax import nnx  # noqa: E402
import jax  # noqa: E402
import ml_collections
import numpy as np
import pytest

from svdkd_jax import checkpoint
from svdkd_jax import models
from svdkd_jax import recipes


@pytest.fixture(autouse=True)
def _release_compiled_programs():
  """Drops every compiled program after each test. An xdist worker compiles hundreds of KD-SVD steps, each
  holding hundreds of memory mappings for its kernels (the unrolled Lanczos steps most), and a process that reaches
  Linux's `vm.max_map_count` (65530) aborts inside the compiler; recompiles come from the persistent cache above."""
  yield
  jax.clear_caches()


def tiny(variant: str = "teacher", **overrides) -> ml_collections.ConfigDict:
  """The quickstart's `variant` on 2 digit classes at 32x32, VGG pair at width 1/8: ~290 training images, 9 steps
  per epoch of 32, 72 eval images (2 padded batches of 64), 1 epoch. `section__key=value` overrides."""
  config = recipes.quickstart(variant)
  config.data.class_subset = 2
  config.data.num_classes = 2
  config.data.image_size = 32
  config.data.augment = "flip_rotate_crop"
  config.model.width = config.teacher.width = 0.125
  config.train.batch_size = 32
  config.train.eval_batch_size = 64
  config.train.epochs = 1
  config.optim.boundaries = (1,)
  config.train.log_every_steps = 2
  config.train.checkpoint_every_steps = 3
  config.train.keep_checkpoints = 2
  for key, value in overrides.items():
    section, name = key.split("__")
    config[section][name] = value
  return config


def read_params(workdir: str, step: int | None = None) -> dict:
  """The params of checkpoint `step` (default: the latest) of the run in `workdir`, as host numpy arrays."""
  if step is None:
    manager = checkpoint.create_manager(os.path.join(workdir, "checkpoints"), keep=1, read_only=True)
    step = manager.latest_step()
    manager.close()
  path = os.path.join(workdir, "checkpoints", str(step), "model")
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # The run may have had other devices/processes.
  with checkpoint.ocp.StandardCheckpointer() as ckptr:
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                          ckptr.metadata(path).item_metadata.tree)
    restored = ckptr.restore(path, target)
  return jax.tree.map(np.asarray, restored["params"])


def network_shapes(name: str, width: float, num_classes: int, *, image_size: int = 32,
                   dropout: float | None = None) -> dict:
  """A network's `{"params", "rest"}` (as `networks.build` lays them out) as `jax.ShapeDtypeStruct`s: nothing is
  initialised."""
  options = {"input_size": image_size, "dropout": dropout}
  options = {k: v for k, v in options.items() if k in models.options(name) and v is not None}
  module = nnx.eval_shape(lambda: models.create(name, num_classes, rngs=nnx.Rngs(0), width=width, **options))
  module.eval()
  _, params, rest = nnx.split(module, nnx.Param, ...)
  return {"params": params, "rest": rest}


def pytest_terminal_summary(terminalreporter) -> None:
  """Names the `real_data` tests that ran (passed or failed) and those skipped, with the data root they looked in."""
  from svdkd_jax.data import archives  # pylint: disable=g-import-not-at-top
  outcomes = {}
  for outcome in ("passed", "failed", "skipped"):
    for report in terminalreporter.stats.get(outcome, []):
      if "real_data" in getattr(report, "keywords", {}) and (report.when == "call" or outcome == "skipped"):
        outcomes.setdefault(report.nodeid, outcome)
  if outcomes:
    ran = sum(outcome != "skipped" for outcome in outcomes.values())
    terminalreporter.section(f"real data in {archives.data_root()}: {ran} of {len(outcomes)} tests ran")
    for nodeid, outcome in sorted(outcomes.items()):
      terminalreporter.write_line(f"{outcome.upper()} {nodeid}")


@pytest.fixture(scope="session")
def abstract_variables():
  """`abstract_variables(name, width, num_classes, image_size=32, dropout=None)` (see `network_shapes`)."""
  return network_shapes


@pytest.fixture(scope="session")
def tiny_config():
  """`tiny_config(variant="teacher", section__key=value, ...)`: the tiny problem's config (see `tiny`)."""
  return tiny


@pytest.fixture(scope="session")
def final_params():
  """`final_params(workdir, step=None)`: a run's checkpointed params (see `read_params`)."""
  return read_params


@pytest.fixture
def in_memory_gcs(tmp_path, monkeypatch):
  """gs:// paths go to an in-memory fsspec file system standing in for GCS; a builtin open() of a URL fails the test
  (everything must go through etils.epath). The working directory is `tmp_path`."""
  import builtins  # pylint: disable=g-import-not-at-top
  import fsspec  # pylint: disable=g-import-not-at-top
  from etils.epath import backend  # pylint: disable=g-import-not-at-top
  memory = fsspec.filesystem("memory")
  monkeypatch.setattr(backend._FileSystemSpecBackend, "fs", lambda self, path: memory)
  real_open = builtins.open

  def local_open(file, *args, **kwargs):
    assert "://" not in os.fspath(file) if isinstance(file, (str, os.PathLike)) else True, file
    return real_open(file, *args, **kwargs)

  monkeypatch.setattr(builtins, "open", local_open)
  monkeypatch.chdir(tmp_path)
  return memory
