"""experiments/scale_report.py: rungs side by side, the across-rung rule and the outputs, on synthetic runs."""

import json
import math
import pathlib

import pytest

from svdkd_jax import config_files

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scale():
  with pytest.MonkeyPatch.context() as mp:
    mp.syspath_prepend(str(ROOT / "experiments"))  # scale_report imports its siblings
    yield config_files.load_module(ROOT / "experiments" / "scale_report.py")


def write_run(workdir: pathlib.Path, last: float, epochs: int) -> None:
  workdir.mkdir(parents=True)
  config = {"train": {"epochs": epochs, "batch_size": 4}, "data": {}, "model": {}, "teacher": {}, "distill": {}}
  (workdir / "metrics.jsonl").write_text(json.dumps({"step": 1, "epoch": 0, "eval_accuracy": last}) + "\n")
  (workdir / "summary.json").write_text(json.dumps({"complete": True, "last_eval_accuracy": last,
                                                    "best_eval_accuracy": last, "wall_time_sec": 120.0,
                                                    "config": config}))


def write_rung(root: pathlib.Path, table: str, runs: dict, epochs: int) -> None:
  for variant, lasts in runs.items():
    for seed, last in enumerate(lasts):
      write_run(root / table / variant / f"seed{seed}", last, 2 * epochs if variant == "teacher" else epochs)


@pytest.fixture(scope="module")
def report_js(scale, tmp_path_factory):
  """5,000 images: KD-SVD and its control gain alike; 50,000: KD-SVD gains, the control does not; 3 seeds of the
  soft-target rows at the large rung, one KD-SVD seed still missing."""
  tmp = tmp_path_factory.mktemp("scale")
  student = [0.50, 0.51, 0.52, 0.505, 0.495]
  write_rung(tmp / "small", "t5k", {
      "teacher": [0.60], "student": student, "kd_svd_exact_mean": [x + 0.02 for x in student],
      "kd_svd_exact_mean_untrained_teacher": [x + 0.02 + d for x, d in zip(student, (.001, -.001, .002, -.002, 0))],
      "soft_target": [x + 0.015 for x in student], "kd_svd_exact_mean_soft_target": [x + 0.03 for x in student]}, 40)
  large = [0.70, 0.71, 0.705, 0.695, 0.70]
  write_rung(tmp / "large", "t50k", {
      "teacher": [0.80], "student": large, "kd_svd_exact_mean": [x + 0.01 for x in large[:4]],
      "kd_svd_exact_mean_untrained_teacher": [x - 0.002 + d for x, d in zip(large, (0, .001, -.001, 0, .002))],
      "soft_target": [x + 0.02 for x in large[:3]]}, 20)
  return scale.scale_json({5_000: (tmp / "small", "t5k"), 50_000: (tmp / "large", "t50k"),
                           25_000: (tmp / "large", "not_run")})


def test_a_probe_s_teacher_measured_on_test(scale, tmp_path):
  write_rung(tmp_path, "t25k", {"student": [0.60, 0.62, 0.61]}, 40)
  (tmp_path / "t25k" / scale.TEACHER_TEST).write_text(json.dumps({"accuracy": 66.5, "epochs": 80, "split": "test"}))
  rung = scale.rung_json(25_000, tmp_path, "t25k")
  assert rung["rows"]["teacher"]["last"] == [66.5] and rung["epochs"] == {"teacher": 80, "student": 40}
  assert rung["teacher_margin"] == pytest.approx(66.5 - 61.0)


def test_rungs_and_verdicts(scale, report_js):
  js = report_js
  assert list(js["rungs"]) == ["5000", "50000"]  # a rung without a folder is left out
  small, large = js["rungs"]["5000"], js["rungs"]["50000"]
  assert small["epochs"] == {"teacher": 80, "student": 40} and large["epochs"] == {"teacher": 40, "student": 20}
  assert small["teacher_margin"] == pytest.approx(100 * (0.60 - sum([0.50, 0.51, 0.52, 0.505, 0.495]) / 5), abs=0.01)
  get = lambda rung, a, b: next(c for c in rung["comparisons"] if (c["a"], c["b"]) == (a, b))
  knowledge_small = get(small, "kd_svd_exact_mean", "kd_svd_exact_mean_untrained_teacher")
  assert knowledge_small["diffs"] == [-0.1, 0.1, -0.2, 0.2, 0.0] and knowledge_small["verdict"] == \
      "refuted in this regime" and knowledge_small["note"] == "mean within 1 SE of 0"
  knowledge_large = get(large, "kd_svd_exact_mean", "kd_svd_exact_mean_untrained_teacher")
  assert knowledge_large["seeds"] == [0, 1, 2, 3] and knowledge_large["diffs"] == [1.2, 1.1, 1.3, 1.2]
  assert knowledge_large["verdict"] == "confirmed (interim: 4 of 5 seeds)"
  soft = get(large, "soft_target", "student")
  assert soft["planned_seeds"] == 3 and soft["verdict"] == "confirmed"  # the plan runs soft targets on 3 seeds
  assert get(large, "kd_svd_exact_mean_soft_target", "student")["verdict"] == "pending (0 of 3 seeds)"
  assert any("KD-SVD exact+mean: seeds [4]" in p for p in large["pending"])


def test_across_rungs(report_js):
  across = {(x["a"], x["b"]): x for x in report_js["across"]}
  knowledge = across[("kd_svd_exact_mean", "kd_svd_exact_mean_untrained_teacher")]
  assert knowledge["rungs"] == [5000, 50000] and knowledge["difference"] == pytest.approx(1.2 - 0.0, abs=1e-3)
  small_se = math.sqrt(sum(x * x for x in (-0.1, 0.1, -0.2, 0.2, 0.0)) / 4 / 5)
  large_se = math.sqrt(sum((x - 1.2) ** 2 for x in (1.2, 1.1, 1.3, 1.2)) / 3 / 4)
  assert knowledge["se"] == pytest.approx(math.hypot(small_se, large_se), abs=1e-3) and knowledge["disagree"]
  # KD-SVD vs S-DNN: +2.0 at 5,000 (confirmed), +1.0 at 50,000 (confirmed): 1 point apart, SEs near 0.
  assert across[("kd_svd_exact_mean", "student")]["disagree"]
  assert ("kd_svd_exact_mean_soft_target", "student") not in across  # pending at 50,000


def test_outputs(scale, report_js, tmp_path):
  md = scale.markdown(report_js, "cmd")
  assert "| KD-SVD exact+mean vs KD-SVD exact+mean, untrained teacher | +0.00 +- 0.07, refuted in this regime; mean " \
         "within 1 SE of 0 (5/5) | +1.20 +- 0.04, confirmed (interim: 4 of 5 seeds) |" in md
  assert "| epochs (student / teacher) | 40 / 80 | 20 / 40 |" in md
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{scale.README_BEGIN}\nold\n{scale.README_END}\nend\n")
  from report import update_readme  # pylint: disable=import-outside-toplevel
  update_readme(str(readme), scale.readme_block(report_js), scale.README_BEGIN, scale.README_END)
  text = readme.read_text()
  assert "old" not in text and "the rungs disagree" in text and text.endswith("end\n")
  png = tmp_path / "gain.png"
  assert scale.plot(report_js, str(png)) and png.stat().st_size > 10_000
