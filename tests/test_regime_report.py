"""experiments/regime_report.py: the paired verdict rule and its outputs, on synthetic table workdirs."""

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


def write_run(workdir: pathlib.Path, last: float, labels: int, epochs: int = 4, dist: bool = False,
              loss_scale: str = "sskd") -> None:
  workdir.mkdir(parents=True)
  lines = []
  for e in range(epochs):
    grads = {"grad_norm_main": 2.0, "grad_norm_dist": 1.0 + e} if dist else {"grad_norm_main": 2.0}
    if dist:
      grads.update({"dist/pair_0": 8.0 * (e + 1), "dist/pair_1": 4.0})
    lines.append(json.dumps({"step": 2 * e + 1, "epoch": e, "accuracy": 0.2 * e, "loss": 1.0, **grads}))
    lines.append(json.dumps({"step": 2 * e + 2, "epoch": e, "eval_accuracy": last - 0.01 * (epochs - 1 - e)}))
  (workdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  summary = {"complete": True, "last_eval_accuracy": last, "best_eval_accuracy": last, "wall_time_sec": 60.0,
             "config": {"data": {"name": "cifar10_jpeg", "labels_per_class": labels}, "train": {"batch_size": 4},
                        "distill": {"loss_scale": loss_scale}}}
  (workdir / "summary.json").write_text(json.dumps(summary))


def test_outputs(regime, tmp_path):
  root = tmp_path / "runs"
  for table, labels in (("regime_cifar10", 0), ("regime_cifar10_labels250", 250)):
    for seed, (s, k) in enumerate([(0.50, 0.52), (0.51, 0.53), (0.49, 0.515)]):
      write_run(root / table / "student" / f"seed{seed}", s, labels)
      write_run(root / table / "kd_svd_exact" / f"seed{seed}", k, labels, dist=True)
    write_run(root / table / "teacher" / "seed0", 0.6, labels)
  write_run(root / "regime_cifar10_labels250" / "kd_svd_exact_mean" / "seed0", 0.52, 250, dist=True,
            loss_scale="mean")
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{regime.README_BEGIN}\nold\n{regime.README_END}\nend\n")
  assert regime.main(["--root", str(root), "--out", str(tmp_path / "out"), "--readme", str(readme)]) == 0
  js = json.loads((tmp_path / "out" / "regime_table.json").read_text())
  assert js["regime_cifar10"]["labels_per_class"] is None and js["regime_cifar10_labels250"]["labels_per_class"] == 250
  assert js["regime_cifar10"]["rows"]["kd_svd_exact"] == {"seeds": [0, 1, 2], "last": [52.0, 53.0, 51.5],
                                                          "best": [52.0, 53.0, 51.5]}
  text = readme.read_text()
  assert text.startswith("intro\n") and text.endswith("end\n") and "old" not in text
  assert "| KD-SVD, svd_grad=exact | 3 | 52.17 +- 0.76 |" in text and "+2.17 +- 0.29 | confirmed |" in text
  assert "(`regime_cifar10`; last-epoch test accuracy in %, mean +- std over seeds; 7 runs complete)" in text
  # Two paired seeds: no verdict in the README yet.
  for name in ("kd_svd_exact", "student"):
    for d in (root / "regime_cifar10" / name / "seed2").iterdir():
      d.unlink()
    (root / "regime_cifar10" / name / "seed2").rmdir()
  assert regime.main(["--root", str(root), "--out", str(tmp_path / "out2"), "--readme", str(readme), "--no_plots"]) == 0
  assert "| +2.00 +- 0.00 | pending (2 of 3 seeds) |" in readme.read_text()
  md = (tmp_path / "out" / "regime_table.md").read_text()
  assert "train 60.00 %, eval 50.00 %, gap +10.00" in md  # S-DNN: last epoch's batch accuracy 0.6 vs eval 0.50
  assert "- KD-SVD, svd_grad=exact: 2.000" in md  # last quarter of 4 rows: the last, 4.0 / 2.0
  # Per image: the batch sum (sskd) divided by the batch size (4), the batch mean as it is; last quarter = last row.
  assert "- KD-SVD, svd_grad=exact: pair 0 8.0000, pair 1 1.0000" in md
  assert "- KD-SVD, svd_grad=exact, loss_scale=mean: pair 0 32.0000, pair 1 4.0000" in md
  ratios = md.split("||g_dist|| / ||g_main||")[1].split("KD-SVD loss per tap pair")[0]
  assert "KD-SVD" in ratios and "S-DNN" not in ratios  # no distillation gradient, no ratio
  for png in ("regime_curves.png", "regime_gap.png"):
    assert (tmp_path / "out" / png).stat().st_size > 10_000
