"""experiments/evaluate_run.py: a finished run's last checkpoint on another eval split. A held-out probe trains on
exactly its table's images, so its network, measured on the test split, is the table's."""

import pathlib

import jax
import numpy as np
import pytest

from svdkd_jax import config_files
from svdkd_jax import metrics as metrics_lib
from svdkd_jax import train

from conftest import read_params  # pylint: disable=wrong-import-order

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_probe_s_network_is_its_table_s(tiny_config, tmp_path, monkeypatch):
  monkeypatch.syspath_prepend(str(ROOT / "experiments"))
  evaluate_run = config_files.load_module(ROOT / "experiments" / "evaluate_run.py")
  subset = {"data__train_per_class": 100}  # 200 training images; the holdout comes from the other ~90
  table_run, probe_run = str(tmp_path / "table"), str(tmp_path / "probe")
  table = train.train_and_evaluate(tiny_config("teacher", **subset), table_run)
  train.train_and_evaluate(tiny_config("teacher", data__holdout=40, **subset), probe_run)
  # The eval split does not enter training: the same parameters, whichever split each epoch was evaluated on.
  for a, b in zip(jax.tree.leaves(read_params(table_run)), jax.tree.leaves(read_params(probe_run))):
    np.testing.assert_array_equal(a, b)
  # The probe's network on the test split scores what the table's run recorded at its last epoch.
  result = evaluate_run.evaluate_on(pathlib.Path(probe_run), "test")
  assert result["split"] == "test" and result["step"] == table["step"]
  assert result["accuracy"] == pytest.approx(100 * table["last_eval_accuracy"], abs=0.005)
  assert metrics_lib.read_summary(probe_run)["config"]["data"]["holdout"] == 40  # the run itself is unchanged
