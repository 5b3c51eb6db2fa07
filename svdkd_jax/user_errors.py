"""User errors: the exceptions whose message says what is wrong and how to fix it (a bad config, a missing teacher,
damaged data or checkpoints, a workdir in use). Every entry point turns them into one `error: ...` line and exit
status 2 instead of a JAX trace; SVDKD_TRACEBACK=1 shows the trace."""

import contextlib
import os
import sys
from collections.abc import Iterator

from svdkd_jax import workdir_lock

USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, workdir_lock.WorkdirLockedError)


@contextlib.contextmanager
def one_line() -> Iterator[None]:
  """Runs the block; a USER_ERRORS exception exits with status 2 and one `error: MESSAGE` line on stderr."""
  try:
    yield
  except USER_ERRORS as e:
    if os.environ.get("SVDKD_TRACEBACK"):
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
