"""One process per workdir: an exclusive `fcntl.flock` on `WORKDIR/.lock`.

Two trainings on one workdir would overwrite each other's checkpoints and interleave their metrics. The lock is
held while a run trains; the operating system drops it when the holder exits or is killed (SIGKILL, OOM, a lost
machine), so a stale lock cannot block the next run. The file names the holder (pid, host, command), so the
refused process can say who is in the way.

A child process can take over its parent's lock: `experiments/run_table.py` locks a workdir, then starts the
trainer with the lock's descriptor inherited and `SVDKD_WORKDIR_LOCK_FD` set; the trainer's own `acquire` then
adopts it instead of being refused by its parent.

`hold(workdir)` is the lock of a run (`train.train_and_evaluate` holds it): in a multi-process run only process 0
locks (the others share its workdir by design), and every process learns whether it got the lock. URLs
(gs://...) cannot be locked; `acquire` warns and returns an inactive lock.
"""

from collections.abc import Iterator
import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time

LOCK_FILE = ".lock"
INHERIT_ENV = "SVDKD_WORKDIR_LOCK_FD"


class WorkdirLockedError(RuntimeError):
  """Another live process holds the workdir; `holder` describes it ("pid ... on HOST since ...: COMMAND")."""

  def __init__(self, workdir: str, holder: str):
    super().__init__(f"{workdir} is in use by another run ({holder}). Wait for it to finish or stop it; two runs on "
                     "one workdir would overwrite each other's checkpoints.")
    self.workdir, self.holder = workdir, holder


class WorkdirLock:
  """A held lock (`active` is False for URLs, which cannot be locked). Release with `release()` or `with`."""

  def __init__(self, workdir: str, fd: int | None, inherited: bool = False):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self.fd = fd
    self.inherited = inherited

  @property
  def active(self) -> bool:
    """Whether this lock holds a descriptor: False for a URL, and after `release`."""
    return self.fd is not None

  def child_env(self, env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default os.environ) plus the variable that lets a child started with `pass_fds=(lock.fd,)` adopt
    this lock."""
    env = dict(os.environ if env is None else env)
    if self.fd is not None:
      env[INHERIT_ENV] = str(self.fd)
    return env

  def release(self) -> None:
    """Unlocks and closes the lock file (an adopted lock is only closed: its parent keeps it); no-op if inactive."""
    if self.fd is None:
      return
    if not self.inherited:  # An adopted lock stays with the parent that still shares it.
      os.ftruncate(self.fd, 0)
      fcntl.flock(self.fd, fcntl.LOCK_UN)
    os.close(self.fd)
    self.fd = None

  def __enter__(self) -> "WorkdirLock":
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _holder_text() -> str:
  command = " ".join(sys.argv).replace("\n", " ")  # One line, even for `python -c SCRIPT`.
  command = command if len(command) <= 300 else command[:297] + "..."
  return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                     "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n"


def _describe(text: str) -> str:
  try:
    info = json.loads(text)
    return f"pid {info['pid']} on {info['host']} since {info['since']}: {info['command']}"
  except (ValueError, KeyError, TypeError):
    return "a process that has not written its name yet"


def _write_holder(fd: int) -> None:
  os.ftruncate(fd, 0)
  os.pwrite(fd, _holder_text().encode(), 0)


def _adopt(path: str) -> int | None:
  """The inherited descriptor if `INHERIT_ENV` names an open descriptor of this very lock file, else None."""
  value = os.environ.get(INHERIT_ENV, "")
  if not value.isdigit():
    return None
  try:
    held, here = os.fstat(int(value)), os.stat(path)
  except OSError:
    return None
  return int(value) if (held.st_dev, held.st_ino) == (here.st_dev, here.st_ino) else None


def holder(workdir: str) -> str | None:
  """Who holds `workdir` ("pid ... on ... since ...: command"), or None if nobody does. Does not take the lock."""
  try:
    lock = acquire(workdir)
  except WorkdirLockedError as e:
    return e.holder
  lock.release()
  return None


def acquire(workdir: str) -> WorkdirLock:
  """Locks `workdir` (created if needed) for this process, or raises WorkdirLockedError naming the holder
  (ValueError if `workdir` is a file or cannot be created)."""
  if "://" in workdir:
    logging.warning("%s is a URL: it cannot be locked, so make sure that no other run uses it.", workdir)
    return WorkdirLock(workdir, None)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"The workdir {workdir} exists and is not a directory.")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:  # A read-only or missing parent: the user's path, not a bug, so one line.
    raise ValueError(f"Cannot create the workdir {workdir}: {e.strerror}.") from e
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  inherited = _adopt(path)
  if inherited is not None:
    os.close(fd)
    _write_holder(inherited)
    return WorkdirLock(workdir, inherited, inherited=True)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    who = _describe(os.pread(fd, 4096, 0).decode(errors="replace"))
    os.close(fd)
    raise WorkdirLockedError(workdir, who) from None
  _write_holder(fd)
  return WorkdirLock(workdir, fd)


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds `workdir`'s lock while the body runs: process 0 locks it (adopting a lock its parent handed down, see
  `WorkdirLock.child_env`), and every process learns whether process 0 got it, so none goes on with a workdir that
  another run holds. Raises WorkdirLockedError (in every process) if it is held."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  lock, refusal = None, None
  if jax.process_index() == 0:
    try:
      lock = acquire(workdir)
    except WorkdirLockedError as e:
      refusal = e
  if jax.process_count() > 1 and multihost_utils.broadcast_one_to_all(int(refusal is not None)) and not refusal:
    refusal = WorkdirLockedError(workdir, "named in the output of process 0")
  if refusal:
    raise refusal
  try:
    yield
  finally:
    if lock is not None:
      lock.release()
