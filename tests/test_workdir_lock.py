"""One process per workdir: a second one is refused with the holder's name; a killed holder leaves no stale lock;
the table runner skips a busy workdir and hands its lock to the trainer it starts."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest

from svdkd_jax import config_files
from svdkd_jax import workdir_lock

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOLD = r"""
import sys, time
from svdkd_jax import workdir_lock
lock = workdir_lock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def _env():
  return {k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST", workdir_lock.INHERIT_ENV)}


@pytest.fixture
def holder(tmp_path):
  """Starts a process holding a lock on the workdir given; kills it (SIGKILL) at the end."""
  procs = []

  def start(workdir, script=HOLD, **kwargs):
    proc = subprocess.Popen([sys.executable, "-c", script, str(workdir)], cwd=ROOT, env=kwargs.pop("env", _env()),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    procs.append(proc)
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc

  yield start
  for proc in procs:
    proc.kill()
    proc.wait()


def _expected(workdir) -> str:
  info = json.loads((pathlib.Path(workdir) / workdir_lock.LOCK_FILE).read_text())
  return f"pid {info['pid']} on {info['host']} since {info['since']}: {info['command']}"


def test_second_acquirer_is_refused_and_a_killed_holder_frees_the_lock(tmp_path, holder):
  workdir = str(tmp_path / "run")
  proc = holder(workdir)
  with pytest.raises(workdir_lock.WorkdirLockedError) as e:
    workdir_lock.acquire(workdir)
  who = _expected(workdir)
  assert who.startswith(f"pid {proc.pid} on {socket.gethostname()} since ") and who.endswith(f": -c {workdir}")
  assert str(e.value) == (f"{workdir} is in use by another run ({who}). Wait for it to finish or stop it; two runs on "
                          "one workdir would overwrite each other's checkpoints.")
  assert "\n" not in str(e.value)
  assert workdir_lock.holder(workdir) == who
  proc.send_signal(signal.SIGKILL)  # no cleanup runs: the OS drops the lock with the process
  proc.wait()
  with workdir_lock.acquire(workdir) as lock:
    assert lock.active and json.loads(pathlib.Path(lock.path).read_text())["pid"] == os.getpid()
  assert workdir_lock.holder(workdir) is None


def test_trainer_adopts_the_lock_of_the_runner_that_started_it(tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lock.acquire(workdir) as lock:
    child = subprocess.Popen([sys.executable, "-c", HOLD, workdir], cwd=ROOT, env=lock.child_env(_env()),
                             pass_fds=(lock.fd,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
      assert child.stdout.readline().strip() == "held", child.stderr.read()  # not refused by its parent
      assert workdir_lock.holder(workdir).startswith(f"pid {child.pid} on ")  # others are told who trains
    finally:
      child.kill()
      child.wait()
  assert workdir_lock.holder(workdir) is None


def test_url_workdirs_are_not_locked(caplog):
  lock = workdir_lock.acquire("gs://bucket/run")
  assert not lock.active and "gs://bucket/run is a URL: it cannot be locked" in caplog.text
  lock.release()


def test_a_workdir_that_is_a_file_or_cannot_be_created_is_a_value_error(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(ValueError, match=r"^The workdir .*/file exists and is not a directory\.$"):
    workdir_lock.acquire(str(tmp_path / "file"))
  with pytest.raises(ValueError, match=r"^Cannot create the workdir .*/file/run: Not a directory\.$"):
    workdir_lock.acquire(str(tmp_path / "file" / "run"))


def test_table_runner_skips_a_busy_run(tmp_path, holder, capsys):
  """experiments/run_table.py's command line, with the teacher's workdir held by another process: no training is
  started there (nor for its students), the holder's files are untouched, and the reason is printed."""
  run_table = config_files.load_module(ROOT / "experiments" / "run_table.py")
  teacher = tmp_path / "quickstart" / "teacher" / "seed0"
  proc = holder(teacher)
  (teacher / "metrics.jsonl").write_text('{"step": 1}\n')
  before = {p.name: p.read_bytes() for p in teacher.iterdir()}
  rc = run_table.main(["--config", str(ROOT / "configs" / "quickstart.py"), "--root", str(tmp_path), "--variants",
                       "student", "--seeds", "0"])
  out = capsys.readouterr().out.splitlines()
  assert rc == 1
  assert out[0] == (f"[quickstart] {'teacher':<18} seed0  {'busy':<9} best   -    last   -    (skipped: in use by "
                    f"{_expected(teacher)})")
  assert out[0].split("in use by pid ")[1].startswith(f"{proc.pid} ")
  assert out[1].startswith("[quickstart] student") and "no-teach" in out[1]
  assert {p.name: p.read_bytes() for p in teacher.iterdir()} == before  # no run.log: nothing was started
  assert not (tmp_path / "quickstart" / "student").exists()
