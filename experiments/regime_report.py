r"""The regime tables' results: the paired comparisons of experiments/gain_plan.md and experiments/baselines_plan.md,
a JSON file, plots, a README block.

  python experiments/regime_report.py [--root experiments/results/regime_runs] [--out experiments/results] \
      [--readme experiments/results/README.md]

Reads the workdirs that experiments/run_table.py leaves in `ROOT/<table>/<variant>/seed<N>/` (summary.json,
metrics.jsonl, config.json, run.log; no checkpoints needed). One table per folder: `regime_cifar10` (all labels),
`regime_cifar10_labels250`, `regime_cifar10_stride` (the stride student, with `regime_cifar10`'s teacher),
`regime_cifar10_labels50`. Works on whatever runs are complete and lists the plan's runs still pending. Writes:
  OUT/regime_table.json   {table: {"labels_per_class": N or null, "student_model": name, "rows": {method: {"seeds",
                          "last", "best"}}, "comparisons": [{"a", "b", "seeds", "diffs", "mean", "se",
                          "planned_seeds", "verdict", "note"}]}}, accuracies in percent ("best" is selected on the test split
                          and enters no comparison)
  OUT/regime_table.md     per table: last-epoch accuracy per method, every comparison with its verdict, the S-DNN vs
                          KD-SVD train/eval gap, the distillation/main gradient ratio, the KD-SVD loss per tap pair,
                          wall times and commands, pending runs
  OUT/regime_diffs.png    every comparison as one row: per-seed paired differences, mean with a 2 SE bar, verdict
  OUT/regime_curves.png   eval accuracy by epoch, mean over seeds with a min-max band, one panel per table
  OUT/regime_gap.png      S-DNN against both KD-SVD exact rows: training-batch accuracy (labelled images, train
                          mode) and eval accuracy by epoch
  --readme FILE           the compact tables and verdicts, between FILE's `<!-- regime-table ... -->` markers

The verdict rule, fixed before the runs: for a comparison "A vs B", d_i = last-epoch test accuracy of A seed i minus
that of B seed i (same data order and initialisation), over the seeds both have. **Confirmed** (A above B) if
mean(d) > 2 x its standard error and every d_i > 0; **refuted in this regime** if mean(d) <= 0; **inconclusive**
otherwise; **pending** while fewer than 3 seeds are paired, and marked **interim** until all of the plan's seeds
are in. A note beside a verdict says what the rule does not: "mean within 1 SE of 0" (a refutation that only means
mean <= 0, or an inconclusive tie) or "below by more than 2 SE" (B clearly ahead). With 5 seeds and no true
difference, a comparison passes "mean > 2 SE" 5.8 % of the time and the full rule (every d_i > 0 too) 2.9 %
(simulated, normal differences; 9.2 % with 3 seeds), so over the 39 comparisons of these tables (4 of them with 3
seeds) about one false confirmation is expected if none of the differences were real. The headline is last-epoch accuracy: "+-" after an accuracy is the SD over seeds, after a paired
difference the SE of its mean.
"""

import argparse
import json
import math
import os
import pathlib
import statistics
import sys
from collections.abc import Callable, Sequence

import report  # experiments/report.py: the workdir readers (this folder is on sys.path when run as a script)

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Display order and labels. KD-SVD rows name their svd_grad mode; "+mean" is loss_scale=mean (the per-image batch
# mean), the others keep the released scale (the per-image losses summed over the batch).
METHODS = {
    "teacher": "T-DNN (teacher)",
    "student": "S-DNN (student alone)",
    "soft_target": "Soft target",
    "fsp": "FSP (1-stage)",
    "attention_transfer": "Attention transfer",
    "dkd": "DKD (decoupled KD)",
    "kd_svd_sskd_code": "KD-SVD sskd_code (the released gradient)",
    "kd_svd": "KD-SVD paper (the poster's gradient)",
    "kd_svd_exact": "KD-SVD exact (released loss scale)",
    "kd_svd_exact_mean": "KD-SVD exact+mean",
    "kd_svd_exact_mean_untrained_teacher": "KD-SVD exact+mean, untrained teacher",
    "kd_svd_exact_mean_deranged": "KD-SVD exact+mean, deranged images",
    "kd_svd_exact_mean_soft_target": "KD-SVD exact+mean + soft target",
}
KD_SVD = ("kd_svd_exact", "kd_svd_exact_mean", "kd_svd_sskd_code", "kd_svd", "kd_svd_exact_mean_untrained_teacher",
          "kd_svd_exact_mean_deranged", "kd_svd_exact_mean_soft_target")
STRIDE_STUDENT = "vgg_stride_student"
SEEDS = (0, 1, 2, 3, 4)
# experiments/gain_plan.md's and baselines_plan.md's rows and seeds per table, the regime table's rows included (its
# `paper` and `sskd_code` rows keep their 3 seeds). The stride table has no teacher of its own: it reads the all-labels table's.
ROWS = {
    "regime_cifar10": {
        "teacher": (0,), "student": SEEDS, "soft_target": SEEDS, "fsp": SEEDS, "kd_svd_sskd_code": (0, 1, 2),
        "kd_svd": (0, 1, 2), "kd_svd_exact": SEEDS, "kd_svd_exact_mean": SEEDS,
        "kd_svd_exact_mean_untrained_teacher": SEEDS, "kd_svd_exact_mean_deranged": SEEDS,
        "kd_svd_exact_mean_soft_target": SEEDS, "attention_transfer": SEEDS, "dkd": SEEDS},
    "regime_cifar10_labels250": {
        "teacher": (0,), "student": SEEDS, "soft_target": SEEDS, "fsp": SEEDS, "kd_svd_sskd_code": (0, 1, 2),
        "kd_svd": (0, 1, 2), "kd_svd_exact": SEEDS, "kd_svd_exact_mean": SEEDS, "kd_svd_exact_mean_soft_target": SEEDS},
    "regime_cifar10_stride": {
        "student": SEEDS, "soft_target": SEEDS, "fsp": SEEDS, "kd_svd_exact_mean": SEEDS, "kd_svd": SEEDS,
        "kd_svd_exact": SEEDS},
    "regime_cifar10_labels50": {"teacher": (0,), "student": SEEDS, "soft_target": SEEDS, "kd_svd_exact_mean": SEEDS},
}
# The plan's comparisons other than "row vs S-DNN", as (table, A, B): A vs B, paired by seed.
HEAD_TO_HEAD = (
    ("regime_cifar10", "kd_svd_exact_mean", "kd_svd_exact_mean_untrained_teacher"),
    ("regime_cifar10", "kd_svd_exact_mean", "kd_svd_exact_mean_deranged"),
    ("regime_cifar10", "kd_svd_exact_mean", "soft_target"),
    ("regime_cifar10", "kd_svd_exact_mean", "fsp"),
    ("regime_cifar10", "kd_svd_exact_mean_soft_target", "soft_target"),
    ("regime_cifar10", "attention_transfer", "kd_svd_exact_mean"),
    ("regime_cifar10", "attention_transfer", "soft_target"),
    ("regime_cifar10", "dkd", "kd_svd_exact_mean"),
    ("regime_cifar10", "dkd", "soft_target"),
    ("regime_cifar10_labels250", "kd_svd_exact_mean", "soft_target"),
    ("regime_cifar10_labels250", "kd_svd_exact_mean", "fsp"),
    ("regime_cifar10_labels250", "kd_svd_exact_mean_soft_target", "soft_target"),
    ("regime_cifar10_stride", "kd_svd_exact_mean", "soft_target"),
    ("regime_cifar10_labels50", "kd_svd_exact_mean", "soft_target"),
)
# Every comparison of the plan: each row vs S-DNN (`student`) in every table, then the head-to-head ones.
COMPARISONS = tuple([(table, v, "student") for table, rows in ROWS.items() for v in rows
                     if v not in ("teacher", "student")] + list(HEAD_TO_HEAD))
MIN_SEEDS = 3  # a comparison's verdict is given from this many paired seeds on
README_BEGIN = "<!-- regime-table: generated by experiments/regime_report.py --readme -->"
README_END = "<!-- /regime-table -->"
VERDICT_COLORS = {"confirmed": "tab:green", "refuted in this regime": "tab:red", "inconclusive": "tab:orange",
                  "pending": "0.55"}


def read_tables(root: pathlib.Path) -> dict[str, dict[str, list[report.RunResult]]]:
  """{table: {variant: runs}}: the plan's tables first, in its order, then any other folder; variants in METHODS
  order (unknown ones after, sorted)."""
  names = [p.name for p in root.iterdir() if p.is_dir()]
  names = [t for t in ROWS if t in names] + sorted(t for t in names if t not in ROWS)
  tables = {}
  for name in names:
    table = report.read_table(root / name)
    tables[name] = {v: table[v] for v in [v for v in METHODS if v in table] + [v for v in table if v not in METHODS]}
  return tables


def config_of(run: report.RunResult) -> dict:
  """The run's config: its summary's, or (for a run still in progress) the config.json the trainer writes first."""
  config = run.summary.get("config")
  if isinstance(config, dict):
    return config
  data = report.read_json(pathlib.Path(run.workdir) / "config.json")
  return report.config_lib.canonical(data) if data else {}


def labels_per_class(table: dict[str, list[report.RunResult]]) -> int | None:
  for runs in table.values():
    for r in runs:
      data = config_of(r).get("data", {})
      if "labels_per_class" in data:
        return int(data["labels_per_class"]) or None
  return None


def student_model(table: dict[str, list[report.RunResult]]) -> str | None:
  for variant, runs in table.items():
    for r in runs:
      name = config_of(r).get("model", {}).get("name")
      if variant != "teacher" and name:
        return name
  return None


def teacher_table(name: str, table: dict[str, list[report.RunResult]]) -> str:
  """The table whose teacher the students read (the stride table reads the all-labels table's)."""
  for variant, runs in table.items():
    for r in runs:
      workdir = config_of(r).get("teacher", {}).get("workdir")
      if variant != "teacher" and workdir and len(pathlib.Path(workdir).parts) >= 3:
        return pathlib.Path(workdir).parts[-3]
  return name


def paired(rows: dict, method: str, base: str = "student", which: str = "last") -> dict | None:
  """The paired differences `method - base` over their common seeds, with the verdict rule's numbers."""
  if method not in rows or base not in rows:
    return None
  a = dict(zip(rows[method]["seeds"], rows[method][which]))
  b = dict(zip(rows[base]["seeds"], rows[base][which]))
  seeds = sorted(set(a) & set(b))
  if not seeds:
    return None
  d = [a[s] - b[s] for s in seeds]
  mean = statistics.mean(d)
  sd = statistics.stdev(d) if len(d) > 1 else float("nan")
  se = sd / math.sqrt(len(d)) if len(d) > 1 else float("nan")
  if mean <= 0:
    verdict = "refuted in this regime"
  elif len(d) > 1 and mean > 2 * se and all(x > 0 for x in d):
    verdict = "confirmed"
  else:
    verdict = "inconclusive"
  return {"seeds": seeds, "diffs": [round(x, 2) for x in d], "mean": mean, "sd": sd, "se": se, "verdict": verdict}


def json_number(x: float | None) -> float | None:
  """Rounded for the JSON file; None where there is no number (JSON has no NaN)."""
  return None if x is None or math.isnan(x) else round(x, 3)


def planned_seeds(table: str, a: str, b: str) -> int:
  rows = ROWS.get(table, {})
  return len(set(rows.get(a, SEEDS)) & set(rows.get(b, SEEDS)))


def compare(table: str, rows: dict, a: str, b: str) -> dict:
  """One comparison "a vs b" of `table` on last-epoch accuracy (`compare_planned` with the table's plan)."""
  return compare_planned(rows, a, b, planned_seeds(table, a, b))


def compare_planned(rows: dict, a: str, b: str, planned: int) -> dict:
  """The comparison "a vs b" on last-epoch accuracy with `planned` paired seeds: pending below MIN_SEEDS paired
  seeds, then `paired`'s verdict, marked interim until every planned seed is in (a verdict from 3 of 5 seeds can
  still change), and its note (`strength`)."""
  p = paired(rows, a, b) or {"seeds": [], "diffs": [], "mean": None, "se": None}
  n = len(p["seeds"])
  if n < MIN_SEEDS:
    verdict = f"pending ({n} of {planned} seeds)"
  elif n < planned:
    verdict = f"{p['verdict']} (interim: {n} of {planned} seeds)"
  else:
    verdict = p["verdict"]
  return {"a": a, "b": b, "seeds": p["seeds"], "diffs": p["diffs"], "mean": json_number(p["mean"]),
          "se": json_number(p["se"]), "planned_seeds": planned, "verdict": verdict,
          "note": strength(p["mean"], p["se"]) if n >= MIN_SEEDS else ""}


def strength(mean: float | None, se: float | None) -> str:
  """What the verdict rule does not say: a mean within 1 SE of zero (a "refuted" that only means mean <= 0, an
  "inconclusive" that is a tie), or more than 2 SE below zero (B clearly ahead). "" otherwise."""
  if mean is None or se is None or math.isnan(se):
    return ""
  if abs(mean) <= se:
    return "mean within 1 SE of 0"
  if mean < -2 * se:
    return "below by more than 2 SE"
  return ""


def verdict_text(c: dict) -> str:
  """The verdict with its note, e.g. "refuted in this regime; mean within 1 SE of 0"."""
  return f"{c['verdict']}; {c['note']}" if c.get("note") else c["verdict"]


def comparisons(table: str, rows: dict) -> list[dict]:
  """The plan's comparisons of `table`, rows vs S-DNN first; a row the plan does not list meets S-DNN only."""
  versus_student = [(a, b) for t, a, b in COMPARISONS if t == table and b == "student"]
  versus_student += [(v, "student") for v in rows if v not in ROWS.get(table, {}) and v not in ("teacher", "student")]
  head_to_head = [(a, b) for t, a, b in COMPARISONS if t == table and b != "student"]
  return [compare(table, rows, a, b) for a, b in versus_student + head_to_head]


def table_json(tables: dict[str, dict[str, list[report.RunResult]]]) -> dict:
  out = {}
  for name, table in tables.items():
    rows = {}
    for variant, runs in table.items():
      done = [r for r in runs if r.complete]
      if not done:
        continue  # still running
      rows[variant] = {"seeds": [r.seed for r in done], "last": [round(r.accuracy("last"), 2) for r in done],
                       "best": [round(r.accuracy("best"), 2) for r in done]}
    out[name] = {"labels_per_class": labels_per_class(table), "student_model": student_model(table),
                 "teacher_table": teacher_table(name, table), "rows": rows, "comparisons": comparisons(name, rows)}
  return out


def _train_accuracy_by_epoch(run: report.RunResult) -> dict[int, float]:
  """Mean training-batch accuracy (labelled images, train mode: dropout and augmentation on) per epoch, in %."""
  by_epoch = {}
  for row in run.train_rows:
    if isinstance(row.get("accuracy"), (int, float)):
      by_epoch.setdefault(int(row["epoch"]), []).append(100 * row["accuracy"])
  return {e: statistics.mean(v) for e, v in by_epoch.items()}


def gap(runs: Sequence[report.RunResult]) -> tuple[float, float] | None:
  """Mean over seeds of (last-epoch training-batch accuracy, last eval accuracy), in %."""
  pairs = []
  for r in runs:
    train = _train_accuracy_by_epoch(r)
    if r.complete and train:
      pairs.append((train[max(train)], r.accuracy("last")))
  if not pairs:
    return None
  return statistics.mean(p[0] for p in pairs), statistics.mean(p[1] for p in pairs)


def _last_quarter(run: report.RunResult, logged: Callable[[dict], bool]) -> list[dict]:
  """The last quarter (at least one) of a complete run's training rows that satisfy `logged`; [] otherwise."""
  rows = [x for x in run.train_rows if logged(x)] if run.complete else []
  return rows[-max(1, len(rows) // 4):] if rows else []


def grad_ratio(runs: Sequence[report.RunResult]) -> float | None:
  """Mean over seeds of ||g_dist|| / ||g_main|| (global norms, before the per-tensor clipping) over the last
  quarter of each run's logged training rows: how hard the distillation pulls against the task."""
  tails = [_last_quarter(r, lambda x: x.get("grad_norm_dist") is not None and x.get("grad_norm_main")) for r in runs]
  per_run = [statistics.mean(x["grad_norm_dist"] / x["grad_norm_main"] for x in tail) for tail in tails if tail]
  return statistics.mean(per_run) if per_run else None


def pair_losses(runs: Sequence[report.RunResult]) -> list[float] | None:
  """Mean over seeds of the KD-SVD loss of each tap pair (`dist/pair_l`: taps l and l+1) per image, over the last
  quarter of each run's logged training rows. The released scale (`loss_scale=sskd`) sums over the batch, so it is
  divided by the batch size here; `mean` already is per image. Shows which taps a gradient fails to fit."""
  per_run = []
  for r in runs:
    tail = _last_quarter(r, lambda x: "dist/pair_0" in x)
    if not tail:
      continue
    config = r.summary.get("config", {})
    per_image = 1.0 if config.get("distill", {}).get("loss_scale") == "mean" else 1.0 / config["train"]["batch_size"]
    n = len([k for k in tail[0] if k.startswith("dist/pair_")])
    per_run.append([per_image * statistics.mean(x[f"dist/pair_{l}"] for x in tail) for l in range(n)])
  return [statistics.mean(col) for col in zip(*per_run)] if per_run else None


def title(js_table: dict) -> str:
  """The table in words: its label budget, and the student where it is not the VGG one."""
  n = js_table["labels_per_class"]
  budget = "all labels" if n is None else f"{n} labels per class"
  return f"stride student, {budget}" if js_table.get("student_model") == STRIDE_STUDENT else budget


def label(variant: str, js_table: dict | None = None) -> str:
  if variant == "student" and js_table and js_table.get("student_model") == STRIDE_STUDENT:
    return "S-DNN (stride student alone)"
  return METHODS.get(variant, variant)


def short(variant: str) -> str:
  """"KD-SVD exact+mean, untrained teacher", "S-DNN", "KD-SVD paper": the label without its parenthesis."""
  return METHODS.get(variant, variant).split(" (")[0]


def mean_pm_se(c: dict) -> str:
  """A comparison's paired difference: "mean +- SE" (the mean alone from one seed, "-" from none)."""
  if c["mean"] is None:
    return "-"
  return f"{c['mean']:+.2f} +- {c['se']:.2f}" if c["se"] is not None else f"{c['mean']:+.2f}"


def accuracy_text(xs: Sequence[float]) -> str:
  """Accuracies over seeds: "mean +- SD", the value alone from one seed."""
  return f"{xs[0]:.2f}" if len(xs) == 1 else report.mean_sd_text(xs)


def _versus(c: dict, js_table: dict) -> str:
  return f"{label(c['a'], js_table)} vs {short(c['b']) if c['b'] == 'student' else label(c['b'], js_table)}"


def _seeds(c: dict) -> str:
  return f"{len(c['seeds'])}/{c['planned_seeds']}"


def diffs_text(c: dict) -> str:
  """A comparison's per-seed differences, "+0.12, -0.30"."""
  return ", ".join(f"{x:+.2f}" for x in c["diffs"])


def planned_runs(name: str) -> int:
  return sum(len(seeds) for seeds in ROWS.get(name, {}).values())


def pending(name: str, table: dict[str, list[report.RunResult]]) -> list[str]:
  """The plan's runs of `table` without a complete summary: "label: seeds [...] (in progress: [...])"."""
  lines = []
  for variant, seeds in ROWS.get(name, {}).items():
    done = {r.seed for r in table.get(variant, []) if r.complete}
    running = sorted(r.seed for r in table.get(variant, []) if not r.complete)
    missing = [s for s in seeds if s not in done]
    if missing:
      lines.append(f"{METHODS.get(variant, variant)}: seeds {missing}"
                   + (f" (in progress or stopped: {running})" if running else ""))
  return lines


def row_table(name: str, js: dict, per_seed: bool = False) -> list[str]:
  """Markdown rows: seeds complete of planned, last-epoch accuracy (mean +- SD), the paired difference with S-DNN
  (mean +- SE) and its verdict. A table that reads another table's teacher shows that teacher first."""
  t = js[name]
  rows = t["rows"]
  vs_student = {c["a"]: c for c in t["comparisons"] if c["b"] == "student"}
  out = ["| method | seeds | last epoch (%), mean +- SD over seeds | vs S-DNN (points), mean +- SE | verdict |"
         + (" per-seed last |" if per_seed else ""), "|---|---|---|---|---|" + ("---|" if per_seed else "")]
  other = t.get("teacher_table", name)
  teacher = js.get(other, {}).get("rows", {}).get("teacher") if other != name else None
  if teacher:
    out.append(f"| T-DNN (teacher of `{other}`, shared) | {len(teacher['seeds'])} | {accuracy_text(teacher['last'])} "
               "| | |" + (f" {', '.join(f'{x:.2f}' for x in teacher['last'])} |" if per_seed else ""))
  planned = ROWS.get(name, {})
  for v in [v for v in METHODS if v in rows or v in planned] + [v for v in rows if v not in METHODS]:
    m = rows.get(v, {"seeds": [], "last": []})
    c = vs_student.get(v)
    seeds = f"{len(m['seeds'])}/{len(planned[v])}" if v in planned else str(len(m["seeds"]))
    per_seed_last = f" {', '.join(f'{x:.2f}' for x in m['last'])} |" if per_seed else ""
    out.append(f"| {label(v, t)} | {seeds} | {accuracy_text(m['last'])} | {mean_pm_se(c) if c else ''} | "
               f"{verdict_text(c) if c else ''} |" + per_seed_last)
  return out


def comparison_lines(js_table: dict) -> list[str]:
  return [f"{short(c['a'])} vs {short(c['b'])}: {mean_pm_se(c)} (mean +- SE) over seeds {c['seeds']}, differences "
          f"[{diffs_text(c)}]: {verdict_text(c)}" for c in js_table["comparisons"]]


def markdown(tables: dict, js: dict, command: str) -> str:
  out = ["# KD-SVD where it should help: converged students, label budgets, controls and head-to-head comparisons "
         "(generated by experiments/regime_report.py)", "", f"Regenerate: `{command}`", "",
         "The plans (rows, seeds, comparisons, how the controls are read): `experiments/gain_plan.md`, and for the "
         "attention transfer and DKD rows `experiments/baselines_plan.md`.", "",
         __doc__.split("\n\n")[-1].strip(), "",
         "KD-SVD rows name their `svd_grad` mode; `exact+mean` is `svd_grad=exact` with `loss_scale=mean` (the "
         "per-image batch mean), the other KD-SVD rows keep the released scale (the per-image losses summed over the "
         "batch).", ""]
  for name, table in tables.items():
    t = js[name]
    done = sum(len(m["seeds"]) for m in t["rows"].values())
    out += [f"## {title(t)} (`{name}`)", "",
            f"Student `{t.get('student_model')}`; {done} runs complete"
            + (f" of the plan's {planned_runs(name)}" if name in ROWS else "") + ". Last-epoch test accuracy.", ""]
    out += row_table(name, js, per_seed=True)
    out += ["", "Comparisons, A vs B paired by seed (A - B in points of last-epoch accuracy, mean +- SE):", "",
            "| A vs B | seeds | A - B, mean +- SE | 2 SE | per-seed A - B | verdict |", "|---|---|---|---|---|---|"]
    for c in t["comparisons"]:
      two_se = f"{2 * c['se']:.2f}" if c["se"] is not None else ""
      out.append(f"| {_versus(c, t)} | {_seeds(c)} | {mean_pm_se(c)} | {two_se} | {diffs_text(c)} | {verdict_text(c)} |")
    out += ["", "Training-batch accuracy (labelled images, dropout and augmentation on) against eval accuracy, last "
            "epoch, mean over seeds:", ""]
    for v in ("student", "kd_svd_exact", "kd_svd_exact_mean"):
      g = gap(table.get(v, []))
      if g:
        out.append(f"- {label(v, t)}: train {g[0]:.2f} %, eval {g[1]:.2f} %, gap {g[0] - g[1]:+.2f}")
    ratios = [(v, grad_ratio(runs)) for v, runs in table.items()]
    if any(x is not None for _, x in ratios):
      out += ["", "Distillation gradient against the main-task gradient, ||g_dist|| / ||g_main|| (global norms, before "
              "the per-tensor clipping to sigmoid(epoch) x ||g_main||), last quarter of training, mean over seeds:", ""]
      out += [f"- {label(v, t)}: {x:.3f}" for v, x in ratios if x is not None]
    losses = [(v, pair_losses(table.get(v, []))) for v in KD_SVD]
    if any(x is not None for _, x in losses):
      out += ["", "KD-SVD loss per tap pair and image (pair l: taps l and l+1, counted from 0), last quarter of "
              "training, mean over seeds. `exact`, `sskd_code` and `paper` minimise the same loss (the released "
              "scale): where a truncated gradient leaves a pair's loss well above `exact`'s, it does not fit those "
              "taps:", ""]
      out += [f"- {METHODS[v]}: " + ", ".join(f"pair {l} {x:.4f}" for l, x in enumerate(pl))
              for v, pl in losses if pl is not None]
    out += ["", "| method | seed | last (%) | best epoch (%) (selected on test; not used) | wall (min) | command |",
            "|---|---|---|---|---|---|"]
    for v, runs in table.items():
      for r in runs:
        if r.complete:
          out.append(f"| {v} | {r.seed} | {r.accuracy('last'):.2f} | {r.accuracy('best'):.2f} | "
                     f"{r.summary.get('wall_time_sec', 0) / 60:.1f} | `{r.command}` |")
        else:
          out.append(f"| {v} | {r.seed} | in progress or stopped (no complete summary) | | | `{r.command}` |")
    left = pending(name, table)
    if left:
      out += ["", "Pending (the plan's runs without a complete summary):", ""] + [f"- {x}" for x in left]
    out.append("")
  for name in ROWS:
    if name not in tables:
      out += [f"## `{name}`", "", f"Not started: none of the plan's {planned_runs(name)} runs has a folder yet.", ""]
  return "\n".join(out)


def readme_block(js: dict) -> str:
  out = [README_BEGIN, "",
         "Last-epoch test accuracy in %, mean +- SD over seeds; paired differences in points, mean +- SE; seeds:",
         "complete / planned. `exact+mean`: `svd_grad=exact` with `loss_scale=mean`; the other KD-SVD rows keep the",
         "released loss scale. Verdicts by the plans' rule (`experiments/gain_plan.md`,",
         "`experiments/baselines_plan.md`). Per-seed numbers and pending runs:",
         "`experiments/results/regime_table.md`; the differences at a glance: `experiments/results/regime_diffs.png`.",
         ""]
  for name, t in js.items():
    done = sum(len(m["seeds"]) for m in t["rows"].values())
    of = f" of {planned_runs(name)}" if name in ROWS else ""
    out += [f"**{title(t)}** (`{name}`; {done}{of} runs complete)", ""] + row_table(name, js) + [""]
  not_started = [name for name in ROWS if name not in js]
  if not_started:
    out += ["Not started: " + ", ".join(f"`{name}` ({planned_runs(name)} runs)" for name in not_started) + ".", ""]
  head = [(name, c) for name, t in js.items() for c in t["comparisons"] if c["b"] != "student"]
  if head:
    out += ["**Head to head** (A vs B, paired by seed)", "",
            "| table | A vs B | seeds | A - B, mean +- SE | per-seed A - B | verdict |", "|---|---|---|---|---|---|"]
    out += [f"| {title(js[name])} | {_versus(c, js[name])} | {_seeds(c)} | {mean_pm_se(c)} | {diffs_text(c)} | {verdict_text(c)} |"
            for name, c in head]
    out.append("")
  out.append(README_END)
  return "\n".join(out)


def _label(ax, title_text: str, ylabel: str) -> None:
  ax.set_title(title_text, fontsize=10)
  ax.set_xlabel("epoch")
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


def _verdict_color(verdict: str) -> str:
  return VERDICT_COLORS.get(verdict.split(" (")[0], "k")


def plot_diffs(js: dict, path: str) -> bool:
  """One row per comparison, grouped by table: each seed's paired difference as a dot, the mean with a +-2 SE bar,
  the zero line, and the verdict with its numbers at the right. False (nothing written) without a comparison."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import transforms  # pylint: disable=g-import-not-at-top

  groups = [(name, t["comparisons"]) for name, t in js.items() if t["comparisons"]]
  if not groups:
    return False
  xs = [0.0]
  for _, comps in groups:
    for c in comps:
      xs += c["diffs"]
      if c["mean"] is not None and c["se"] is not None:
        xs += [c["mean"] - 2 * c["se"], c["mean"] + 2 * c["se"]]
  lo, hi = min(xs), max(xs)
  pad = 0.06 * (hi - lo) + 0.1
  heights = [len(comps) for _, comps in groups]
  height = 1.2 + 0.3 * sum(heights) + 0.6 * len(groups)
  fig, axes = plt.subplots(len(groups), 1, figsize=(12, height), sharex=True, squeeze=False,
                           gridspec_kw={"height_ratios": heights, "hspace": 0.6 * len(groups) / sum(heights) / 0.3})
  fig.subplots_adjust(top=1 - 0.75 / height, bottom=0.6 / height)
  for ax, (name, comps) in zip(axes[:, 0], groups):
    t = js[name]
    text_at = transforms.blended_transform_factory(ax.transAxes, ax.transData)
    for i, c in enumerate(comps):
      color = _verdict_color(c["verdict"])
      if i % 2:
        ax.axhspan(i - 0.5, i + 0.5, color="0.95", zorder=0)  # banding guides the eye along a row
      # Seeds spread a little in height so that equal differences stay visible.
      ax.scatter(c["diffs"], [i + 0.08 * (s - 2) for s in c["seeds"]], s=16, facecolors="none", edgecolors="0.25",
                 linewidths=0.8, zorder=3)
      if c["mean"] is not None:
        ax.errorbar([c["mean"]], [i], xerr=[2 * c["se"]] if c["se"] is not None else None, fmt="D", ms=5,
                    color=color, ecolor=color, elinewidth=2, capsize=4, zorder=4)
      numbers = (f"  {c['mean']:+.2f} ± {c['se']:.2f} (SE), n = {len(c['seeds'])}"
                 if c["mean"] is not None and c["se"] is not None else "")
      ax.text(1.01, i, verdict_text(c) + numbers, transform=text_at, va="center", fontsize=8.5, color=color,
              fontweight="bold" if c["verdict"] == "confirmed" else "normal")
    first_head = next((i for i, c in enumerate(comps) if c["b"] != "student"), None)
    if first_head:
      ax.axhline(first_head - 0.5, color="0.4", lw=0.8, ls="--")
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(range(len(comps)), [f"{short(c['a'])}  vs  {short(c['b'])}" for c in comps], fontsize=8.5)
    ax.set_ylim(len(comps) - 0.5, -0.5)
    ax.set_xlim(lo - pad, hi + pad)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(labelbottom=True)  # every table keeps its own scale in view
    ax.set_title(f"{title(t)} ({name})", loc="left", fontsize=10, fontweight="bold")
  axes[-1, 0].set_xlabel("A − B: paired difference in last-epoch test accuracy (points)")
  fig.suptitle("A vs B, paired by seed: A − B per seed (circles), its mean (diamond) ± 2 SE (bar).\n"
               "Confirmed: mean > 2 SE and every seed > 0; refuted in this regime: mean ≤ 0; otherwise inconclusive; "
               "pending: fewer than 3 seeds; interim: not all planned seeds yet.", fontsize=9.5, x=0.5,
               y=1 - 0.1 / height, va="top")
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return True


def plot(tables: dict, js: dict, curves_path: str, gap_path: str) -> bool:
  """The eval curves and the train/eval gap, one panel per table with a finished student; False without one."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  palette = list(plt.get_cmap("tab10").colors) + ["#000080", "#808000", "#008080", "#800000"]
  colors = dict(zip(METHODS, palette))
  # A table whose students have not finished yet has nothing to plot (its teacher shows in the Markdown table).
  every_table = tables
  tables = {k: t for k, t in tables.items() if any(r.complete for v, runs in t.items() if v != "teacher" for r in runs)}
  if not tables:
    return False
  n = len(tables)
  cols = min(n, 2)
  rows = math.ceil(n / cols)
  labels = {v: short(v) for v in METHODS}
  for path, draw in ((curves_path, "curves"), (gap_path, "gap")):
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 5 * rows), squeeze=False)
    for ax in axes.flat[n:]:
      ax.set_visible(False)
    for ax, (name, table) in zip(axes.flat, tables.items()):
      if draw == "curves":
        # A table without a teacher of its own (the stride table) shows the one its students read, if present.
        shared = every_table.get(js[name].get("teacher_table", name), {}).get("teacher", [])
        report.plot_eval_curves(ax, table if "teacher" in table else {"teacher": shared, **table}, colors, labels)
        _label(ax, f"{title(js[name])} ({name}): eval accuracy (band: seed min-max)", "eval accuracy (%)")
        continue
      for variant in ("student", "kd_svd_exact", "kd_svd_exact_mean"):
        runs = [r for r in table.get(variant, []) if r.complete]
        if not runs:
          continue
        trains = [_train_accuracy_by_epoch(r) for r in runs]
        length = min(min(len(t) for t in trains), min(len(r.evals) for r in runs))
        epochs = list(range(1, length + 1))
        train_mean = [statistics.mean(t[e - 1] for t in trains) for e in epochs]
        eval_mean = [statistics.mean(100 * r.evals[e - 1]["eval_accuracy"] for r in runs) for e in epochs]
        ax.plot(epochs, train_mean, ls=":", color=colors.get(variant), label=f"{labels[variant]}: train batches")
        ax.plot(epochs, eval_mean, color=colors.get(variant), label=f"{labels[variant]}: eval")
      _label(ax, f"{title(js[name])} ({name}): train vs eval accuracy, mean over seeds", "accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
  return True


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--root", default=str(ROOT / "experiments" / "results" / "regime_runs"))
  parser.add_argument("--out", default=str(ROOT / "experiments" / "results"))
  parser.add_argument("--no_plots", action="store_true")
  parser.add_argument("--readme", default="")
  args = parser.parse_args(argv)
  root = pathlib.Path(args.root)
  if not root.is_dir():
    parser.error(f"--root {root}: no such folder (run experiments/run_table.py --root {root} first)")
  tables = read_tables(root)
  js = table_json(tables)
  os.makedirs(args.out, exist_ok=True)
  base = os.path.join(args.out, "regime")
  with open(f"{base}_table.json", "w") as f:
    json.dump(js, f, indent=1)
    f.write("\n")
  rel = lambda p: os.path.relpath(p, ROOT) if os.path.abspath(p).startswith(str(ROOT)) else p
  command = f"python experiments/regime_report.py --root {rel(args.root)} --out {rel(args.out)}"
  with open(f"{base}_table.md", "w") as f:
    f.write(markdown(tables, js, command))
  written = [f"{base}_table.md", f"{base}_table.json"]
  if not args.no_plots:
    if plot_diffs(js, f"{base}_diffs.png"):
      written.append(f"{base}_diffs.png")
    if plot(tables, js, f"{base}_curves.png", f"{base}_gap.png"):
      written += [f"{base}_curves.png", f"{base}_gap.png"]
  if args.readme:
    try:
      report.update_readme(args.readme, readme_block(js), README_BEGIN, README_END)
    except (OSError, ValueError) as e:
      parser.error(str(e))
    written.append(args.readme)
  print("wrote " + ", ".join(rel(p) for p in written))
  for name, t in js.items():
    print(f"[{name}: {title(t)}]")
    for line in comparison_lines(t):
      print("  " + line)
  return 0


if __name__ == "__main__":
  sys.exit(main())
