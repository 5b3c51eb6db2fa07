"""experiments/colab_tpu.ipynb runs end to end: its own cells, in smoke mode (digits, 2 steps per run) on the CPU."""

import json
import pathlib

import nbclient
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "experiments" / "colab_tpu.ipynb"


@pytest.mark.slow
def test_notebook_runs_in_smoke_mode(monkeypatch, tmp_path):
  monkeypatch.setenv("SVDKD_NOTEBOOK_SMOKE", "1")
  monkeypatch.setenv("SVDKD_NOTEBOOK_ROOT", str(tmp_path))
  monkeypatch.setenv("SVDKD_REPO_DIR", str(ROOT))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(ROOT)}}).execute()
  printed = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
  assert "smoke mode: the bundled digits" in printed
  for run in ("teacher", "kd_svd_exact_mean"):  # the student restored the teacher the notebook trained
    summary = json.loads((tmp_path / "quickstart" / run / "summary.json").read_text())
    assert summary["step"] == 2 and 0.0 <= summary["last_eval_accuracy"] <= 1.0, summary
    assert str(tmp_path / "quickstart" / run) in printed  # the last cell printed it
