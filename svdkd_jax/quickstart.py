"""The README's main job: teacher, student alone and KD-SVD student on the bundled digits, accuracies printed.

  python -m svdkd_jax.quickstart --workdir /tmp/svdkd_quickstart [--config.train.epochs=5 ...]

Runs the `teacher`, `student` and `kd_svd_exact_mean` variants of `svdkd_jax.recipes.quickstart` (configs/quickstart.py
re-exports it; no source tree needed) in WORKDIR/{teacher,student,kd_svd_exact_mean} (the KD-SVD student reads the
teacher from WORKDIR/teacher). Each run resumes or is skipped if complete, so rerunning the command after an
interruption continues where it stopped. `--config.X=Y` overrides go to all three. Each run holds its workdir's lock
(the trainer takes it), so a second quickstart (or `python -m svdkd_jax.main`) on the same folder is refused with
one line.
"""

from collections.abc import Sequence
import json
import os
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from svdkd_jax import config_files
from svdkd_jax import recipes
from svdkd_jax import user_errors

RUNS = ("teacher", "student", "kd_svd_exact_mean")  # KD-SVD as recommended: exact gradient, batch mean

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "/tmp/svdkd_quickstart", "Parent directory of the three runs.")
config_flags.DEFINE_config_dict("config", recipes.quickstart(), "Base config (overrides apply to every run).")


def main(argv: Sequence[str]) -> None:
  """absl's main: trains the `RUNS` in turn under `--workdir`, then prints their accuracies (a table and JSON)."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from svdkd_jax import metrics  # pylint: disable=g-import-not-at-top
  from svdkd_jax import train  # pylint: disable=g-import-not-at-top
  metrics.configure_logging()
  overrides = config_flags.get_override_values(FLAGS["config"])  # --config.X=Y, parsed, for every run
  results, t0 = {}, time.time()
  for run in RUNS:
    config = recipes.quickstart(run)
    config.update_from_flattened_dict(overrides)
    if config.distill.method != "none":
      config.teacher.workdir = os.path.join(FLAGS.workdir, "teacher")
    logging.info("quickstart: training %s", run)
    with user_errors.one_line():
      results[run] = train.train_and_evaluate(config, os.path.join(FLAGS.workdir, run))
  print(f"\n{'run':<18} {'best acc':>9} {'last acc':>9} {'wall s':>8}")
  for run in RUNS:
    s = results[run]
    print(f"{run:<18} {s['best_eval_accuracy']:>9.4f} {s['last_eval_accuracy']:>9.4f} {s['wall_time_sec']:>8.1f}")
  print(json.dumps({"quickstart": {run: results[run]["last_eval_accuracy"] for run in RUNS},
                    "total_wall_sec": round(time.time() - t0, 1)}))


def run() -> None:
  """The `svdkd-quickstart` console script."""
  app.run(main, flags_parser=config_files.parse_flags)


if __name__ == "__main__":
  run()
