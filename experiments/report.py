r"""Turns table workdirs (experiments/run_table.py) into the results: a Markdown table, a JSON file and two plots.

  python experiments/report.py [--root experiments/results/cpu_runs] [--out experiments/results] [--prefix cpu] \
      [--readme experiments/results/README.md]

Reads only what the trainer leaves in each `ROOT/<table>/<variant>/seed<N>/` (summary.json, metrics.jsonl,
config.json, the runner's run.log), so the committed workdirs (no checkpoints) regenerate everything. Writes:
  OUT/PREFIX_table.md      per table: mean +- std over seeds of the last- and best-epoch eval accuracy, the paper's
                           numbers beside them, the verdicts on KD-SVD vs S-DNN, distillation diagnostics (per-tap
                           loss, gradient norms before/after the clip), every run's command, seed and wall time
  OUT/PREFIX_table.json    {dataset: {method: {"seeds": [...], "last": [...], "best": [...]}}}, accuracies in %
  OUT/PREFIX_curves.png    eval accuracy by epoch, mean over seeds with a min-max band, one panel per table
  OUT/PREFIX_final.png     last-epoch eval accuracy per method: mean +- std bar and one dot per seed
  --readme FILE            the compact tables and verdicts, between FILE's `<!-- cpu-table ... -->` markers
Runs without a complete summary are listed as missing and left out of the numbers.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import sys
from collections.abc import Sequence

from svdkd_jax import config as config_lib
from svdkd_jax import metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Display order and labels (variant names of configs/cifar100_vgg.py).
METHODS = {
    "teacher": "T-DNN (teacher)",
    "student": "S-DNN (student alone)",
    "soft_target": "Soft target",
    "fsp": "FSP (1-stage)",
    "kd_svd_sskd_code": "KD-SVD, svd_grad=sskd_code",
    "kd_svd": "KD-SVD, svd_grad=paper",
    "kd_svd_exact": "KD-SVD, svd_grad=exact",
}
KD_SVD = ("kd_svd_sskd_code", "kd_svd", "kd_svd_exact")
# The paper's numbers (docs/method.md sections 6 and 10): full-scale networks and schedules, other data.
PAPER = {
    "CIFAR-100 (VGG, 2-stage main table)": {"teacher": 64.44, "student": 61.37, "fsp": 64.54, "kd_svd": 65.05},
    "CIFAR-100 (VGG, 1-stage, poster)": {"fsp": 64.89, "kd_svd": 65.54},
    "Tiny-ImageNet (poster)": {"teacher": 53.37, "student": 47.32, "fsp": 48.77, "kd_svd": 51.82},
}


@dataclasses.dataclass
class RunResult:
  variant: str
  seed: int
  workdir: str
  summary: dict
  evals: list[dict]  # metrics.jsonl rows with eval_accuracy, in order
  train_rows: list[dict]  # the other rows
  command: str

  @property
  def complete(self) -> bool:
    return bool(self.summary.get("complete"))

  def accuracy(self, which: str) -> float:
    """`which` in {"last", "best"}: eval accuracy in percent."""
    return 100.0 * float(self.summary[f"{which}_eval_accuracy"])


def read_json(path: pathlib.Path) -> dict:
  """{} for a missing file, and (with a warning) for a damaged one."""
  data = metrics.read_json(path)
  return data if isinstance(data, dict) else {}


def _read_summary(path: pathlib.Path) -> dict:
  """summary.json ({} if missing or damaged), its "config" in today's value names (a run's record keeps the names
  it was written with, see svdkd_jax.config.ALIASES)."""
  summary = read_json(path)
  if isinstance(summary.get("config"), dict):
    summary["config"] = config_lib.canonical(summary["config"])
  return summary


def _read_lines(path: pathlib.Path) -> list[dict]:
  """metrics.jsonl rows; a line cut by an interruption is skipped (with a warning)."""
  return metrics.read_jsonl(path) if path.is_file() else []


def _command(workdir: pathlib.Path) -> str:
  """The last `$ command` line the runner wrote to run.log (the one that completed the run)."""
  log = workdir / "run.log"
  cmds = [line[2:].strip() for line in log.read_text(errors="replace").splitlines() if line.startswith("$ ")] \
      if log.is_file() else []
  if not cmds:
    return ""
  exe, _, rest = cmds[-1].partition(" ")
  return ("python " + rest) if exe.endswith(("python", "python3")) or "/python" in exe else cmds[-1]


def read_run(workdir: pathlib.Path, variant: str, seed: int) -> RunResult:
  rows = _read_lines(workdir / "metrics.jsonl")
  evals = {}
  for r in rows:
    if "eval_accuracy" in r:
      evals[r["epoch"]] = r  # a resumed run may log an epoch twice: keep the later row
  return RunResult(variant, seed, str(workdir), _read_summary(workdir / "summary.json"),
                   [evals[e] for e in sorted(evals)], [r for r in rows if "eval_accuracy" not in r],
                   _command(workdir))


def read_table(table_dir: pathlib.Path) -> dict[str, list[RunResult]]:
  """{variant: [RunResult per seed directory]} in METHODS order (unknown variants after, sorted)."""
  found = {}
  for vdir in sorted(p for p in table_dir.iterdir() if p.is_dir()):
    for sdir in sorted(p for p in vdir.iterdir() if p.is_dir() and p.name.startswith("seed")):
      try:
        seed = int(sdir.name[4:])
      except ValueError:
        continue
      found.setdefault(vdir.name, []).append(read_run(sdir, vdir.name, seed))
  order = [v for v in METHODS if v in found] + sorted(v for v in found if v not in METHODS)
  return {v: sorted(found[v], key=lambda r: r.seed) for v in order}


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
  return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def mean_sd_text(xs: Sequence[float]) -> str:
  """Accuracies over seeds as "mean +- SD" ("-" for none)."""
  if not xs:
    return "-"
  m, s = _mean_std(xs)
  return f"{m:.2f} +- {s:.2f}"


def dataset_name(table: dict[str, list[RunResult]], fallback: str) -> str:
  for runs in table.values():
    for r in runs:
      name = r.summary.get("config", {}).get("data", {}).get("name")
      if name:
        return name
  return fallback


def table_json(tables: dict[str, dict[str, list[RunResult]]]) -> dict:
  """{dataset: {method: {"seeds", "last", "best"}}} from complete runs, accuracies in percent (2 decimals)."""
  out = {}
  for name, table in tables.items():
    methods = {}
    for variant, runs in table.items():
      done = [r for r in runs if r.complete]
      methods[variant] = {"seeds": [r.seed for r in done],
                          "last": [round(r.accuracy("last"), 2) for r in done],
                          "best": [round(r.accuracy("best"), 2) for r in done]}
    out[dataset_name(table, name)] = methods
  return out


def verdicts(methods: dict) -> list[str]:
  """Does KD-SVD beat S-DNN, and which svd_grad mode is best: answered from one dataset's `table_json` entry
  (last-epoch accuracy)."""
  lines = []
  stats = {v: _mean_std(m["last"]) for v, m in methods.items() if m["last"]}
  if "student" not in stats:
    return ["S-DNN has no complete run: no comparison."]
  s_mean, s_std = stats["student"]
  for v in KD_SVD:
    if v not in stats:
      continue
    m, sd = stats[v]
    spread = max(sd, s_std)
    beats = m - s_mean > 2 * spread
    lines.append(f"{METHODS[v]}: {m - s_mean:+.2f} points vs S-DNN; twice the larger seed std is {2 * spread:.2f}: "
                 f"{'beats S-DNN by more than twice the spread' if beats else 'does NOT beat S-DNN by twice the spread'}.")
  ranked = sorted((v for v in stats if v != "teacher"), key=lambda v: -stats[v][0])
  lines.append("Students ranked by mean last-epoch accuracy: "
               + " > ".join(f"{METHODS.get(v, v)} ({stats[v][0]:.2f})" for v in ranked) + ".")
  modes = [v for v in KD_SVD if v in stats]
  if modes:
    best = max(modes, key=lambda v: stats[v][0])
    lines.append(f"Best svd_grad mode: {METHODS[best].split('=')[-1]} ({stats[best][0]:.2f} +- {stats[best][1]:.2f}); "
                 "differences between modes smaller than their stds are not resolved by these seeds.")
  return lines


def diagnostics(runs: Sequence[RunResult]) -> dict[str, float]:
  """Means over seeds of the last logged epoch's training rows: per-tap loss, gradient norms, teacher accuracy."""
  per_run = []
  for r in runs:
    rows = [x for x in r.train_rows if "grad_norm_main" in x]
    if not rows:
      continue
    last_epoch = max(x.get("epoch", 0) for x in rows)
    rows = [x for x in rows if x.get("epoch", 0) == last_epoch]
    keys = [k for k in rows[0] if k.startswith("dist/") or k in ("grad_norm_main", "grad_norm_dist", "grad_norm",
                                                                    "teacher_accuracy", "ce_loss", "accuracy")]
    per_run.append({k: statistics.mean(float(x[k]) for x in rows if isinstance(x.get(k), (int, float)))
                    for k in keys if any(isinstance(x.get(k), (int, float)) for x in rows)})
  keys = sorted({k for d in per_run for k in d})
  return {k: statistics.mean(d[k] for d in per_run if k in d) for k in keys}


def markdown(tables: dict[str, dict[str, list[RunResult]]], js: dict, command: str) -> str:
  out = ["# CPU-scale reproduction of KD-SVD (generated by experiments/report.py)", "",
         f"Regenerate: `{command}`. Reduced-scale runs on other data than the paper's: compare methods within a "
         "table, not with the paper's column, which is given for the ranking only.", ""]
  for name, table in tables.items():
    dataset = dataset_name(table, name)
    methods = js[dataset]
    any_run = next((r for runs in table.values() for r in runs if r.complete), None)
    cfg = any_run.summary.get("config", {}) if any_run else {}
    out += [f"## {dataset} (table `{name}`)", ""]
    if cfg:
      t_runs = [r for r in table.get("teacher", []) if r.complete]
      s_runs = [r for v, rs in table.items() if v != "teacher" for r in rs if r.complete]
      t_ep = t_runs[0].summary.get("epochs") if t_runs else "?"
      s_ep = s_runs[0].summary.get("epochs") if s_runs else "?"
      s_b = s_runs[0].summary.get("config", {}).get("optim", {}).get("boundaries") if s_runs else "?"
      t_b = t_runs[0].summary.get("config", {}).get("optim", {}).get("boundaries") if t_runs else "?"
      wall = sum(r.summary.get("wall_time_sec", 0.0) for rs in table.values() for r in rs if r.complete)
      out += [f"VGG teacher/student at width {cfg.get('model', {}).get('width')}, eval split "
              f"`{cfg.get('data', {}).get('eval_split')}`; teacher {t_ep} epochs (lr x0.1 at epochs {t_b}), "
              f"students {s_ep} epochs (lr x0.1 at epochs {s_b}); batch {cfg.get('train', {}).get('batch_size')}, "
              f"Nesterov SGD lr {cfg.get('optim', {}).get('learning_rate')}, L2 {cfg.get('optim', {}).get('weight_decay')}, "
              f"dropout {cfg.get('model', {}).get('dropout')}, combine rule `{cfg.get('combine', {}).get('rule')}`, "
              f"k = {cfg.get('distill', {}).get('k')}. Wall time of the whole table: {wall / 60:.1f} min (sum over "
              "runs of the trainer's `wall_time_sec`: compilation, training, evals and checkpoints, not process "
              "start-up and data loading; runs of a table may have run beside another table's).", ""]
    paper_cols = list(PAPER)
    out += ["| method | runs | last epoch (%) | best epoch (%) | last - S-DNN | mean wall (min) | "
            + " | ".join(f"paper: {c}" for c in paper_cols) + " |",
            "|---|---|---|---|---|---|" + "---|" * len(paper_cols)]
    s_last = methods.get("student", {}).get("last", [])
    for variant, runs in table.items():
      m = methods[variant]
      done = [r for r in runs if r.complete]
      delta = (f"{statistics.mean(m['last']) - statistics.mean(s_last):+.2f}"
               if m["last"] and s_last and variant != "student" else "")
      wall = f"{statistics.mean(r.summary.get('wall_time_sec', 0) for r in done) / 60:.1f}" if done else "-"
      paper = [f"{PAPER[c][variant]:.2f}" if variant in PAPER[c] else "" for c in paper_cols]
      out.append(f"| {METHODS.get(variant, variant)} | {len(done)}/{len(runs)} | {mean_sd_text(m['last'])} | "
                 f"{mean_sd_text(m['best'])} | {delta} | {wall} | " + " | ".join(paper) + " |")
    out += ["", "Mean +- sample std over seeds. The paper's `proposed` numbers sit on the svd_grad=paper row (the "
            "poster's gradient); which gradient produced them is not known (the released code computes sskd_code).",
            ""]
    out += [f"- {line}" for line in verdicts(methods)] + [""]

    diag = {v: diagnostics([r for r in runs if r.complete]) for v, runs in table.items() if v != "teacher"}
    tap_keys = sorted({k for d in diag.values() for k in d if k.startswith("dist/")})
    cols = ["ce_loss", "accuracy", "teacher_accuracy", "grad_norm_main", "grad_norm_dist", "grad_norm"] + tap_keys
    out += ["Diagnostics, mean over the last epoch's logged steps and over seeds (training batches, augmented): "
            "`grad_norm_dist` is the distillation gradient before the per-tensor clip, `grad_norm` the combined "
            "gradient the optimiser received; `dist/pair_l` the loss of tap pair l.", "",
            "| method | " + " | ".join(f"`{c}`" for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for v, d in diag.items():
      out.append(f"| {METHODS.get(v, v)} | " + " | ".join(f"{d[c]:.4g}" if c in d else "" for c in cols) + " |")
    out += ["", "Runs:", "", "| method | seed | last (%) | best (%) (epoch) | wall (min) | command |",
            "|---|---|---|---|---|---|"]
    for variant, runs in table.items():
      for r in runs:
        if not r.complete:
          out.append(f"| {METHODS.get(variant, variant)} | {r.seed} | missing (no complete summary) | | | "
                     f"`{r.command}` |")
          continue
        out.append(f"| {METHODS.get(variant, variant)} | {r.seed} | {r.accuracy('last'):.2f} | "
                   f"{r.accuracy('best'):.2f} ({r.summary.get('best_epoch')}) | "
                   f"{r.summary.get('wall_time_sec', 0) / 60:.1f} | `{r.command}` |")
    if any_run:
      out += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in any_run.summary.get("versions", {}).items())
              + f"; devices {any_run.summary.get('devices')}.", ""]
  return "\n".join(out) + "\n"


README_BEGIN, README_END = "<!-- cpu-table: generated by experiments/report.py --readme -->", "<!-- /cpu-table -->"


def readme_table(tables: dict[str, dict[str, list[RunResult]]], js: dict) -> str:
  """One compact table per dataset (last/best mean +- std, seeds, the paper's Tiny-ImageNet and CIFAR-100 rows)."""
  out = []
  for name, table in tables.items():
    dataset = dataset_name(table, name)
    methods = js[dataset]
    s_last = methods.get("student", {}).get("last", [])
    out += [f"**{dataset}** (`{name}`; eval accuracy in %, mean +- std over seeds)", "",
            "| method | seeds | last epoch | best epoch | last - S-DNN | paper: Tiny-ImageNet | paper: CIFAR-100 VGG, 1-stage / 2-stage |",
            "|---|---|---|---|---|---|---|"]
    for variant in table:
      m = methods[variant]
      delta = (f"{statistics.mean(m['last']) - statistics.mean(s_last):+.2f}"
               if m["last"] and s_last and variant != "student" else "")
      ti = PAPER["Tiny-ImageNet (poster)"].get(variant)
      one, two = PAPER["CIFAR-100 (VGG, 1-stage, poster)"].get(variant), PAPER["CIFAR-100 (VGG, 2-stage main table)"].get(variant)
      cifar = " / ".join(f"{x:.2f}" if x is not None else "-" for x in (one, two)) if (one or two) else ""
      out.append(f"| {METHODS.get(variant, variant)} | {len(m['seeds'])} | {mean_sd_text(m['last'])} | {mean_sd_text(m['best'])} | "
                 f"{delta} | {f'{ti:.2f}' if ti else ''} | {cifar} |")
    out += [""] + [f"- {line}" for line in verdicts(methods)] + [""]
  return "\n".join([README_BEGIN, ""] + out + [README_END])


def update_readme(path: str, block: str, begin: str = README_BEGIN, end_marker: str = README_END) -> None:
  """Replaces the text between the README markers (both must be there) with `block`."""
  text = pathlib.Path(path).read_text()
  start, end = text.find(begin), text.find(end_marker)
  if start < 0 or end < start:
    raise ValueError(f"{path} has no {begin} ... {end_marker} block to update")
  pathlib.Path(path).write_text(text[:start] + block + text[end + len(end_marker):])


def plot_eval_curves(ax, table: dict[str, list[RunResult]], colors: dict, labels: dict) -> None:
  """One panel: each variant's eval accuracy by epoch, mean over its complete seeds with a min-max band; the
  teacher, which trains longer, as a line at its final accuracy (so the students' epochs stay readable)."""
  for variant, runs in table.items():
    curves = [[100 * e["eval_accuracy"] for e in r.evals] for r in runs if r.complete and r.evals]
    if not curves:
      continue
    length = min(len(c) for c in curves)
    epochs = list(range(1, length + 1))
    cols = list(zip(*(c[:length] for c in curves)))
    mean = [statistics.mean(c) for c in cols]
    if variant == "teacher":
      ax.axhline(mean[-1], color="k", ls="--", lw=1, label=f"teacher after its {length} epochs")
      continue
    ax.plot(epochs, mean, marker="o", ms=3, color=colors.get(variant),
            label=f"{labels.get(variant, variant)} ({len(curves)})")
    if len(curves) > 1:
      ax.fill_between(epochs, [min(c) for c in cols], [max(c) for c in cols], color=colors.get(variant), alpha=0.2)


def plot(tables: dict[str, dict[str, list[RunResult]]], js: dict, curves_path: str, final_path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  colors = dict(zip(METHODS, plt.get_cmap("tab10").colors))
  n = len(tables)
  fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 4.5), squeeze=False)
  for ax, (name, table) in zip(axes[0], tables.items()):
    plot_eval_curves(ax, table, colors, METHODS)
    ax.set_title(f"{dataset_name(table, name)}: eval accuracy by epoch (band: seed min-max)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("eval accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(curves_path, dpi=110)
  plt.close(fig)

  fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 4.5), squeeze=False)
  for ax, (name, table) in zip(axes[0], tables.items()):
    methods = js[dataset_name(table, name)]
    students = [v for v in methods if v != "teacher" and methods[v]["last"]]
    for i, v in enumerate(students):
      xs = methods[v]["last"]
      m, s = _mean_std(xs)
      ax.bar(i, m, yerr=s, color=colors.get(v), alpha=0.6, capsize=4)
      ax.scatter([i] * len(xs), xs, color="k", s=12, zorder=3)
    if methods.get("teacher", {}).get("last"):
      ax.axhline(statistics.mean(methods["teacher"]["last"]), color="k", ls="--", lw=1, label="teacher")
      ax.legend(fontsize=8)
    if students:
      lo = min(min(methods[v]["last"]) for v in students)
      hi = max(max(methods[v]["last"]) for v in students + (["teacher"] if methods.get("teacher", {}).get("last")
                                                              else []))
      ax.set_ylim(max(0.0, lo - 0.15 * (hi - lo) - 1), hi + 0.1 * (hi - lo) + 0.5)
    short = lambda v: METHODS.get(v, v).split(" (")[0].replace(", svd_grad=", "\n")  # "KD-SVD\npaper"
    ax.set_xticks(range(len(students)), [short(v) for v in students], fontsize=8)
    ax.set_ylabel("last-epoch eval accuracy (%)")
    ax.set_title(f"{dataset_name(table, name)}: final accuracy (bar: mean +- std, dots: seeds)")
    ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  fig.savefig(final_path, dpi=110)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--root", default=str(ROOT / "experiments" / "results" / "cpu_runs"),
                      help="the runner's --root: ROOT/<table>/<variant>/seed<N>")
  parser.add_argument("--out", default=str(ROOT / "experiments" / "results"), help="output folder")
  parser.add_argument("--prefix", default="cpu", help="output file names: PREFIX_table.md, ...")
  parser.add_argument("--tables", default="", help="comma-separated table folders to include (default: all)")
  parser.add_argument("--no_plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
  parser.add_argument("--readme", default="", help="also rewrite the results block of this README (between markers)")
  args = parser.parse_args(argv)
  root = pathlib.Path(args.root)
  if not root.is_dir():
    parser.error(f"--root {root}: no such folder (run experiments/run_table.py --root {root} first)")
  wanted = [t.strip() for t in args.tables.split(",") if t.strip()]
  # Default order: the main table (Tiny-ImageNet) first, then the rest alphabetically.
  names = wanted or sorted((p.name for p in root.iterdir() if p.is_dir()), key=lambda n: ("tiny" not in n, n))
  tables = {}
  for name in names:
    if not (root / name).is_dir():
      parser.error(f"--tables {name}: no folder {root / name}")
    tables[name] = read_table(root / name)
  if not any(r.complete for t in tables.values() for runs in t.values() for r in runs):
    parser.error(f"{root}: no complete run (summary.json with complete: true) found")
  os.makedirs(args.out, exist_ok=True)
  js = table_json(tables)
  base = os.path.join(args.out, args.prefix)
  with open(f"{base}_table.json", "w") as f:
    json.dump(js, f, indent=1)
    f.write("\n")
  rel = lambda p: os.path.relpath(p, ROOT) if os.path.abspath(p).startswith(str(ROOT)) else p
  command = f"python experiments/report.py --root {rel(args.root)} --out {rel(args.out)} --prefix {args.prefix}"
  with open(f"{base}_table.md", "w") as f:
    f.write(markdown(tables, js, command))
  written = [f"{base}_table.md", f"{base}_table.json"]
  if not args.no_plots:
    plot(tables, js, f"{base}_curves.png", f"{base}_final.png")
    written += [f"{base}_curves.png", f"{base}_final.png"]
  if args.readme:
    try:
      update_readme(args.readme, readme_table(tables, js))
    except (OSError, ValueError) as e:
      parser.error(str(e))
    written.append(args.readme)
  print("wrote " + ", ".join(rel(p) for p in written))
  for name, table in tables.items():
    print(f"[{dataset_name(table, name)}]")
    for line in verdicts(js[dataset_name(table, name)]):
      print("  " + line)
  return 0


if __name__ == "__main__":
  sys.exit(main())
