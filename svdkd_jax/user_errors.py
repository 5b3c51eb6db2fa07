"""User errors: the exceptions whose message says what is wrong and how to fix it (a bad config, a missing teacher,
damaged data or checkpoints, a full disk, a workdir in use). Every entry point turns them into one `error: ...` line
and exit status 2 instead of a JAX trace; SVDKD_TRACEBACK=1 shows the trace. A process lost by a multi-process run
(`ProcessLostError`) is one `error: ...` line too, with exit status 1."""

import contextlib
import os
import sys
from collections.abc import Iterator

from svdkd_jax import workdir_lock

USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, workdir_lock.WorkdirLockedError)


class ProcessLostError(Exception):
  """Another process of a multi-process run is gone (its host failed or it was killed): this one cannot go on."""


@contextlib.contextmanager
def one_line() -> Iterator[None]:
  """Runs the block; a USER_ERRORS exception exits with status 2 and one `error: MESSAGE` line on stderr, a
  ProcessLostError with status 1 and its line, at once: a normal exit would wait for the lost process at the
  runtime's shutdown barrier, then abort."""
  try:
    yield
  except ProcessLostError as e:
    if os.environ.get("SVDKD_TRACEBACK"):
      raise
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)  # pylint: disable=protected-access
  except USER_ERRORS as e:
    if os.environ.get("SVDKD_TRACEBACK"):
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
