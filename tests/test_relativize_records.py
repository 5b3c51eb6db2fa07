"""experiments/relativize_records.py: absolute machine paths in run records become portable ones; reruns change
nothing; runs in progress are not touched; the records stay valid JSON/JSONL."""

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def script():
  spec = importlib.util.spec_from_file_location("relativize_records", ROOT / "experiments" / "relativize_records.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def write_run(run: pathlib.Path, *, complete: bool | None, clone: str = "/abs/clone") -> None:
  run.mkdir(parents=True)
  config = {"seed": 0, "data": {"source": "archive", "path": "/srv/data/cifar10_jpeg", "cache_dir": ""},
            "teacher": {"workdir": "experiments/results/t/teacher"}}
  (run / "config.json").write_text(json.dumps(config, indent=2))
  if complete is not None:
    (run / "summary.json").write_text(json.dumps({"complete": complete, "config": config}, indent=1))
  (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
  (run / "run.log").write_text(
      "\n$ /abs/venv/bin/python3.12 -m svdkd_jax.main --config=configs/c.py:kd_svd --workdir=/tmp/x/run\n"
      f"W1 checkpoint_manager.py:849] Given directory is read only={clone}/experiments/results/t/teacher/checkpoints\n"
      f"I1 networks.py:110] vgg_teacher restored from {clone}/experiments/results/t/teacher/checkpoints/30\n"
      "I1 input_pipeline.py:9] reading /srv/data/cifar10_jpeg/train.npz and /srv/data/cifar10_jpeg_v2\n"
      "I1 train.py:1] /jax/checkpoint/read/gbytes_per_sec: 30 MiB/s, see https://example.org/a/b\n")
  meta = run / "checkpoints" / "30" / "meta"
  meta.mkdir(parents=True)
  (meta / "metadata").write_text(json.dumps({"step": 30, "config": config}))
  (meta.parent / "commit_success.txt").write_text(f"Checkpoint commit was successful to {clone}/experiments/results/r")


def test_rewrites_finished_runs_once_and_leaves_runs_in_progress(tmp_path, monkeypatch, capsys):
  rr = script()
  monkeypatch.setattr(rr, "ROOT", tmp_path)
  results = tmp_path / "experiments" / "results"
  write_run(results / "done", complete=True)
  write_run(results / "running", complete=False)
  write_run(results / "starting", complete=None)
  before = {p: p.read_text() for p in (results / "running").rglob("*") if p.is_file()}
  assert rr.main([str(results)]) == 0
  out = capsys.readouterr().out
  assert "skipped (in progress): " + str(results / "running") + " (not complete)" in out
  assert "skipped (in progress): " + str(results / "starting") + " (no summary.json)" in out
  assert before == {p: p.read_text() for p in (results / "running").rglob("*") if p.is_file()}

  done = results / "done"
  config = json.loads((done / "config.json").read_text())
  assert config["data"]["path"] == "cifar10_jpeg"  # the archive's name, resolved in the data root
  assert json.loads((done / "summary.json").read_text())["config"]["data"]["path"] == "cifar10_jpeg"
  meta = json.loads((done / "checkpoints" / "30" / "meta" / "metadata").read_text())
  assert meta["config"]["data"]["path"] == "cifar10_jpeg" and meta["step"] == 30
  assert (done / "config.json").read_text().startswith('{\n  "seed": 0')  # the file's own formatting is kept
  log = (done / "run.log").read_text().splitlines()
  assert log[1] == ("$ python -m svdkd_jax.main --config=configs/c.py:kd_svd "
                    "--workdir=experiments/results/done")
  assert log[2].endswith("read only=experiments/results/t/teacher/checkpoints")
  assert log[3].endswith("restored from experiments/results/t/teacher/checkpoints/30")
  assert log[4].endswith("reading cifar10_jpeg/train.npz and /srv/data/cifar10_jpeg_v2")  # another folder: kept
  assert log[5].endswith("/jax/checkpoint/read/gbytes_per_sec: 30 MiB/s, see https://example.org/a/b")
  assert (done / "checkpoints" / "30" / "commit_success.txt").read_text().endswith(" to experiments/results/r")
  assert json.loads((done / "metrics.jsonl").read_text()) == {"step": 1, "loss": 2.0}

  after = {p: p.read_text() for p in results.rglob("*") if p.is_file()}
  assert rr.main([str(results)]) == 0  # a second run changes nothing
  assert "changed 0 files: none" in capsys.readouterr().out
  assert after == {p: p.read_text() for p in results.rglob("*") if p.is_file()}


def test_lists_what_no_rule_covers(tmp_path, monkeypatch, capsys):
  rr = script()
  monkeypatch.setattr(rr, "ROOT", tmp_path)
  run = tmp_path / "experiments" / "results" / "r"
  write_run(run, complete=True)
  with open(run / "run.log", "a") as f:
    f.write("I1 x.py:1] wrote /tmp/elsewhere/file.txt\n")
  assert rr.main([str(run.parent)]) == 1
  assert "absolute path left: " in capsys.readouterr().out
