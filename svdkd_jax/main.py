"""Command-line entry point: parse flags, set up (multi-)process JAX, call `train.train_and_evaluate`.

  python -m svdkd_jax.main --config configs/FILE.py[:variant] --workdir DIR [--config.key=value ...] [--overwrite]

Multi-process (several hosts, or several processes on one machine): set JAX_COORDINATOR_ADDRESS=host:port,
JAX_NUM_PROCESSES and JAX_PROCESS_ID (or pass --coordinator_address/--num_processes/--process_id); Cloud TPU pod
slices need nothing. Every process runs the same command with the same --workdir (a shared or GCS path).

Process 0 locks the workdir while it trains (`svdkd_jax.workdir_lock`): a second run on it is refused with one line
naming the process that holds it. User errors (a bad config, a missing teacher, damaged data or checkpoints, a
workdir in use) exit with status 2 and one `error: ...` line; SVDKD_TRACEBACK=1 shows the trace instead.
"""

import contextlib
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from svdkd_jax import config as config_lib
from svdkd_jax import config_files
from svdkd_jax import workdir_lock

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the summary.")
flags.DEFINE_bool("overwrite", False, "Delete a previous run with a different config in --workdir and start again "
                  "(without it, a run given a larger train.epochs and nothing else changed is extended).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for a multi-process run.")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/quickstart.py:kd_svd.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.coordinator_address:
    os.environ["JAX_COORDINATOR_ADDRESS"] = FLAGS.coordinator_address
    os.environ["JAX_NUM_PROCESSES"] = str(FLAGS.num_processes or 1)
    os.environ["JAX_PROCESS_ID"] = str(FLAGS.process_id or 0)
  import jax  # After the flags: nothing may initialise the backend before jax.distributed.
  from svdkd_jax import metrics
  from svdkd_jax import parallel
  from svdkd_jax import train
  parallel.maybe_initialize_distributed()
  metrics.configure_logging()
  logging.info("JAX %s, process %d of %d, local devices %s, %d devices in total", jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_devices(), jax.device_count())
  try:
    with _lock_workdir(FLAGS.workdir):
      summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir, overwrite=FLAGS.overwrite)
  except (ValueError, FileNotFoundError, FloatingPointError, workdir_lock.WorkdirLockedError) as e:
    if os.environ.get("SVDKD_TRACEBACK"):
      raise
    # A user error: the message says what is wrong and how to fix it; no JAX trace (SVDKD_TRACEBACK=1 shows it).
    _exit_with_error(e)
  if jax.process_index() == 0:
    keys = ("complete", "step", "best_eval_accuracy", "best_epoch", "last_eval_accuracy", "wall_time_sec")
    print(json.dumps({k: summary.get(k) for k in keys}))
  if summary.get("interrupted"):
    sys.exit(128 + summary["interrupted"])  # The shell convention for "killed by signal N", after a clean save.


def _exit_with_error(e: Exception) -> None:
  print(f"error: {e}", file=sys.stderr)
  sys.exit(2)


@contextlib.contextmanager
def _lock_workdir(workdir: str):
  """Holds `workdir`'s lock (process 0 only: the other processes of a run share its workdir by design) while the
  run trains. Adopts the lock that experiments/run_table.py hands down to the trainer it starts. Every process
  learns whether process 0 got it, so none starts training on a workdir that another run holds."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  lock, refusal = None, None
  if jax.process_index() == 0:
    try:
      lock = workdir_lock.acquire(workdir)
    except workdir_lock.WorkdirLockedError as e:
      refusal = e
  if jax.process_count() > 1 and multihost_utils.broadcast_one_to_all(int(refusal is not None)) and not refusal:
    refusal = workdir_lock.WorkdirLockedError(workdir, "named in the output of process 0")
  if refusal:
    raise refusal
  try:
    yield
  finally:
    if lock is not None:
      lock.release()


def _check_config_file(argv: list[str]) -> None:
  """Exits 2 with one line if `--config FILE[:variant]` names a missing file or a variant its file rejects.

  ml_collections loads the file while parsing flags, and reports these as a traceback wrapped in absl's usage
  error (a bad variant) or not at all until the config is first read (a missing file); loading it here first gives
  the file's own message. A config file that fails in another way (a bug in it) still shows its trace."""
  spec = None
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith("--config="):
      spec = arg[len("--config="):]
    elif arg == "--config" and i + 1 < len(argv):
      spec = argv[i + 1]
  if spec is None:
    return  # absl reports the missing flag.
  try:
    config_files.get_config(spec)
  except (FileNotFoundError, ValueError) as e:
    if os.environ.get("SVDKD_TRACEBACK"):
      raise
    _exit_with_error(e)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with two changes that exit 2 with a one-line message: a config file that does not load
  (see `_check_config_file`), and an override of a key the config lacks (`--config.train.epochz=3`; the locked
  config makes ml_collections raise while parsing), whose message names the valid keys."""
  _check_config_file(argv)
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError):
    try:
      for arg in argv:
        if arg.startswith("--config."):
          config_lib.check_key(arg[len("--config."):].split("=", 1)[0])
    except ValueError as e:
      _exit_with_error(e)
    raise  # Every override is a key of the schema: not a typo, show the trace.


def run() -> None:
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
