"""The command line: clean errors, and a run killed with SIGKILL / stopped with SIGTERM resumes to the same result."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from svdkd_jax import metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The tiny student of tests/conftest.py: 9 steps per epoch, 2 epochs, a checkpoint every 2 steps.
ARGS = ["-m", "svdkd_jax.main", "--config", "configs/quickstart.py:student", "--config.data.class_subset=2",
        "--config.data.num_classes=2", "--config.data.augment=sskd", "--config.model.width=0.125",
        "--config.train.batch_size=32", "--config.train.eval_batch_size=64", "--config.train.epochs=2",
        "--config.optim.boundaries=(1,)", "--config.train.log_every_steps=1",
        "--config.train.checkpoint_every_steps=2"]


def _env():
  return {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTEST_CURRENT_TEST")}


def _main(workdir, *extra, timeout=900):
  return subprocess.run([sys.executable, *ARGS, "--workdir", str(workdir), *extra], env=_env(), cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def _start(workdir):
  return subprocess.Popen([sys.executable, *ARGS, "--workdir", str(workdir)], env=_env(), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_step(proc, workdir, step, timeout=900):
  """Waits until metrics.jsonl has a training row at `step` or later (training is under way)."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  t0 = time.time()
  while time.time() - t0 < timeout:
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    if path.exists():
      rows = metrics.read_jsonl(path)  # the trainer may be half-way through writing the last line
      if any(r["step"] >= step and "loss" in r for r in rows):
        return
    time.sleep(0.2)
  raise TimeoutError(f"no step {step} in {path} after {timeout}s")


def test_unknown_override_is_a_clean_error(tmp_path):
  proc = _main(tmp_path, "--config.train.epochz=3", timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: Unknown config key 'train.epochz'. Did you mean 'train.epochs'? Valid keys of train: batch_size, "
      "ce_reduction, checkpoint_every_steps, epochs, eval_batch_size, keep_checkpoints, log_every_steps, max_steps."]
  assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_missing_teacher_is_a_clean_error(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "svdkd_jax.main", "--config", "configs/quickstart.py:kd_svd",
                         "--workdir", str(tmp_path / "s"), f"--config.teacher.workdir={tmp_path / 'none'}"],
                        env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "Train the teacher first" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_sigkill_and_sigterm_then_resume_matches_uninterrupted(tmp_path, final_params):
  full = _main(tmp_path / "full")
  assert full.returncode == 0, full.stderr[-3000:]
  run = tmp_path / "run"
  # SIGKILL mid-epoch: everything after the last checkpoint is lost.
  proc = _start(run)
  _wait_for_step(proc, run, 5)
  proc.kill()
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  # Restart; SIGTERM in epoch 2: the run saves a checkpoint at the step it reached, then exits with 128 + 15.
  proc = _start(run)
  _wait_for_step(proc, run, 11)
  proc.send_signal(signal.SIGTERM)
  proc.communicate(timeout=600)
  assert proc.returncode == 128 + signal.SIGTERM
  summary = json.loads((run / "summary.json").read_text())
  assert summary["interrupted"] == signal.SIGTERM and not summary["complete"]
  assert (run / "checkpoints" / str(summary["step"])).exists()
  # Restart to the end.
  done = _main(run)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads((run / "summary.json").read_text())["complete"]
  a, b = final_params(str(tmp_path / "full")), final_params(str(run))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)
