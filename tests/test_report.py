"""experiments/report.py on synthetic table workdirs laid out as experiments/run_table.py and the trainer write them."""

import json
import pathlib

import pytest

from svdkd_jax import config_files

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
  return config_files.load_module(ROOT / "experiments" / "report.py")


# Last-epoch accuracies (fractions) per variant and seed; the best epoch is 1 point higher.
LAST = {"teacher": {0: 0.30}, "student": {0: 0.20, 1: 0.21, 2: 0.22},
        "kd_svd": {0: 0.25, 1: 0.255, 2: 0.26},  # +4.5 points, std 0.5: beats S-DNN
        "fsp": {0: 0.19, 1: 0.23, 2: 0.27}}  # +2 points, std 4: does not


def write_run(workdir: pathlib.Path, variant: str, seed: int, last: float, *, epochs: int = 3,
              complete: bool = True) -> None:
  workdir.mkdir(parents=True)
  rows = []
  for e in range(epochs):
    rows.append({"step": 10 * e + 5, "epoch": e, "ce_loss": 2.0 - e, "accuracy": 0.1 * e, "grad_norm_main": 1.0 + e,
                 "grad_norm": 1.5, **({"grad_norm_dist": 0.5, "dist/pair_0": 3.0 + seed, "teacher_accuracy": 0.4}
                                      if variant not in ("teacher", "student") else {})})
    rows.append({"step": 10 * (e + 1), "epoch": e, "eval_accuracy": last - 0.01 * (epochs - 1 - e) + (0.01 if e == 1
                                                                                                       else 0.0)})
  (workdir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"cut")  # an interrupted line
  summary = {"complete": complete, "last_eval_accuracy": last, "best_eval_accuracy": last + 0.01, "best_epoch": 1,
             "epochs": epochs, "wall_time_sec": 60.0 * (1 + seed), "versions": {"jax": "x.y"}, "devices": 1,
             "config": {"data": {"name": "synthetic_data", "eval_split": "val"}, "model": {"width": 0.125},
                        "optim": {"boundaries": [1, 2]}}}
  (workdir / "summary.json").write_text(json.dumps(summary))
  (workdir / "run.log").write_text(f"\n$ /venv/bin/python -m svdkd_jax.main --config=c.py:{variant} --config.seed={seed}\n")


@pytest.fixture()
def table_root(tmp_path):
  for variant, seeds in LAST.items():
    for seed, last in seeds.items():
      write_run(tmp_path / "runs" / "cpu_synth" / variant / f"seed{seed}", variant, seed, last)
  # One student of another method that never finished: listed as missing, not counted.
  write_run(tmp_path / "runs" / "cpu_synth" / "kd_svd_exact" / "seed0", "kd_svd_exact", 0, 0.9, complete=False)
  return tmp_path


def test_json_holds_per_seed_percentages(report, table_root):
  tables = {"cpu_synth": report.read_table(table_root / "runs" / "cpu_synth")}
  js = report.table_json(tables)
  assert list(js) == ["synthetic_data"]
  methods = js["synthetic_data"]
  assert list(methods)[:2] == ["teacher", "student"]  # display order, not alphabetical
  assert methods["student"] == {"seeds": [0, 1, 2], "last": [20.0, 21.0, 22.0], "best": [21.0, 22.0, 23.0]}
  assert methods["kd_svd"]["last"] == [25.0, 25.5, 26.0]
  assert methods["kd_svd_exact"] == {"seeds": [], "last": [], "best": []}


def test_verdicts_compare_with_twice_the_spread(report, table_root):
  js = report.table_json({"t": report.read_table(table_root / "runs" / "cpu_synth")})["synthetic_data"]
  lines = report.verdicts(js)
  paper = next(line for line in lines if "svd_grad=paper" in line and "vs S-DNN" in line)
  assert "+4.50 points" in paper and "2.00" in paper and "beats S-DNN by more" in paper  # 2 x std(student) = 2.00
  ranking = next(line for line in lines if line.startswith("Students ranked"))
  assert ranking.index("KD-SVD") < ranking.index("FSP") < ranking.index("S-DNN")
  js["kd_svd"]["last"] = [21.0, 23.0, 25.0]  # +2 points with std 2: not more than twice the spread
  assert "does NOT beat" in report.verdicts(js)[0]


def test_cli_writes_markdown_json_and_plots(report, table_root, capsys):
  out = table_root / "out"
  assert report.main(["--root", str(table_root / "runs"), "--out", str(out), "--prefix", "t"]) == 0
  md = (out / "t_table.md").read_text()
  assert "| S-DNN (student alone) | 3/3 | 21.00 +- 1.00 | 22.00 +- 1.00 |" in md
  assert "| KD-SVD, svd_grad=paper | 3/3 | 25.50 +- 0.50 |" in md and "+4.50" in md
  assert "missing (no complete summary)" in md and "0/1" in md
  assert "`python -m svdkd_jax.main --config=c.py:kd_svd --config.seed=2`" in md  # the runner's command
  assert "65.05" in md and "51.82" in md  # the paper's numbers beside ours
  assert "`dist/pair_0`" in md and "| 4 |" in md  # diagnostics: 3 + seed averaged over seeds 0..2
  assert json.loads((out / "t_table.json").read_text())["synthetic_data"]["fsp"]["last"] == [19.0, 23.0, 27.0]
  for name in ("t_curves.png", "t_final.png"):
    data = (out / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
  assert "beats S-DNN" in capsys.readouterr().out


def test_diagnostics_average_the_last_epoch_over_seeds(report, table_root):
  runs = report.read_table(table_root / "runs" / "cpu_synth")["kd_svd"]
  d = report.diagnostics(runs)
  assert d["dist/pair_0"] == pytest.approx(4.0)  # 3 + seed, seeds 0..2
  assert d["grad_norm_main"] == pytest.approx(3.0)  # 1 + last epoch (2)
  assert d["teacher_accuracy"] == pytest.approx(0.4) and "dist/pair_0" not in report.diagnostics(
      report.read_table(table_root / "runs" / "cpu_synth")["student"])


def test_cli_errors_are_one_line(report, tmp_path):
  with pytest.raises(SystemExit):
    report.main(["--root", str(tmp_path / "nowhere")])
  (tmp_path / "empty" / "t").mkdir(parents=True)
  with pytest.raises(SystemExit):
    report.main(["--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])


def test_readme_block_is_replaced_between_markers(report, table_root):
  readme = table_root / "README.md"
  readme.write_text(f"# x\n\nbefore\n{report.README_BEGIN}\nold table\n{report.README_END}\nafter\n")
  assert report.main(["--root", str(table_root / "runs"), "--out", str(table_root / "o"), "--no_plots",
                      "--readme", str(readme)]) == 0
  text = readme.read_text()
  assert "old table" not in text and text.startswith("# x\n\nbefore\n") and text.endswith("after\n")
  assert "| KD-SVD, svd_grad=paper | 3 | 25.50 +- 0.50 | 26.50 +- 0.50 | +4.50 | 51.82 | 65.54 / 65.05 |" in text
  # Running it again leaves one block.
  report.main(["--root", str(table_root / "runs"), "--out", str(table_root / "o"), "--no_plots", "--readme", str(readme)])
  assert readme.read_text() == text
  (table_root / "plain.md").write_text("no markers")
  with pytest.raises(SystemExit):
    report.main(["--root", str(table_root / "runs"), "--out", str(table_root / "o"), "--no_plots",
                 "--readme", str(table_root / "plain.md")])
