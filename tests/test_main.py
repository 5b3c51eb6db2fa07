"""The command line, end to end: one-line errors (exit status 2, no traceback) for what a user can get wrong, one
run per workdir, and nothing lost when a run is killed, resumes past a damaged checkpoint or is extended."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from svdkd_jax import config_files
from svdkd_jax import metrics
from svdkd_jax import workdir_lock
from test_checkpoint_damage import UNREADABLE, damage  # pylint: disable=g-bad-import-order

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The tiny student of tests/conftest.py: 9 steps per epoch, 2 epochs, a checkpoint every 2 steps.
ARGS = ["-m", "svdkd_jax.main", "--config", "configs/quickstart.py:student", "--config.data.class_subset=2",
        "--config.data.num_classes=2", "--config.data.augment=sskd", "--config.model.width=0.125",
        "--config.train.batch_size=32", "--config.train.eval_batch_size=64", "--config.train.epochs=2",
        "--config.optim.boundaries=(1,)", "--config.train.log_every_steps=1",
        "--config.train.checkpoint_every_steps=2"]
# An absl log line's prefix, e.g. "W1201 14:36:44.857290 140694881962880 checkpoint.py:265] ".
LOG = r"[IWE]\d{{4}} \d\d:\d\d:\d\d\.\d+ +\d+ {file}:\d+\] "


def _env():
  return {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTEST_CURRENT_TEST",
                                                           workdir_lock.INHERIT_ENV, "SVDKD_TRACEBACK")}


def _argv(workdir, extra) -> list[str]:
  """`python ARGS --workdir WORKDIR EXTRA`, where an `--config.KEY=` of EXTRA replaces the one of ARGS."""
  keys = {a.split("=", 1)[0] for a in extra if a.startswith("--config.")}
  return [sys.executable, *(a for a in ARGS if a.split("=", 1)[0] not in keys), "--workdir", str(workdir), *extra]


def _main(workdir, *extra, timeout=900):
  return subprocess.run(_argv(workdir, extra), env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _start(workdir, *extra, log=None):
  """Starts a run in the background; its stderr goes to the file `log` (or to a pipe)."""
  if log is None:
    return subprocess.Popen(_argv(workdir, extra), env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
  with open(log, "w") as f:  # the child keeps its own copy
    return subprocess.Popen(_argv(workdir, extra), env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=f)


def _wait_for_step(proc, workdir, step, timeout=900):
  """Waits until metrics.jsonl has a training row at `step` or later (training is under way)."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  t0 = time.time()
  while time.time() - t0 < timeout:
    assert proc.poll() is None, proc.stderr.read()[-3000:] if proc.stderr else proc.returncode
    if path.exists():
      rows = metrics.read_jsonl(path)  # the trainer may be half-way through writing the last line
      if any(r["step"] >= step and "loss" in r for r in rows):
        return
    time.sleep(0.2)
  raise TimeoutError(f"no step {step} in {path} after {timeout}s")


def _errors(proc) -> list[str]:
  """The `error:` lines of a finished run's stderr, after checking that it printed no traceback."""
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def _train_steps(workdir) -> list[int]:
  return [r["step"] for r in metrics.read_jsonl(pathlib.Path(workdir) / metrics.METRICS_FILE) if "loss" in r]


def _steps(workdir) -> list[str]:
  return sorted(p.name for p in (pathlib.Path(workdir) / "checkpoints").iterdir())


def _files(root) -> dict:
  """Every file under `root` with its bytes, but the workdir lock (every run, refused or not, opens it)."""
  root = pathlib.Path(root)
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
          if p.is_file() and p.name != workdir_lock.LOCK_FILE}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """ARGS run uninterrupted to the end (2 epochs, 18 steps)."""
  workdir = tmp_path_factory.mktemp("full")
  proc = _main(workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


@pytest.mark.parametrize("extra,error", [
    (("--config.train.epochs=abc",), "error: flag --config.train.epochs=abc: invalid literal for int() with base 10: "
                                     "'abc'"),
    (("--config.model.taps=features.0,features.1",), "error: flag --config.model.taps=features.0,features.1: Error "
                                                     "while parsing string: features.0,features.1 as tuple."),
])
def test_a_value_that_does_not_parse_is_one_line_before_anything_is_written(tmp_path, extra, error):
  """absl's own report ("FATAL Flags parsing error", exit 1) becomes the entry points' one `error:` line, exit 2."""
  proc = _main(tmp_path / "run", *extra, timeout=300)
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(error), proc.stderr
  assert not (tmp_path / "run").exists()


def test_unknown_override_is_a_clean_error(tmp_path):
  proc = _main(tmp_path, "--config.train.epochz=3", timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: Unknown config key 'train.epochz'. Did you mean 'train.epochs'? Valid keys of train: batch_size, "
      "ce_reduction, checkpoint_every_steps, compute_dtype, epochs, eval_batch_size, keep_checkpoints, log_every_steps, max_steps."]
  assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_missing_teacher_is_a_clean_error(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "svdkd_jax.main", "--config", "configs/quickstart.py:kd_svd_exact",
                         "--workdir", str(tmp_path / "s"), f"--config.teacher.workdir={tmp_path / 'none'}"],
                        env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "Train the teacher first" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_config_file_and_unknown_variant_are_one_line(tmp_path):
  """ml_collections loads --config while absl parses the flags: unchecked, a missing file surfaces later as a
  traceback ("Configuration is not available because of an earlier failure"), a bad variant as absl's usage error
  wrapping one."""
  proc = subprocess.run([sys.executable, "-m", "svdkd_jax.main", "--config", "configs/nope.py", "--workdir",
                         str(tmp_path / "x")], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.splitlines() == [
      "error: Config file 'configs/nope.py' does not exist (give a path like configs/cifar100_vgg.py)."]
  proc = subprocess.run([sys.executable, "-m", "svdkd_jax.main", "--config=configs/cifar100_vgg.py:bogus",
                         "--workdir", str(tmp_path / "x"), "--config.train.epochs=3"], env=_env(), cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert len(proc.stderr.splitlines()) == 1 and re.fullmatch(
      r"error: Bad config argument 'bogus': unknown token 'bogus'\. Valid tokens \(comma-separated\): one variant of "
      r"teacher, student, kd_svd, .*, attention_transfer, dkd; smoke\.", proc.stderr.splitlines()[0]), proc.stderr
  assert not (tmp_path / "x").exists()
  proc = subprocess.run([sys.executable, "-m", "svdkd_jax.main", "--config=configs/default.py:kd_svd", "--workdir",
                         str(tmp_path / "x")], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.splitlines() == [
      "error: Config file 'configs/default.py' takes no argument after ':' (got 'kd_svd'); give --config "
      "configs/default.py."]
  assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("override,message", [
    ("--config.data.augment=bogus", "config.data.augment='bogus'; valid: flip_rotate_crop, flip_crop, none."),
    ("--config.combine.rule=poster_rule",
     "config.combine.rule='poster_rule'; valid: clip_per_tensor, rescale_per_tensor, sum, clip_global_norm."),
    ("--config.optim.boundaries=(2,1)", "config.optim.boundaries=(2, 1) must be non-negative, strictly increasing "
     "epochs."),
    ("--config.distill.temperature=2.0", "config.distill.temperature=2.0 is not read by distill.method='none' (it "
     "has no options): leave it at its default 4.0, or choose a method that reads it."),
])
def test_bad_config_value_is_one_line_and_touches_nothing(tmp_path, override, message):
  """A bad value is refused with one line before the workdir exists, so the corrected command is not refused as
  "a run with a different config" (test_bad_config_value_then_the_fix_trains trains it)."""
  proc = _main(tmp_path / "run", override, timeout=300)
  assert proc.returncode == 2
  assert _errors(proc) == [f"error: {message}"]
  assert "train.py" not in proc.stderr and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_bad_config_value_then_the_fix_trains(tmp_path):
  run = tmp_path / "run"
  refused = _main(run, "--config.data.augment=bogus", timeout=300)
  assert refused.returncode == 2 and _errors(refused) == [
      "error: config.data.augment='bogus'; valid: flip_rotate_crop, flip_crop, none."]
  fixed = _main(run, "--config.train.epochs=1", "--config.train.max_steps=2")
  assert fixed.returncode == 0, fixed.stderr[-3000:]
  assert _train_steps(run) == [1, 2]
  assert json.loads((run / "config.json").read_text())["data"]["augment"] == "flip_rotate_crop"  # ARGS' "sskd"


@pytest.mark.slow
def test_second_run_on_a_workdir_in_use_is_refused(tmp_path, final_params):
  """Two trainers on one workdir: the second is refused with the first one's name and touches nothing; the first,
  killed with SIGKILL, leaves no stale lock, and its run resumes."""
  run, long = tmp_path / "run", "--config.train.epochs=100"
  first = _start(run, long, log=tmp_path / "first.log")
  try:
    _wait_for_step(first, run, 3)
    second = _main(run, long, timeout=300)
  finally:
    first.kill()
    first.wait()
  assert first.returncode == -signal.SIGKILL  # still training when the second one started and stopped
  holder = json.loads((run / workdir_lock.LOCK_FILE).read_text())
  assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
  assert second.returncode == 2
  assert _errors(second) == [
      f"error: {run} is in use by another run (pid {first.pid} on {holder['host']} since {holder['since']}: "
      f"{holder['command']}). Wait for it to finish or stop it; two runs on one workdir would overwrite each other's "
      "checkpoints."]
  assert "train.py" not in second.stderr  # refused before the trainer started
  # The OS dropped the killed run's lock: the same command resumes from its last checkpoint.
  last = max(int(name) for name in _steps(run) if name.isdigit())
  again = _main(run, long, f"--config.train.max_steps={last + 2}")
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"Resumed from {run / 'checkpoints'} at step {last}." in again.stderr
  assert _train_steps(run) == list(range(1, last + 3))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(final_params(str(run), last + 2)))


@pytest.mark.slow
def test_trainer_takes_over_the_lock_of_the_table_runner(tmp_path, monkeypatch):
  """experiments/run_table.py locks the workdir, then starts the trainer with the lock handed down: the trainer
  trains (instead of being refused by its own runner), and the lock is free afterwards."""
  run_table = config_files.load_module(ROOT / "experiments" / "run_table.py")
  monkeypatch.chdir(ROOT)
  for name in ("XLA_FLAGS", "PYTEST_CURRENT_TEST", workdir_lock.INHERIT_ENV):
    monkeypatch.delenv(name, raising=False)
  run = run_table.Run("quickstart", "configs/quickstart.py", "student", "student", 0, str(tmp_path / "run"))
  overrides = [a[len("--config."):] for a in ARGS if a.startswith("--config.")] + ["train.max_steps=2"]
  rc = run_table.subprocess_runner(run, overrides)
  log = (tmp_path / "run" / "run.log").read_text()
  assert rc == 0, log[-3000:]
  assert "in use by another run" not in log and "Traceback" not in log
  assert metrics.read_summary(run.workdir)["step"] == 2
  assert workdir_lock.holder(run.workdir) is None


@pytest.mark.slow
def test_resume_past_a_damaged_newest_checkpoint(tmp_path, final_params):
  """The newest checkpoint is damaged: the run resumes from the one before with one warning naming it, keeps the
  damaged files as <step>.unreadable, and logs every step once."""
  run, keep = tmp_path / "run", "--config.train.keep_checkpoints=3"
  first = _main(run, keep, "--config.train.max_steps=4")
  assert first.returncode == 0, first.stderr[-3000:]
  assert _steps(run) == ["2", "4"]
  damage(run / "checkpoints" / "4")
  damaged = _files(run / "checkpoints" / "4")
  again = _main(run, keep, "--config.train.max_steps=6")
  assert again.returncode == 0, again.stderr[-3000:]
  assert _errors(again) == []
  kept = run / "checkpoints" / "4.unreadable"
  warnings = [line for line in again.stderr.splitlines() if "Resuming from step" in line]
  assert len(warnings) == 1 and re.fullmatch(
      LOG.format(file="checkpoint.py") + UNREADABLE.format(dir=re.escape(str(run / "checkpoints" / "4")))
      + re.escape(f" Resuming from step 2 instead; the damaged checkpoint is kept as {kept}."), warnings[0]), warnings
  assert _files(kept) == damaged
  assert _steps(run) == ["2", "4", "4.unreadable", "6"]
  for step in (2, 4, 6):  # every checkpoint restores
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(final_params(str(run), step)))
  assert _train_steps(run) == [1, 2, 3, 4, 5, 6]
  assert metrics.read_summary(str(run))["step"] == 6


@pytest.mark.slow
def test_more_epochs_extend_a_finished_run(tmp_path, full_run, final_params):
  """A complete 1-epoch run rerun with train.epochs=2 continues to 2 epochs, even when killed on the way, and ends
  with the parameters of a run started with 2 epochs. Changing the boundaries with the epochs is refused."""
  run = tmp_path / "run"
  one = _main(run, "--config.train.epochs=1")
  assert one.returncode == 0, one.stderr[-3000:]
  before = _files(run)
  refused = _main(run, "--config.train.epochs=3", "--config.optim.boundaries=(2,)")
  assert refused.returncode == 2
  assert _errors(refused) == [
      f"error: {run} holds a run with a different config (optim.boundaries: [1] -> [2]; train.epochs: 1 -> 3). Only "
      "train.epochs alone may grow to extend a run; here optim.boundaries changed with it. To extend it on the "
      "schedule it was trained with, also pass --config.optim.boundaries='(1,)'. Use another --workdir, or pass "
      "--overwrite to delete that run and start again."]
  assert _files(run) == before
  # Extended, and killed on the way: its summary.json still says complete (for 1 epoch).
  log = tmp_path / "extend.log"
  proc = _start(run, "--config.train.epochs=2", log=log)
  _wait_for_step(proc, run, 12)
  proc.kill()
  proc.wait()
  lines = [line for line in log.read_text().splitlines() if "Extending" in line]
  assert len(lines) == 1 and re.fullmatch(LOG.format(file="workdir.py") + re.escape(
      f"Extending the run in {run} from 1 to 2 epochs: it continues from its last checkpoint."), lines[0]), lines
  assert metrics.read_summary(str(run))["complete"]
  # The same command again finishes it.
  done = _main(run, "--config.train.epochs=2")
  assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
  summary = metrics.read_summary(str(run))
  assert (summary["complete"], summary["step"], summary["total_steps"], summary["epochs"]) == (True, 18, 18, 2)
  assert _train_steps(run) == list(range(1, 19))
  jax.tree.map(np.testing.assert_array_equal, final_params(str(full_run)), final_params(str(run)))


@pytest.mark.slow
def test_non_finite_loss_before_any_checkpoint(tmp_path):
  run = tmp_path / "run"
  proc = _main(run, "--config.optim.learning_rate=1e30", "--config.train.checkpoint_every_steps=100")
  assert proc.returncode == 2
  errors = _errors(proc)
  assert len(errors) == 1 and re.fullmatch(
      r"error: Non-finite loss \([^)]+\) or parameters \(norm [^)]+\) at step \d \(epoch 0\); stopped\. There is no "
      r"checkpoint yet, so a rerun starts from scratch\. Lower optim\.learning_rate or check the data\.",
      errors[0]), errors
  assert not (run / "checkpoints").exists() or not _steps(run)


@pytest.mark.slow
def test_damaged_config_json_is_one_line(tmp_path):
  run = tmp_path / "run"
  (run / "checkpoints" / "9").mkdir(parents=True)
  (run / "checkpoints" / "9" / "x").write_text("weights")
  (run / "metrics.jsonl").write_text('{"step": 9, "loss": 0.5}\n')
  (run / "config.json").write_text('{"seed": 0, "mod')  # cut short
  before = _files(run)
  proc = _main(run)
  assert proc.returncode == 2
  assert _errors(proc) == [
      f"error: {run / 'config.json'} is damaged (not valid JSON), so this workdir's run cannot be checked against the "
      "config: restore it, or pass --overwrite to start the run again."]
  assert _files(run) == before


@pytest.mark.slow
def test_sigkill_and_sigterm_then_resume_matches_uninterrupted(tmp_path, full_run, final_params):
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
  a, b = final_params(str(full_run)), final_params(str(run))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)


# The disk fills up at the save of step 6: from then on, every file orbax writes into a checkpoint's temporary folder
# through etils.epath (the JSON items: meta, data) fails with ENOSPC, as on a full disk.
FULL_DISK = r"""
import errno, os, re, sys
from etils.epath import backend
real_open = backend._OsPathBackend.open

def open_on_full_disk(self, path, mode):
  step = re.search(r"/(\d+)\.orbax-checkpoint-tmp/", os.fspath(path))
  if "w" in mode and step and int(step.group(1)) >= 6:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
  return real_open(self, path, mode)

backend._OsPathBackend.open = open_on_full_disk
from svdkd_jax import main
sys.argv[0] = "svdkd_jax.main"
main.run()
"""


@pytest.mark.slow
def test_full_disk_during_a_save_is_one_line_then_resume_matches_uninterrupted(tmp_path, full_run, final_params):
  """A save that fails with ENOSPC stops the run with one line naming the file and the space a checkpoint needs (no
  tracebacks from orbax's writer threads); a rerun ignores the half-written checkpoint and resumes exactly."""
  run, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
  argv = _argv(run, [])
  proc = subprocess.run([argv[0], "-c", FULL_DISK, *argv[3:]], env=_env(), cwd=ROOT, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = _errors(proc)  # (and no traceback)
  assert len(errors) == 1 and re.fullmatch(
      re.escape(f"error: No space left on device for a checkpoint in {ckpts} (") + r"\d+\.\d MB free\): writing "
      + re.escape(f"{ckpts}/6.orbax-checkpoint-tmp/") + r"\S+ failed\. A checkpoint of this run needs about 0\.\d MB; "
      r"free that much there, then rerun the same command to resume from step 4\.", errors[0]), errors
  assert "6.orbax-checkpoint-tmp" in _steps(run) and "6" not in _steps(run)
  done = _main(run)
  assert done.returncode == 0, done.stderr[-3000:]
  assert not any(name.endswith("orbax-checkpoint-tmp") for name in _steps(run))
  assert _train_steps(run) == list(range(1, 19))  # every step logged once
  a, b = final_params(str(full_run)), final_params(str(run))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)


@pytest.mark.slow
def test_quickstart_refuses_a_workdir_in_use(tmp_path):
  """The quickstart locks each run's workdir like the entry point: a held one is refused with one line."""
  from svdkd_jax import workdir_lock
  with workdir_lock.acquire(str(tmp_path / "teacher")):
    proc = subprocess.run([sys.executable, "-m", "svdkd_jax.quickstart", "--workdir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  line = proc.stderr.strip().splitlines()[-1]
  assert re.fullmatch(rf"error: {re.escape(str(tmp_path / 'teacher'))} is in use by another run \(pid {os.getpid()} "
                      r"on .*\)\. Wait for it to finish or stop it; two runs on one workdir would overwrite each "
                      r"other's checkpoints\.", line), line
  assert not (tmp_path / "teacher" / "checkpoints").exists()
