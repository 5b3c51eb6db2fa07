r"""Checks a held-out probe run against the regime table's conditions: converged, overfitting, teacher ahead.

  python experiments/probe_regime.py WORKDIR [WORKDIR ...] [--json OUT.json]

For each finished run (a `holdout` variant of configs/regime_cifar10.py), restores its last checkpoint and reports:
  heldout_last        held-out accuracy at the last epoch (%)
  last_quarter_range  max - min of the held-out accuracy over the last quarter of the epochs (flat = small)
  last_quarter_slope  least-squares slope of that accuracy over the last quarter, in points per epoch
  train_accuracy      accuracy on the labelled training images in eval mode (no dropout, no augmentation), so the
                      train/held-out gap is measured, not the training batches' accuracy under dropout
  gap                 train_accuracy - heldout_last
Only training images are touched: the test split is never read.
"""

import argparse
import json
import pathlib
import statistics
import sys

import ml_collections
import numpy as np

import evaluate_run  # experiments/evaluate_run.py (this folder is on sys.path when run as a script)
from svdkd_jax import input_pipeline
from svdkd_jax import metrics as metrics_lib
from svdkd_jax import workdir as workdir_lib
from svdkd_jax.data import sources


def heldout_curve(workdir: pathlib.Path) -> list[float]:
  evals = {r["epoch"]: 100 * r["eval_accuracy"] for r in metrics_lib.read_jsonl(workdir / "metrics.jsonl")
           if "eval_accuracy" in r}  # a resumed run may log an epoch twice: the later row wins
  return [evals[e] for e in sorted(evals)]


def train_accuracy(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> float:
  """Eval-mode accuracy of the run's last checkpoint on its labelled training images, in %."""
  if not config.data.holdout:
    raise ValueError(f"{workdir} did not train with a holdout: its eval split is the test split; not probing it.")
  ds = input_pipeline.create_datasets(config.data, global_batch_size=config.train.batch_size,
                                      eval_batch_size=config.train.eval_batch_size, seed=config.seed)
  labels = sources.source_labels(ds.train)
  labelled = sources.subset(ds.train, np.flatnonzero(labels >= 0))
  on_train = input_pipeline.Datasets(train=ds.train, eval=labelled, num_classes=ds.num_classes, mean=ds.mean,
                                     std=ds.std, global_batch_size=ds.global_batch_size,
                                     eval_batch_size=ds.eval_batch_size, seed=ds.seed)
  return evaluate_run.last_checkpoint_accuracy(workdir, config, on_train)["accuracy"]


def probe(workdir: pathlib.Path) -> dict:
  config = ml_collections.ConfigDict(workdir_lib.read_config(str(workdir)))
  curve = heldout_curve(workdir)
  quarter = curve[-max(2, len(curve) // 4):]
  xs = np.arange(len(quarter), dtype=np.float64)
  slope = float(np.polyfit(xs, np.asarray(quarter), 1)[0])
  acc = train_accuracy(workdir, config)
  return {"workdir": evaluate_run.shown(workdir), "model": config.model.name, "distill": config.distill.method,
          "labels_per_class": config.data.labels_per_class or None, "epochs": len(curve),
          "heldout_last": round(curve[-1], 2), "heldout_best": round(max(curve), 2),
          "last_quarter_range": round(max(quarter) - min(quarter), 2), "last_quarter_slope": round(slope, 3),
          "last_quarter_mean": round(statistics.mean(quarter), 2), "train_accuracy": round(acc, 2),
          "gap": round(acc - curve[-1], 2)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--json", default="", help="also write the results here")
  args = parser.parse_args(argv)
  results = []
  for w in args.workdirs:
    r = probe(pathlib.Path(w).resolve())
    results.append(r)
    print(json.dumps(r), flush=True)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
