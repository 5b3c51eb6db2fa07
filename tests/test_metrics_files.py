"""metrics.jsonl, summary.json and config.json survive a killed writer; gs:// workdirs go through etils.epath."""

import json
import logging
import os
import pathlib

from etils import epath
import pytest

from svdkd_jax import config_files
from svdkd_jax import metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
TORN = '{"step": 95, "accur'  # what SIGKILL in the middle of `write` leaves as the last line


def _rows(*steps):
  return [{"step": s, "loss": 1.0 / s} for s in steps]


def _write(workdir, rows):
  writer = metrics.MetricWriter(str(workdir), tensorboard=False)
  for r in rows:
    writer.write(r["step"], {"loss": r["loss"]})
  return writer


def test_resume_after_sigkill_drops_the_torn_line_and_keeps_the_rest(tmp_path, caplog):
  _write(tmp_path, _rows(10, 20, 30, 40))
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write(TORN)
  with caplog.at_level(logging.WARNING):
    assert metrics.read_jsonl(tmp_path / metrics.METRICS_FILE) == _rows(10, 20, 30, 40)
  assert caplog.messages == [f"{path} line 5 is not a JSON object (cut short when a run was killed?); skipped: "
                             f"{TORN!r}"]
  # Resume from the checkpoint at step 30 (this raised JSONDecodeError before): rows up to 30 kept, verbatim.
  writer = metrics.MetricWriter(str(tmp_path), tensorboard=False)
  writer.truncate_after(30)
  assert path.read_text() == "".join(json.dumps(r) + "\n" for r in _rows(10, 20, 30))
  writer.write(40, {"loss": 0.025})
  assert metrics.read_jsonl(tmp_path / metrics.METRICS_FILE) == _rows(10, 20, 30, 40)


def test_a_row_written_after_a_torn_line_is_not_lost(tmp_path, caplog):
  """A run restarted without a checkpoint appends at once: its first row must not merge into the torn line."""
  _write(tmp_path, _rows(10))
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write(TORN)
  _write(tmp_path, _rows(20))
  with caplog.at_level(logging.WARNING):
    assert metrics.read_jsonl(tmp_path / metrics.METRICS_FILE) == _rows(10, 20)
  assert "line 2 is not a JSON object" in caplog.text


def test_rewrite_killed_midway_leaves_the_old_file(tmp_path, monkeypatch):
  _write(tmp_path, _rows(10, 20, 30))
  before = (tmp_path / "metrics.jsonl").read_text()

  def killed(*args):
    raise KeyboardInterrupt  # stands for the process dying between writing the new file and renaming it

  monkeypatch.setattr(os, "replace", killed)
  with pytest.raises(KeyboardInterrupt):
    metrics.MetricWriter(str(tmp_path), tensorboard=False).truncate_after(10)
  with pytest.raises(KeyboardInterrupt):
    metrics.write_summary(str(tmp_path), {"complete": True})
  monkeypatch.undo()
  assert (tmp_path / "metrics.jsonl").read_text() == before
  assert os.listdir(tmp_path) == ["metrics.jsonl"]  # no summary, no temporary file


def test_torn_summary_and_config_are_read_as_absent_with_a_warning(tmp_path, caplog):
  metrics.write_summary(str(tmp_path), {"complete": True, "step": 9})
  assert metrics.read_summary(str(tmp_path)) == {"complete": True, "step": 9}
  (tmp_path / "summary.json").write_text('{"complete": tr')
  run_table = config_files.load_module(ROOT / "experiments" / "run_table.py")
  with caplog.at_level(logging.WARNING):
    assert metrics.read_summary(str(tmp_path)) is None  # the run resumes instead of crashing
    assert run_table.read_summary(str(tmp_path)) is None and not run_table.is_complete(str(tmp_path))
  assert caplog.messages[0] == (f"{tmp_path / 'summary.json'} is not valid JSON (Expecting value: line 1 column 14 "
                                "(char 13), in 15 bytes): it was cut short or damaged; ignoring it.")
  metrics.write_json(tmp_path / "config.json", {"seed": 1})
  assert metrics.read_json(tmp_path / "config.json") == {"seed": 1}
  assert sorted(os.listdir(tmp_path)) == ["config.json", "summary.json"]  # no temporary file left behind


def test_gs_workdir_goes_through_epath(tmp_path, in_memory_gcs):
  """A gs:// workdir (an in-memory fsspec file system stands in for GCS): nothing touches the local disk."""
  workdir = "gs://bucket/runs/a"
  _write(workdir, _rows(10, 20))
  writer = metrics.MetricWriter(workdir, tensorboard=False)
  writer.truncate_after(10)
  writer.write(20, {"loss": 0.05})
  assert metrics.read_jsonl(epath.Path(workdir) / metrics.METRICS_FILE) == _rows(10, 20)
  metrics.write_summary(workdir, {"complete": True})
  assert metrics.read_summary(workdir) == {"complete": True}
  metrics.write_json(f"{workdir}/config.json", {"seed": 0})
  assert metrics.read_json(f"{workdir}/config.json") == {"seed": 0}
  assert metrics.read_summary("gs://bucket/runs/none") is None
  assert os.listdir(tmp_path) == []
