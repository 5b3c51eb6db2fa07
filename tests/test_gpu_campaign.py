"""experiments/gpu_campaign.py in smoke mode (every phase at tiny sizes on a CPU), and the subset archive it carries
(experiments/gpu_campaign_data.py) against the full archive it is drawn from."""

import json
import pathlib
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from svdkd_jax import config_files
from svdkd_jax import input_pipeline
from svdkd_jax.data import convert
from svdkd_jax.data import sources

from test_convert import class_tree  # pylint: disable=g-bad-import-order

ROOT = pathlib.Path(__file__).resolve().parents[1]
campaign_data = config_files.load_module(ROOT / "experiments" / "gpu_campaign_data.py")


def test_subset_archive_holds_the_draw_of_train_per_class_and_the_test_split(tmp_path):
  full = convert.convert("cifar10_folders", str(class_tree(tmp_path / "src", {"train": 6, "test": 2})),
                         str(tmp_path / "full"))
  meta = campaign_data.build(str(full), 4, tmp_path / "subset")
  assert meta["train"]["n"] == 12 and meta["train"]["per_class_min"] == meta["train"]["per_class_max"] == 4
  kept = sources.per_class_draw(sources.load_archive(full, "train").labels, 4, input_pipeline.SUBSET_SEED)
  want, got = sources.load_archive(full, "train"), sources.load_archive(tmp_path / "subset", "train")
  np.testing.assert_array_equal(got.images, want.images[kept])
  np.testing.assert_array_equal(got.labels, want.labels[kept])
  # The token per_class=4 on the subset draws every image of it, in the order of the full archive's draw.
  np.testing.assert_array_equal(sources.per_class_draw(got.labels, 4, input_pipeline.SUBSET_SEED), np.arange(12))
  assert (tmp_path / "subset" / "test.npz").read_bytes() == (full / "test.npz").read_bytes()
  assert str(tmp_path) not in json.dumps(meta)


@pytest.mark.slow
def test_smoke_campaign_runs_every_phase(tmp_path):
  """Wheels (present here), the checks, the plan, the four runs (the distilled one on the trained teacher) and the
  packed results: the four files of `--out`."""
  out, work = tmp_path / "out", tmp_path / "work"
  proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "gpu_campaign.py"), "--smoke", "--out", str(out),
                         "--work", str(work)], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert sorted(p.name for p in out.iterdir()) == ["campaign.json", "campaign.log", "checks.jsonl", "runs.tar.gz"]
  checks = [json.loads(line) for line in (out / "checks.jsonl").read_text().splitlines()]
  assert [c["check"] for c in checks] == ["devices", "bench_svd", "bench_step"] and all(c["rc"] == 0 for c in checks)
  result = json.loads((out / "campaign.json").read_text())
  assert "errors" not in result and result["plan"]["epoch_s"]["kd_svd_exact"] > 0
  assert set(result["runs"]) == {"teacher", "student", "kd_svd_exact_mean", "kd_svd_exact_mean_untrained_teacher"}
  with tarfile.open(out / "runs.tar.gz") as tar:
    names = set(tar.getnames())
    for run in result["runs"]:
      assert {f"runs/{run}/{name}" for name in ("config.json", "summary.json", "metrics.jsonl")} <= names
    configs = {run: json.load(tar.extractfile(f"runs/{run}/config.json")) for run in result["runs"]}
  assert configs["kd_svd_exact_mean"]["teacher"]["workdir"] == str(work / "runs" / "teacher")
  assert configs["kd_svd_exact_mean_untrained_teacher"]["teacher"]["weights"] == "random"
