"""Command-line entry point: parse flags, set up (multi-)process JAX, call `train.train_and_evaluate`.

  python -m svdkd_jax.main --config configs/FILE.py[:variant] --workdir DIR [--config.key=value ...] [--overwrite]

Multi-process (several hosts, or several processes on one machine): set JAX_COORDINATOR_ADDRESS=host:port,
JAX_NUM_PROCESSES and JAX_PROCESS_ID (or pass --coordinator_address/--num_processes/--process_id); Cloud TPU pod
slices need nothing. Every process runs the same command with the same --workdir (a shared or GCS path).

The trainer locks the workdir while it trains (`svdkd_jax.workdir_lock`): a second run on it is refused with one
line naming the process that holds it. User errors (a bad config, a missing teacher, damaged data or checkpoints, a
full disk, a workdir in use) exit with status 2 and one `error: ...` line; SVDKD_TRACEBACK=1 shows the trace instead.
SIGTERM/SIGINT save a checkpoint and exit with 128 + signal, on every process of a multi-process run after the same
step; the processes that outlive a lost one exit with status 1 and one `error: ...` line.
"""

from collections.abc import Sequence
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from svdkd_jax import config_files
from svdkd_jax import user_errors

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the summary.")
flags.DEFINE_bool("overwrite", False, "Delete a previous run with a different config in --workdir and start again "
                  "(without it, a run given a larger train.epochs and nothing else changed is extended).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for a multi-process run.")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/quickstart.py:kd_svd_exact_mean.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: Sequence[str]) -> None:
  """absl's main: trains `--config` in `--workdir` and prints the summary on process 0 (module docstring)."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.coordinator_address:
    os.environ["JAX_COORDINATOR_ADDRESS"] = FLAGS.coordinator_address
    os.environ["JAX_NUM_PROCESSES"] = str(FLAGS.num_processes or 1)
    os.environ["JAX_PROCESS_ID"] = str(FLAGS.process_id or 0)
  import jax  # After the flags (they set JAX_*): nothing may initialise the backend before jax.distributed.
  from svdkd_jax import metrics
  from svdkd_jax import parallel
  from svdkd_jax import train
  parallel.maybe_initialize_distributed()
  metrics.configure_logging()
  logging.info("JAX %s, process %d of %d, local devices %s, %d devices in total", jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_devices(), jax.device_count())
  with user_errors.one_line():
    summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir, overwrite=FLAGS.overwrite)
  if jax.process_index() == 0:
    keys = ("complete", "step", "best_eval_accuracy", "best_epoch", "last_eval_accuracy", "wall_time_sec")
    print(json.dumps({k: summary.get(k) for k in keys}))
  if summary.get("interrupted"):
    sys.exit(128 + summary["interrupted"])  # The shell convention for "killed by signal N", after a clean save.


def run() -> None:
  """The `svdkd-train` console script."""
  app.run(main, flags_parser=config_files.parse_flags)


if __name__ == "__main__":
  run()
