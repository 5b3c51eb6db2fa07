"""experiments/regime_report.py: the paired verdict rule, the plan's comparisons and the outputs, on synthetic table
workdirs."""

import json
import math
import pathlib

import pytest

from svdkd_jax import config_files

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def regime(tmp_path_factory):
  with pytest.MonkeyPatch.context() as mp:
    mp.syspath_prepend(str(ROOT / "experiments"))  # regime_report imports its sibling report.py
    yield config_files.load_module(ROOT / "experiments" / "regime_report.py")


def rows(**methods):
  return {m: {"seeds": list(range(len(v))), "last": v, "best": [x + 1 for x in v]} for m, v in methods.items()}


def test_verdict_rule(regime):
  student = [50.0, 51.0, 52.0, 50.5, 49.5]
  confirmed = regime.paired(rows(student=student, kd_svd_exact=[52.0, 52.5, 54.0, 52.0, 51.5]), "kd_svd_exact")
  d = [2.0, 1.5, 2.0, 1.5, 2.0]
  assert confirmed["diffs"] == d and confirmed["mean"] == pytest.approx(1.8)
  sd = math.sqrt(sum((x - 1.8) ** 2 for x in d) / 4)
  assert confirmed["sd"] == pytest.approx(sd) and confirmed["se"] == pytest.approx(sd / math.sqrt(5))
  assert confirmed["verdict"] == "confirmed"
  # Large mean but one negative pair: not confirmed.
  one_negative = regime.paired(rows(student=student, kd_svd_exact=[55.0, 55.0, 51.0, 55.0, 55.0]), "kd_svd_exact")
  assert one_negative["mean"] > 2 * one_negative["se"] and one_negative["verdict"] == "inconclusive"
  # All positive but the mean within two standard errors: inconclusive.
  noisy = regime.paired(rows(student=student, kd_svd_exact=[50.1, 51.1, 58.0, 50.6, 49.6]), "kd_svd_exact")
  assert all(x > 0 for x in noisy["diffs"]) and noisy["mean"] < 2 * noisy["se"] and noisy["verdict"] == "inconclusive"
  # Mean <= 0: refuted.
  assert regime.paired(rows(student=student, kd_svd=[50.0, 51.0, 52.0, 50.5, 49.5]), "kd_svd")["verdict"] == \
      "refuted in this regime"
  # Pairs only the seeds both rows have.
  partial = regime.paired({"student": {"seeds": [0, 1, 2], "last": [50.0, 51.0, 52.0], "best": [0, 0, 0]},
                           "fsp": {"seeds": [1, 2], "last": [53.0, 53.0], "best": [0, 0]}}, "fsp")
  assert partial["seeds"] == [1, 2] and partial["diffs"] == [2.0, 1.0]
  # Head to head: any two rows, the same rule; pending below 3 paired seeds, with the plan's seed count.
  head = regime.compare("regime_cifar10", rows(soft_target=[53.0, 54.0, 51.5], kd_svd_exact_mean=[52.0, 53.5, 51.0]),
                        "kd_svd_exact_mean", "soft_target")
  assert head["diffs"] == [-1.0, -0.5, -0.5] and head["verdict"] == "refuted in this regime (interim: 3 of 5 seeds)"
  two = regime.compare("regime_cifar10", rows(student=[50.0, 51.0], kd_svd=[52.0, 53.0]), "kd_svd", "student")
  assert two["verdict"] == "pending (2 of 3 seeds)"  # the plan keeps `paper` at 3 seeds in this table
  # Every planned seed in: the verdict as it stands, no longer interim.
  full = regime.compare("regime_cifar10", rows(student=student, soft_target=[52.0, 52.5, 54.0, 52.0, 51.5]),
                        "soft_target", "student")
  assert full["seeds"] == [0, 1, 2, 3, 4] and full["verdict"] == "confirmed"
  none = regime.compare("regime_cifar10_stride", rows(student=[50.0]), "fsp", "student")
  assert none["verdict"] == "pending (0 of 5 seeds)" and none["mean"] is None and none["se"] is None


def test_verdict_notes(regime):
  """A note says what the rule does not: a mean within 1 SE of zero, or more than 2 SE below it."""
  student = [50.0, 51.0, 52.0, 50.5, 49.5]
  # -0.1 mean, SE 0.37 (differences -0.6, +0.4, -0.6, +0.4, -0.1): refuted, but within one SE.
  tie = regime.compare("regime_cifar10", rows(student=student, soft_target=[49.4, 51.4, 51.4, 50.9, 49.4]),
                       "soft_target", "student")
  assert tie["verdict"] == "refuted in this regime" and tie["note"] == "mean within 1 SE of 0"
  assert regime.verdict_text(tie) == "refuted in this regime; mean within 1 SE of 0"
  below = regime.compare("regime_cifar10", rows(student=student, soft_target=[48.0, 49.5, 50.0, 49.0, 47.5]),
                         "soft_target", "student")
  assert below["mean"] < -2 * below["se"] and below["note"] == "below by more than 2 SE"
  clear = regime.compare("regime_cifar10", rows(student=student, soft_target=[52.0, 52.5, 54.0, 52.0, 51.5]),
                         "soft_target", "student")
  assert clear["verdict"] == "confirmed" and clear["note"] == "" and regime.verdict_text(clear) == "confirmed"
  assert regime.compare("regime_cifar10", rows(student=student[:2], soft_target=[49.0, 50.0]), "soft_target",
                        "student")["note"] == ""  # pending: no note


def test_comparisons_follow_the_plan(regime):
  head = {(t, a, b) for t, a, b in regime.COMPARISONS if b != "student"}
  assert head == {
      ("regime_cifar10", "kd_svd_exact_mean", "kd_svd_exact_mean_untrained_teacher"),
      ("regime_cifar10", "kd_svd_exact_mean", "kd_svd_exact_mean_deranged"),
      ("regime_cifar10", "kd_svd_exact_mean", "soft_target"),
      ("regime_cifar10", "kd_svd_exact_mean", "fsp"),
      ("regime_cifar10", "kd_svd_exact_mean_soft_target", "soft_target"),
      ("regime_cifar10", "attention_transfer", "kd_svd_exact_mean"),  # experiments/baselines_plan.md
      ("regime_cifar10", "attention_transfer", "soft_target"),
      ("regime_cifar10", "dkd", "kd_svd_exact_mean"),
      ("regime_cifar10", "dkd", "soft_target"),
      ("regime_cifar10_labels250", "kd_svd_exact_mean", "soft_target"),
      ("regime_cifar10_labels250", "kd_svd_exact_mean", "fsp"),
      ("regime_cifar10_labels250", "kd_svd_exact_mean_soft_target", "soft_target"),
      ("regime_cifar10_stride", "kd_svd_exact_mean", "soft_target"),
      ("regime_cifar10_labels50", "kd_svd_exact_mean", "soft_target"),
  }
  versus_student = {(t, a) for t, a, b in regime.COMPARISONS if b == "student"}
  assert versus_student == {(t, v) for t, r in regime.ROWS.items() for v in r if v not in ("teacher", "student")}
  assert len(regime.COMPARISONS) == len(set(regime.COMPARISONS)) == 14 + 11 + 7 + 5 + 2
  assert {v for t, a, b in regime.COMPARISONS for v in (a, b)} <= set(regime.METHODS)  # every row has a label
  assert "teacher" not in regime.ROWS["regime_cifar10_stride"]  # it reads the all-labels table's teacher


def write_run(workdir: pathlib.Path, last: float, labels: int, epochs: int = 4, dist: bool = False,
              loss_scale: str = "sskd", model: str = "vgg_student", teacher: str = "", complete: bool = True) -> None:
  """A finished run's workdir (summary.json, metrics.jsonl); with complete=False only the config.json that the
  trainer writes first."""
  workdir.mkdir(parents=True)
  config = {"data": {"name": "cifar10_jpeg", "labels_per_class": labels}, "train": {"batch_size": 4},
            "distill": {"loss_scale": loss_scale}, "model": {"name": model}, "teacher": {"workdir": teacher}}
  if not complete:
    (workdir / "config.json").write_text(json.dumps(config))
    return
  lines = []
  for e in range(epochs):
    grads = {"grad_norm_main": 2.0, "grad_norm_dist": 1.0 + e} if dist else {"grad_norm_main": 2.0}
    if dist:
      grads.update({"dist/pair_0": 8.0 * (e + 1), "dist/pair_1": 4.0})
    lines.append(json.dumps({"step": 2 * e + 1, "epoch": e, "accuracy": 0.2 * e, "loss": 1.0, **grads}))
    lines.append(json.dumps({"step": 2 * e + 2, "epoch": e, "eval_accuracy": last - 0.01 * (epochs - 1 - e)}))
  (workdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  summary = {"complete": True, "last_eval_accuracy": last, "best_eval_accuracy": last + 0.005, "wall_time_sec": 60.0,
             "config": config}
  (workdir / "summary.json").write_text(json.dumps(summary))


def write_table(root: pathlib.Path, table: str, labels: int, runs: dict, **kwargs) -> None:
  """runs: {variant: [last accuracy (fraction) per seed, None for a run still in progress]}."""
  for variant, lasts in runs.items():
    for seed, last in enumerate(lasts):
      write_run(root / table / variant / f"seed{seed}", last or 0.0, labels, complete=last is not None,
                dist=variant.startswith("kd_svd"), loss_scale="mean" if "mean" in variant else "sskd", **kwargs)


@pytest.fixture(scope="module")
def outputs(regime, tmp_path_factory):
  """Three tables as they land (the all-labels one with a control part-way and one row in progress, the stride
  table without a teacher of its own, 50 labels per class with only a run in progress) and the report on them."""
  tmp = tmp_path_factory.mktemp("regime")
  root = tmp / "runs"
  write_table(root, "regime_cifar10", 0, {
      "teacher": [0.6], "student": [0.50, 0.51, 0.49], "kd_svd_exact_mean": [0.52, 0.535, 0.51],
      "soft_target": [0.53, 0.54, 0.515], "fsp": [0.505, 0.50, 0.50], "kd_svd_exact_mean_deranged": [0.51, 0.52],
      "kd_svd_exact_mean_untrained_teacher": [None], "attention_transfer": [0.515, 0.52, 0.50],
      "dkd": [0.535, 0.545, 0.515]})
  write_table(root, "regime_cifar10_labels250", 250, {
      "teacher": [0.55], "student": [0.50, 0.51, 0.49], "kd_svd_exact": [0.52, 0.53, 0.515],
      "kd_svd_exact_mean": [0.52]})
  write_table(root, "regime_cifar10_stride", 0, {
      "student": [0.40, 0.41, 0.42], "kd_svd_exact_mean": [0.41, 0.415, 0.422], "soft_target": [0.45]},
      model="vgg_stride_student", teacher="experiments/results/regime_runs/regime_cifar10/teacher/seed0")
  write_table(root, "regime_cifar10_labels50", 50, {"teacher": [None]})
  readme = tmp / "README.md"
  readme.write_text(f"intro\n{regime.README_BEGIN}\nold\n{regime.README_END}\nend\n")
  out = tmp / "out"
  assert regime.main(["--root", str(root), "--out", str(out), "--readme", str(readme)]) == 0
  return {"root": root, "out": out, "readme": readme, "tmp": tmp}


def test_json(outputs):
  text = (outputs["out"] / "regime_table.json").read_text()
  assert "NaN" not in text  # a comparison without a number says null
  js = json.loads(text)
  assert list(js) == ["regime_cifar10", "regime_cifar10_labels250", "regime_cifar10_stride", "regime_cifar10_labels50"]
  assert [js[t]["labels_per_class"] for t in js] == [None, 250, None, 50]  # labels50: from its run's config.json
  assert js["regime_cifar10_stride"]["student_model"] == "vgg_stride_student"
  assert js["regime_cifar10_stride"]["teacher_table"] == "regime_cifar10"
  assert js["regime_cifar10_labels250"]["rows"]["kd_svd_exact"] == {"seeds": [0, 1, 2], "last": [52.0, 53.0, 51.5],
                                                                    "best": [52.5, 53.5, 52.0]}
  assert js["regime_cifar10_labels50"]["rows"] == {}  # nothing complete yet
  for t in js.values():
    for c in t["comparisons"]:
      assert set(c) == {"a", "b", "seeds", "diffs", "mean", "se", "planned_seeds", "verdict", "note"}
  verdicts = {(t, c["a"], c["b"]): c["verdict"] for t in js for c in js[t]["comparisons"]}
  assert verdicts == {
      ("regime_cifar10", "soft_target", "student"): "confirmed (interim: 3 of 5 seeds)",  # +3.0, +3.0, +2.5
      ("regime_cifar10", "fsp", "student"): "inconclusive (interim: 3 of 5 seeds)",  # +0.5, -1.0, +1.0
      ("regime_cifar10", "kd_svd_sskd_code", "student"): "pending (0 of 3 seeds)",
      ("regime_cifar10", "kd_svd", "student"): "pending (0 of 3 seeds)",
      ("regime_cifar10", "kd_svd_exact", "student"): "pending (0 of 5 seeds)",
      ("regime_cifar10", "kd_svd_exact_mean", "student"): "confirmed (interim: 3 of 5 seeds)",  # +2.0, +2.5, +2.0
      ("regime_cifar10", "kd_svd_exact_mean_untrained_teacher", "student"): "pending (0 of 5 seeds)",
      ("regime_cifar10", "kd_svd_exact_mean_deranged", "student"): "pending (2 of 5 seeds)",
      ("regime_cifar10", "kd_svd_exact_mean_soft_target", "student"): "pending (0 of 5 seeds)",
      ("regime_cifar10", "attention_transfer", "student"): "confirmed (interim: 3 of 5 seeds)",  # +1.5, +1.0, +1.0
      ("regime_cifar10", "dkd", "student"): "confirmed (interim: 3 of 5 seeds)",  # +3.5, +3.5, +2.5
      ("regime_cifar10", "kd_svd_exact_mean", "kd_svd_exact_mean_untrained_teacher"): "pending (0 of 5 seeds)",
      ("regime_cifar10", "kd_svd_exact_mean", "kd_svd_exact_mean_deranged"): "pending (2 of 5 seeds)",
      # -1.0, -0.5, -0.5
      ("regime_cifar10", "kd_svd_exact_mean", "soft_target"): "refuted in this regime (interim: 3 of 5 seeds)",
      # +1.5, +3.5, +1.0: mean 2.0 > 2 SE 1.53
      ("regime_cifar10", "kd_svd_exact_mean", "fsp"): "confirmed (interim: 3 of 5 seeds)",
      ("regime_cifar10", "kd_svd_exact_mean_soft_target", "soft_target"): "pending (0 of 5 seeds)",
      # -0.5, -1.5, -1.0
      ("regime_cifar10", "attention_transfer", "kd_svd_exact_mean"): "refuted in this regime (interim: 3 of 5 seeds)",
      ("regime_cifar10", "attention_transfer", "soft_target"): "refuted in this regime (interim: 3 of 5 seeds)",
      # +1.5, +1.0, +0.5: mean 1.0 > 2 SE 0.58
      ("regime_cifar10", "dkd", "kd_svd_exact_mean"): "confirmed (interim: 3 of 5 seeds)",
      ("regime_cifar10", "dkd", "soft_target"): "inconclusive (interim: 3 of 5 seeds)",  # +0.5, +0.5, 0.0
      ("regime_cifar10_labels250", "soft_target", "student"): "pending (0 of 5 seeds)",
      ("regime_cifar10_labels250", "fsp", "student"): "pending (0 of 5 seeds)",
      ("regime_cifar10_labels250", "kd_svd_sskd_code", "student"): "pending (0 of 3 seeds)",
      ("regime_cifar10_labels250", "kd_svd", "student"): "pending (0 of 3 seeds)",
      ("regime_cifar10_labels250", "kd_svd_exact", "student"): "confirmed (interim: 3 of 5 seeds)",
      ("regime_cifar10_labels250", "kd_svd_exact_mean", "student"): "pending (1 of 5 seeds)",
      ("regime_cifar10_labels250", "kd_svd_exact_mean_soft_target", "student"): "pending (0 of 5 seeds)",
      ("regime_cifar10_labels250", "kd_svd_exact_mean", "soft_target"): "pending (0 of 5 seeds)",
      ("regime_cifar10_labels250", "kd_svd_exact_mean", "fsp"): "pending (0 of 5 seeds)",
      ("regime_cifar10_labels250", "kd_svd_exact_mean_soft_target", "soft_target"): "pending (0 of 5 seeds)",
      ("regime_cifar10_stride", "soft_target", "student"): "pending (1 of 5 seeds)",
      ("regime_cifar10_stride", "fsp", "student"): "pending (0 of 5 seeds)",
      # +1.0, +0.5, +0.2
      ("regime_cifar10_stride", "kd_svd_exact_mean", "student"): "confirmed (interim: 3 of 5 seeds)",
      ("regime_cifar10_stride", "kd_svd", "student"): "pending (0 of 5 seeds)",
      ("regime_cifar10_stride", "kd_svd_exact", "student"): "pending (0 of 5 seeds)",
      ("regime_cifar10_stride", "kd_svd_exact_mean", "soft_target"): "pending (1 of 5 seeds)",
      ("regime_cifar10_labels50", "soft_target", "student"): "pending (0 of 5 seeds)",
      ("regime_cifar10_labels50", "kd_svd_exact_mean", "student"): "pending (0 of 5 seeds)",
      ("regime_cifar10_labels50", "kd_svd_exact_mean", "soft_target"): "pending (0 of 5 seeds)",
  }
  fsp = next(c for c in js["regime_cifar10"]["comparisons"] if c["a"] == "kd_svd_exact_mean" and c["b"] == "fsp")
  assert fsp["seeds"] == [0, 1, 2] and fsp["diffs"] == [1.5, 3.5, 1.0] and fsp["mean"] == 2.0
  assert fsp["se"] == pytest.approx(math.sqrt(3.5 / 2 / 3), abs=1e-3) and fsp["planned_seeds"] == 5
  # Rows vs S-DNN come first, in the plan's row order, then the head-to-head comparisons.
  assert [c["b"] for c in js["regime_cifar10"]["comparisons"]] == ["student"] * 11 + [
      "kd_svd_exact_mean_untrained_teacher", "kd_svd_exact_mean_deranged", "soft_target", "fsp", "soft_target",
      "kd_svd_exact_mean", "soft_target", "kd_svd_exact_mean", "soft_target"]


def test_readme_and_markdown(regime, outputs):
  text = outputs["readme"].read_text()
  assert text.startswith("intro\n") and text.endswith("end\n") and "old" not in text
  block = text[text.index(regime.README_BEGIN):text.index(regime.README_END)]
  assert "best" not in block.lower()  # the best epoch is selected on test: never beside the headline
  assert "mean +- SD over seeds" in block and "mean +- SE" in block
  assert "| KD-SVD exact+mean | 3/5 | 52.17 +- 1.26 | +2.17 +- 0.17 | confirmed (interim: 3 of 5 seeds) |" in block
  assert ("| KD-SVD exact+mean, deranged images | 2/5 | 51.50 +- 0.71 | +1.00 +- 0.00 | pending (2 of 5 seeds) |"
          in block)
  assert "| KD-SVD exact+mean + soft target | 0/5 | - | - | pending (0 of 5 seeds) |" in block
  assert "**all labels** (`regime_cifar10`; 21 of 57 runs complete)" in block
  assert "| Attention transfer | 3/5 | 51.17 +- 1.04 | +1.17 +- 0.17 | confirmed (interim: 3 of 5 seeds) |" in block
  assert "| DKD (decoupled KD) | 3/5 | 53.17 +- 1.53 | +3.17 +- 0.33 | confirmed (interim: 3 of 5 seeds) |" in block
  assert ("| all labels | Attention transfer vs KD-SVD exact+mean | 3/5 | -1.00 +- 0.29 | -0.50, -1.50, -1.00 | "
          "refuted in this regime (interim: 3 of 5 seeds); below by more than 2 SE |") in block
  assert "experiments/baselines_plan.md" in block
  # The stride table: named by its student, its rows too, with the teacher it shares.
  assert "**stride student, all labels** (`regime_cifar10_stride`; 7 of 30 runs complete)" in block
  assert "| T-DNN (teacher of `regime_cifar10`, shared) | 1 | 60.00 |" in block
  assert "| S-DNN (stride student alone) | 3/5 | 41.00 +- 1.00 |" in block
  assert ("| all labels | KD-SVD exact+mean vs Soft target | 3/5 | -0.67 +- 0.17 | -1.00, -0.50, -0.50 | "
          "refuted in this regime (interim: 3 of 5 seeds); below by more than 2 SE |") in block
  md = (outputs["out"] / "regime_table.md").read_text()
  assert "best epoch (%) (selected on test; not used)" in md
  assert "- KD-SVD exact+mean, untrained teacher: seeds [0, 1, 2, 3, 4] (in progress or stopped: [0])" in md
  assert ("| KD-SVD exact+mean vs FSP (1-stage) | 3/5 | +2.00 +- 0.76 | 1.53 | +1.50, +3.50, +1.00 | "
          "confirmed (interim: 3 of 5 seeds) |") in md
  labels250 = md.split("(`regime_cifar10_labels250`)")[1].split("(`regime_cifar10_stride`)")[0]
  assert "train 60.00 %, eval 50.00 %, gap +10.00" in labels250  # S-DNN: last epoch's batch accuracy 0.6 vs 0.50
  assert "- KD-SVD exact (released loss scale): 2.000" in labels250  # last quarter of 4 rows: the last, 4.0 / 2.0
  # Per image: the batch sum (sskd) divided by the batch size (4), the batch mean as it is; last quarter = last row.
  assert "- KD-SVD exact (released loss scale): pair 0 8.0000, pair 1 1.0000" in labels250
  assert "- KD-SVD exact+mean: pair 0 32.0000, pair 1 4.0000" in labels250
  ratios = labels250.split("||g_dist|| / ||g_main||")[1].split("KD-SVD loss per tap pair")[0]
  assert "KD-SVD" in ratios and "S-DNN" not in ratios  # no distillation gradient, no ratio


def test_plots(outputs):
  # The stride table has no teacher of its own and the 50-label table no finished run: neither stops a plot.
  for png in ("regime_diffs.png", "regime_curves.png", "regime_gap.png"):
    assert (outputs["out"] / png).stat().st_size > 10_000


def test_plan_tables_not_started(regime, tmp_path):
  root = tmp_path / "runs"
  write_table(root, "regime_cifar10", 0, {"student": [0.50, 0.51], "kd_svd_exact": [0.52, 0.53]})
  readme = tmp_path / "README.md"
  readme.write_text(f"{regime.README_BEGIN}\n{regime.README_END}\n")
  assert regime.main(["--root", str(root), "--out", str(tmp_path / "out"), "--readme", str(readme), "--no_plots"]) == 0
  text = readme.read_text()
  assert "| KD-SVD exact (released loss scale) | 2/5 | 52.50 +- 0.71 | +2.00 +- 0.00 | pending (2 of 5 seeds) |" in text
  assert ("Not started: `regime_cifar10_labels250` (37 runs), `regime_cifar10_stride` (30 runs), "
          "`regime_cifar10_labels50` (16 runs).") in text
