"""Damaged checkpoints: named as unreadable (not as a network mismatch), skipped for the newest readable one when
resuming, kept for inspection, and no asyncio tracebacks at exit."""

import logging
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svdkd_jax import checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]


def model_at(step: int) -> dict:
  return {"params": {"w": jnp.full((64, 64), float(step)), "b": jnp.arange(8.0) + step}, "rest": {"c": jnp.zeros(3)}}


def opt_at(step: int) -> dict:
  return {"opt_state": {"mu": jnp.ones((64, 64)) * step}, "step": jnp.array(step)}


def abstract(tree):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def write_checkpoints(directory, steps=(2, 4)):
  manager = checkpoint.create_manager(str(directory), keep=3)
  for step in steps:
    checkpoint.save(manager, step, model=model_at(step), opt=opt_at(step), meta={"step": step})
  manager.wait_until_finished()
  return manager


def damage(step_dir: pathlib.Path) -> None:
  """Cuts every file of the model's OCDBT database short (what a disk filling up mid-copy leaves)."""
  files = list((step_dir / "model" / "d").iterdir())
  assert files
  for f in files:
    with open(f, "r+b") as fh:
      fh.truncate(10)


UNREADABLE = (r"Checkpoint {dir} is unreadable: model/ \(ValueError: OUT_OF_RANGE: Error reading Byte range \[0, "
              r"\d+\) of local file \"{dir}/model/d/[0-9a-f]+\": Requested byte range \[0, \d+\) is not valid for "
              r"value of size 10\)\.")


def test_resume_skips_a_damaged_newest_checkpoint(tmp_path, caplog):
  manager = write_checkpoints(tmp_path)
  step4 = tmp_path / "4"
  damage(step4)
  with pytest.raises(checkpoint.CheckpointUnreadableError) as e:
    checkpoint.restore(manager, 4, model=abstract(model_at(0)), opt=abstract(opt_at(0)))
  assert re.fullmatch(UNREADABLE.format(dir=re.escape(str(step4))), str(e.value)), str(e.value)
  damaged_files = sorted((p.relative_to(step4), p.read_bytes()) for p in step4.rglob("*") if p.is_file())
  with caplog.at_level(logging.WARNING):
    step, model, opt, meta = checkpoint.restore_latest(manager, model=abstract(model_at(0)), opt=abstract(opt_at(0)))
  assert step == 2 and meta == {"step": 2}
  jax.tree.map(np.testing.assert_array_equal, (model, opt), (model_at(2), opt_at(2)))
  warning = [r.getMessage() for r in caplog.records if "Resuming from step" in r.getMessage()]
  assert len(warning) == 1 and re.fullmatch(
      UNREADABLE.format(dir=re.escape(str(step4))) + re.escape(
          f" Resuming from step 2 instead; the damaged checkpoint is kept as {tmp_path / '4.unreadable'}."),
      warning[0]), warning
  # Nothing lost: the damaged files are kept as they were; orbax no longer sees them as a step.
  kept = tmp_path / "4.unreadable"
  assert sorted((p.relative_to(kept), p.read_bytes()) for p in kept.rglob("*") if p.is_file()) == damaged_files
  assert manager.all_steps() == [2]
  # The resumed run saves step 4 again and keeps going.
  checkpoint.save(manager, 4, model=model_at(4), opt=opt_at(4), meta={"step": 4})
  manager.wait_until_finished()
  assert checkpoint.restore_latest(manager, model=abstract(model_at(0)), opt=abstract(opt_at(0)))[0] == 4
  manager.close()


def test_every_checkpoint_damaged_and_structure_mismatch(tmp_path):
  manager = write_checkpoints(tmp_path, steps=(2,))
  with pytest.raises(checkpoint.CheckpointMismatchError) as e:
    other = {**model_at(0), "params": {"w": jnp.zeros((32, 64)), "x": jnp.zeros(2)}}
    checkpoint.restore_latest(manager, model=abstract(other), opt=abstract(opt_at(0)))
  assert str(e.value) == (f"Checkpoint {tmp_path / '2' / 'model'} does not match what it is restored into: params.x "
                          "missing; params.b unexpected; params.w is [64, 64], expected [32, 64].")
  damage(tmp_path / "2")
  with pytest.raises(checkpoint.CheckpointUnreadableError) as e:
    checkpoint.restore_latest(manager, model=abstract(model_at(0)), opt=abstract(opt_at(0)))
  assert str(e.value).endswith(f" No checkpoint of this run is readable (steps 2): restore {tmp_path} from a copy, "
                               "or move it away to train from scratch.")
  assert (tmp_path / "2").is_dir()  # left in place: nothing to resume from, the user decides
  # A teacher checkpoint: the same error, with the fix for a teacher.
  with pytest.raises(checkpoint.CheckpointUnreadableError, match=r"is unreadable: model/ .* Point "
                     r"config.teacher.checkpoint at another step of that run, or train the teacher again.$"):
    checkpoint.restore_model(tmp_path / "2", abstract(model_at(0)))
  manager.close()


SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[2])
import jax.numpy as jnp
import test_checkpoint_damage as t
from svdkd_jax import checkpoint
# Many arrays, so that many reads are in flight when the first one fails.
t.model_at = lambda step: {"params": {f"w{i}": jnp.full((128, 128), float(step + i)) for i in range(40)}}
manager = t.write_checkpoints(sys.argv[1])
t.damage(t.pathlib.Path(sys.argv[1]) / "4")
for attempt in range(10):  # the stray completions are a race: without the fix, some of 10 attempts print them
  try:  # as train.py does, with the manager still open
    checkpoint.restore(manager, 4, model=t.abstract(t.model_at(0)), opt=t.abstract(t.opt_at(0)))
  except ValueError as e:
    error = e
print(f"error: {error}", file=sys.stderr)
sys.exit(2)
"""


def test_no_tracebacks_at_exit(tmp_path):
  """Restoring a damaged step must not leave tensorstore reads in flight on orbax's closed event loop: their
  completions would print "RuntimeError: Event loop is closed" tracebacks until exit."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTEST_CURRENT_TEST")}
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(ROOT / "tests")], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and re.fullmatch("error: " + UNREADABLE.format(dir=re.escape(str(tmp_path / "4"))),
                                           errors[0]), errors
