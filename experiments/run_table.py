r"""Trains a teacher, then every student of a table, in sequence; rerun the same command to resume.

  python experiments/run_table.py --config configs/cpu_tiny_imagenet.py --config configs/cpu_cifar10.py --root runs
  python experiments/run_table.py --config configs/crd_benchmark.py:wrn_40_2 --variants kd_svd,fsp --seeds 0,1 \
      --root runs --set train.epochs=10

A table is a config file (optionally with base tokens after `:`, e.g. a CRD pair or a label budget), a list of
variants and seeds; both default to the file's TABLE_VARIANTS / TABLE_SEEDS, and a variant named in the file's
SEEDS_PER_VARIANT runs only on that many of the file's TABLE_SEEDS (the first ones; a `capped` line names each run
left out, and --all_seeds runs them). Workdirs are `ROOT/<table>/<variant>/seed<N>` with
<table> the file's stem plus its base tokens; the teacher is `ROOT/<table>/teacher/seed<T>` and every student gets
`--config.teacher.workdir` pointing at it. Each run is one `python -m svdkd_jax.main` process (output appended to
`WORKDIR/run.log`), seed by seed (every variant of the first seed, then of the next); a run whose `summary.json`
says `complete` is skipped, an incomplete one resumes from its last checkpoint (the trainer does that for the same
command). A run whose workdir another process holds (`svdkd_jax.workdir_lock`, e.g. a second runner on the same
ROOT) is skipped as `busy`, so no run is ever trained twice at once. One line per run is printed, then mean +- std
per variant. Exit status 1 if any run failed (the others still ran, except students of a failed teacher).

ROOT is a local folder: `run.log` is appended to with plain file I/O, and the workdir locks are local file locks
(a URL cannot be locked). The trainer itself, `python -m svdkd_jax.main`, also takes gs:// workdirs.
"""

import argparse
import dataclasses
import functools
import os
import pathlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from svdkd_jax import config_files
from svdkd_jax import metrics
from svdkd_jax import workdir_lock

SUMMARY_FILE = "summary.json"


@dataclasses.dataclass(frozen=True)
class Run:
  table: str
  config_path: str
  arg: str  # the `:variant` string handed to the config file (base tokens + variant)
  variant: str
  seed: int
  workdir: str
  teacher_workdir: str = ""  # "" for the teacher itself


def load_config_module(path: str):
  """Imports a config file by path (configs/ is not a package)."""
  return config_files.load_module(path)


def plan(config_spec: str, root: str, *, variants: Sequence[str] = (), seeds: Sequence[int] = (),
         teacher_seed: int = 0, table: str = "", teacher_table: str = "", teacher_workdir: str = "",
         all_seeds: bool = False) -> list[Run]:
  """The runs of one table, teacher first. `config_spec` = `path[:base,tokens]`; `teacher_table` names another
  table of `root` whose teacher the students read (default: the table's own); `teacher_workdir` is a finished run
  elsewhere that they read instead (a held-out probe's teacher, trained on the table's images: its training does not
  depend on its eval split); `all_seeds` ignores the file's SEEDS_PER_VARIANT (a table whose plan runs every row on
  every seed)."""
  path, _, base = config_spec.partition(":")
  module = load_config_module(path)
  variants = list(variants) or list(getattr(module, "TABLE_VARIANTS", ()))
  seeds = list(seeds) or list(getattr(module, "TABLE_SEEDS", (0,)))
  if not variants:
    raise ValueError(f"{path} defines no TABLE_VARIANTS: pass --variants (one of {getattr(module, 'VARIANTS', '?')}).")
  if "teacher" in variants:
    raise ValueError("Do not list `teacher` in --variants: the runner trains it first (seed --teacher_seed).")
  base_tokens = [t.strip() for t in base.split(",") if t.strip()]
  table = table or "_".join([pathlib.Path(path).stem] + base_tokens).replace("=", "")
  arg = lambda v: ",".join(base_tokens + [v])
  for v in variants:  # Fail before training anything if a variant is unknown.
    module.get_config(arg(v))
  teacher_dir = teacher_workdir or os.path.join(root, teacher_table or table, "teacher", f"seed{teacher_seed}")
  # A teacher elsewhere is not the runner's to train: its students wait for it ("no-teach") until it is complete.
  runs = [] if teacher_workdir else [Run(table, path, arg("teacher"), "teacher", teacher_seed, teacher_dir)]
  # variant -> how many of the file's TABLE_SEEDS it runs (the first ones), whatever --seeds asks for.
  per_variant = {} if all_seeds else getattr(module, "SEEDS_PER_VARIANT", {})
  file_seeds = list(getattr(module, "TABLE_SEEDS", (0,)))
  for s in seeds:  # Seed-major: a table stopped part-way has every variant for its first seeds.
    for v in variants:
      if v in per_variant and s not in file_seeds[:per_variant[v]]:
        print(f"[{table}] {v:<18} seed{s}  capped    (the file's SEEDS_PER_VARIANT runs it on seeds "
              f"{file_seeds[:per_variant[v]]}; --all_seeds runs every seed)", flush=True)
        continue
      runs.append(Run(table, path, arg(v), v, s, os.path.join(root, table, v, f"seed{s}"), teacher_dir))
  return runs


def read_summary(workdir: str) -> dict | None:
  """The run's summary.json; None if missing or (with a warning) damaged."""
  summary = metrics.read_json(os.path.join(workdir, SUMMARY_FILE))
  return summary if isinstance(summary, dict) else None


def is_complete(workdir: str, *, needs_checkpoint: bool = False) -> bool:
  """`summary.json` says complete (and, for a teacher its students restore, its checkpoints are there too: a
  teacher whose summary was committed without its checkpoints must be trained again)."""
  summary = read_summary(workdir)
  done = bool(summary and summary.get("complete"))
  return done and (not needs_checkpoint or os.path.isdir(os.path.join(workdir, "checkpoints")))


def accuracy(summary: dict, which: str) -> float | None:
  """`which` in {"best", "last"}: the eval accuracy in [0, 1] recorded in a summary."""
  for key in (f"{which}_eval_accuracy", f"{which}_accuracy", which):
    value = summary.get(key)
    if isinstance(value, (int, float)):
      return float(value)
  return None


def last_checkpoint(workdir: str) -> str:
  """WORKDIR/checkpoints/<step> of a complete run's last step (the trainer saves at the last step)."""
  summary = read_summary(workdir) or {}
  return os.path.join(workdir, "checkpoints", str(summary.get("step")))


def main_command(run: Run, overrides: Sequence[str] = (), *, teacher_checkpoint: str = "best") -> list[str]:
  """The `python -m svdkd_jax.main` command line of one run.

  `teacher_checkpoint`: "best" lets the trainer take the teacher's best-eval checkpoint; "last" pins its last one,
  so that no choice is made on the eval split (the test split, in a final table).
  """
  cmd = [sys.executable, "-m", "svdkd_jax.main", f"--config={run.config_path}:{run.arg}",
         f"--workdir={run.workdir}", f"--config.seed={run.seed}"]
  if run.teacher_workdir:
    cmd.append(f"--config.teacher.workdir={run.teacher_workdir}")
    if teacher_checkpoint == "last":
      cmd.append(f"--config.teacher.checkpoint={last_checkpoint(run.teacher_workdir)}")
  return cmd + [f"--config.{o}" for o in overrides]


def subprocess_runner(run: Run, overrides: Sequence[str], *, verbose: bool = False,
                      teacher_checkpoint: str = "best") -> int:
  """Runs one training process; its output goes to WORKDIR/run.log (and to the terminal with verbose).

  Holds the workdir's lock while the trainer runs (the trainer inherits it); raises
  `workdir_lock.WorkdirLockedError` without starting anything if another process holds it.
  """
  with workdir_lock.acquire(run.workdir) as lock:
    cmd = main_command(run, overrides, teacher_checkpoint=teacher_checkpoint)
    spawn = dict(env=lock.child_env(), pass_fds=(lock.fd,) if lock.active else ())
    if verbose:
      return subprocess.call(cmd, **spawn)
    with open(os.path.join(run.workdir, "run.log"), "a") as log:
      log.write(f"\n$ python {' '.join(cmd[1:])}\n")  # the interpreter's path is the machine's, not the run's
      log.flush()
      return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, **spawn)


def _line(run: Run, status: str, summary: dict | None, seconds: float | None = None) -> str:
  fmt = lambda x: "  -  " if x is None else f"{100 * x:5.2f}"
  best = accuracy(summary, "best") if summary else None
  last = accuracy(summary, "last") if summary else None
  took = f" {seconds / 60:6.1f} min" if seconds is not None else ""
  return f"[{run.table}] {run.variant:<18} seed{run.seed}  {status:<9} best {fmt(best)}  last {fmt(last)}{took}"


def run_table(runs: Sequence[Run], *, overrides: Sequence[str] = (), dry_run: bool = False,
              runner: Callable[[Run, Sequence[str]], int] = subprocess_runner,
              echo: Callable[[str], None] = functools.partial(print, flush=True),
              teacher_checkpoint: str = "best") -> list[Run]:
  """Trains `runs` in order (teacher first), skipping complete ones and ones another process is training (`busy`,
  not counted as failed); returns the runs that failed. `dry_run` prints the commands (`teacher_checkpoint` as in
  `main_command`) instead."""
  failed = []
  for run in runs:
    if is_complete(run.workdir, needs_checkpoint=not run.teacher_workdir):
      echo(_line(run, "skipped", read_summary(run.workdir)))
      continue
    if dry_run:
      echo(" ".join(main_command(run, overrides, teacher_checkpoint=teacher_checkpoint)))
      continue
    if run.teacher_workdir and not is_complete(run.teacher_workdir, needs_checkpoint=True):
      echo(_line(run, "no-teach", None) + f"  (teacher {run.teacher_workdir} is not complete)")
      failed.append(run)
      continue
    start = time.time()
    try:
      rc = runner(run, overrides)
    except workdir_lock.WorkdirLockedError as e:
      echo(_line(run, "busy", read_summary(run.workdir)) + f"  (skipped: in use by {e.holder})")
      continue
    summary = read_summary(run.workdir)
    done = rc == 0 and bool(summary and summary.get("complete"))
    status = "done" if done else f"FAILED:{rc}"
    echo(_line(run, status, summary, time.time() - start)
         + ("" if done else f"  (see {os.path.join(run.workdir, 'run.log')})"))
    if not done:
      failed.append(run)
  return failed


def table_summary(runs: Sequence[Run]) -> list[str]:
  """One line per variant: mean +- std (over seeds) of the best and last eval accuracy, in percent."""
  lines, by_variant = [], {}
  for run in runs:
    by_variant.setdefault((run.table, run.variant), []).append(read_summary(run.workdir))
  for (table, variant), summaries in by_variant.items():
    done = [s for s in summaries if s and s.get("complete")]
    cells = []
    for which in ("best", "last"):
      xs = [100 * a for a in (accuracy(s, which) for s in done) if a is not None]
      std = statistics.stdev(xs) if len(xs) > 1 else 0.0
      cells.append(f"{which} {statistics.mean(xs):5.2f} +- {std:4.2f}" if xs else f"{which}   -  ")
    lines.append(f"[{table}] {variant:<18} {len(done)}/{len(summaries)} runs  " + "  ".join(cells))
  return lines


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", action="append", required=True,
                      help="config file[:base tokens]; repeat to run several tables in sequence")
  parser.add_argument("--root", required=True, help="workdirs go to ROOT/<table>/<variant>/seed<N>")
  parser.add_argument("--variants", default="", help="comma-separated (default: the file's TABLE_VARIANTS)")
  parser.add_argument("--seeds", default="", help="comma-separated student seeds (default: the file's TABLE_SEEDS)")
  parser.add_argument("--teacher_seed", type=int, default=0)
  parser.add_argument("--table", default="", help="table name (default: the config file's stem + base tokens)")
  parser.add_argument("--teacher_table", default="",
                      help="read the teacher of this table of ROOT (default: the table's own, trained first)")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="config override for every run, e.g. --set train.epochs=2 (becomes --config.KEY=VALUE)")
  parser.add_argument("--teacher_workdir", default="",
                      help="a finished teacher run elsewhere that the students read (not trained by the runner)")
  parser.add_argument("--teacher_checkpoint", choices=("best", "last"), default="best",
                      help="the teacher checkpoint students read: its best eval epoch, or its last (no choice made "
                           "on the eval split)")
  parser.add_argument("--all_seeds", action="store_true",
                      help="run every variant on every seed asked for, ignoring the file's SEEDS_PER_VARIANT")
  parser.add_argument("--dry_run", action="store_true", help="print the commands of the runs still to do")
  parser.add_argument("--verbose", action="store_true", help="show the trainer's output instead of logging it")
  args = parser.parse_args(argv)
  if args.table and len(args.config) > 1:
    parser.error("--table names one table: give a single --config with it")
  for o in args.set:
    if "=" not in o:
      parser.error(f"--set {o!r}: expected KEY=VALUE, e.g. --set train.epochs=2")
  variants = [v.strip() for v in args.variants.split(",") if v.strip()]
  try:
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  except ValueError:
    parser.error(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2")

  runs = []
  try:
    for spec in args.config:
      runs += plan(spec, args.root, variants=variants, seeds=seeds, teacher_seed=args.teacher_seed, table=args.table,
                   teacher_table=args.teacher_table, teacher_workdir=args.teacher_workdir,
                   all_seeds=args.all_seeds)
  except (ValueError, FileNotFoundError) as e:
    parser.error(str(e))
  runner = lambda run, overrides: subprocess_runner(run, overrides, verbose=args.verbose,
                                                    teacher_checkpoint=args.teacher_checkpoint)
  failed = run_table(runs, overrides=args.set, dry_run=args.dry_run, runner=runner,
                     teacher_checkpoint=args.teacher_checkpoint)
  if not args.dry_run:
    print("\n".join(table_summary(runs)), flush=True)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
