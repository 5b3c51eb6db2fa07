r"""Evaluates a finished run's last checkpoint on an eval split of its own data: one JSON line (and file).

  python experiments/evaluate_run.py WORKDIR [--split test] [--json OUT.json]

The run's `config.json` gives the data and the network; `--split` replaces its eval split and drops its holdout, so a
held-out probe's network (trained on exactly a table's images: `per_class` draws the same subset with or without a
holdout) is measured on the table's test split once, after its plan is fixed. Nothing is chosen with the result.
"""

import argparse
import json
import pathlib
import sys

import ml_collections

from svdkd_jax import input_pipeline
from svdkd_jax import metrics as metrics_lib
from svdkd_jax import networks
from svdkd_jax import parallel
from svdkd_jax import steps
from svdkd_jax import workdir as workdir_lib


REPO = pathlib.Path(__file__).resolve().parents[1]


def shown(workdir: pathlib.Path) -> str:
  """The run folder as records name it: relative to the repository when inside it, so records hold no machine path."""
  path = workdir.resolve()
  return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(workdir)


def last_checkpoint_accuracy(workdir: pathlib.Path, config: ml_collections.ConfigDict,
                             ds: input_pipeline.Datasets) -> dict:
  """Eval-mode accuracy (in %) and loss of the run's last checkpoint (not its best) on `ds.eval`."""
  mesh = parallel.create_mesh()
  step = metrics_lib.read_summary(str(workdir))["step"]
  net = networks.restore(str(workdir / "checkpoints" / str(step)), config.model.name, config.model.width,
                         ds.num_classes, mesh=mesh, image_size=ds.image_shape[0])
  eval_step = steps.make_eval_step(net, mesh=mesh, mean=ds.mean, std=ds.std)
  result = steps.evaluate(eval_step, net.variables, ds, mesh)
  return {"step": int(step), "accuracy": round(100 * result["eval_accuracy"], 2),
          "loss": round(float(result["eval_loss"]), 4)}


def evaluate_on(workdir: pathlib.Path, split: str) -> dict:
  config = ml_collections.ConfigDict(workdir_lib.read_config(str(workdir)))
  config.data.holdout = 0
  config.data.eval_split = split
  ds = input_pipeline.create_datasets(config.data, global_batch_size=config.train.batch_size,
                                      eval_batch_size=config.train.eval_batch_size, seed=config.seed)
  return {"workdir": shown(workdir), "model": config.model.name, "epochs": config.train.epochs, "split": split,
          **last_checkpoint_accuracy(workdir, config, ds)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("workdir")
  parser.add_argument("--split", default="test")
  parser.add_argument("--json", default="", help="also write the result here")
  args = parser.parse_args(argv)
  result = evaluate_on(pathlib.Path(args.workdir), args.split)
  print(json.dumps(result), flush=True)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
