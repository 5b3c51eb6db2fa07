"""Metrics: JSON lines in the workdir, TensorBoard events (tensorboardX, no TensorFlow), a progress bar, a summary.

Only process 0 writes. `WORKDIR/metrics.jsonl` holds one JSON object per logged event, e.g.
`{"step": 400, "epoch": 1, "lr": 0.01, "train_loss": 2.3, ..., "images_per_sec": 150.2}`; read it with pandas
(`pd.read_json(path, lines=True)`) or jq.
"""

from collections.abc import Callable
import json
import logging
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np
import tqdm

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


class _QuietOrbax(logging.Filter):
  """Drops orbax's per-save INFO chatter (dozens of lines per checkpoint); its warnings still show."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def configure_logging() -> None:
  """INFO log lines from our code (progress, evals) on absl's handler, without orbax's per-save lines."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  logging.getLogger().setLevel(logging.INFO)
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _QuietOrbax) for f in handler.filters):
    handler.addFilter(_QuietOrbax())


def _plain(value: Any) -> Any:
  """Converts numpy/jax scalars to JSON numbers (non-finite as strings, which JSON cannot hold)."""
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    value = np.asarray(value).item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class MetricWriter:
  """Appends scalars to `metrics.jsonl` and TensorBoard event files under `WORKDIR/tensorboard`."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if self.active and tensorboard:
      import tensorboardX  # Imported here: only process 0 needs it.
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))

  def truncate_after(self, step: int) -> None:
    """Drops rows logged after `step` (a resumed run re-runs those steps and logs them again)."""
    if not self.active or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      rows = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    with open(self.path, "w") as f:
      f.writelines(rows)

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    if not self.active:
      return
    row = {"step": int(step), **{k: _plain(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for key, value in row.items():
        if key != "step" and isinstance(value, (int, float)):
          self._tb.add_scalar(key, value, int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class LaggedMeans:
  """Means of the train step's metrics over a log interval, each step's fetched one step late, and images/s.

  Fetching a step's metrics at once would make the host wait for that step before queueing the next; `add` fetches
  the previous step's instead. `check(host_metrics, step)` sees every step's metrics once (e.g. to stop on NaN).
  """

  def __init__(self, batch_size: int, check: Callable[[dict, int], None] = lambda metrics, step: None):
    self.batch_size = batch_size
    self.check = check
    self._pending: tuple[dict, int] | None = None
    self._history: list[dict] = []
    self.restart_clock()

  def restart_clock(self) -> None:
    """images/s counts the steps added from now on (call it after compilation and evaluation)."""
    self._t0, self._steps = time.perf_counter(), 0

  def _fetch(self) -> None:
    if self._pending is not None:
      step_metrics, step = self._pending
      host = jax.device_get(step_metrics)
      self.check(host, step)
      self._history.append(host)
      self._pending = None

  def add(self, step_metrics: dict, step: int) -> None:
    """Keeps `step`'s (device) metrics and fetches the previous step's."""
    self._fetch()
    self._pending = (step_metrics, step)
    self._steps += 1

  def row(self) -> dict:
    """The means since the last row (the latest step fetched now), with images_per_sec if any step was timed."""
    self._fetch()
    row = {k: float(np.mean([h[k] for h in self._history])) for k in self._history[-1]}
    if self._steps:
      row["images_per_sec"] = self._steps * self.batch_size / (time.perf_counter() - self._t0)
    self._history = []
    self.restart_clock()
    return row


def read_metrics(workdir: str) -> list[dict]:
  """All rows of `WORKDIR/metrics.jsonl`."""
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """A tqdm bar (images/s, ETA) on a terminal; plain log lines every `log_every` steps otherwise."""

  def __init__(self, total_steps: int, initial_step: int, batch_size: int, *, log_every: int):
    self.batch_size = batch_size
    self.log_every = max(1, log_every)
    self.total = total_steps
    self.active = jax.process_index() == 0
    self.bar = None
    if self.active and sys.stderr.isatty():
      self.bar = tqdm.tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True)
    self._t0, self._s0 = time.perf_counter(), initial_step

  def update(self, step: int, postfix: dict[str, Any] | None = None) -> None:
    if not self.active:
      return
    if self.bar is not None:
      self.bar.update(step - self.bar.n)
      if postfix:
        self.bar.set_postfix({k: f"{_plain(v):.4g}" for k, v in postfix.items()}, refresh=False)
    elif postfix and step % self.log_every == 0:
      rate = (step - self._s0) * self.batch_size / max(time.perf_counter() - self._t0, 1e-9)
      eta = (self.total - step) * self.batch_size / max(rate, 1e-9)
      logging.info("step %d/%d  %s  %.1f img/s  eta %.0fs", step, self.total,
                   "  ".join(f"{k}={_plain(v):.4g}" for k, v in postfix.items()), rate, eta)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def write_summary(workdir: str, summary: dict[str, Any]) -> None:
  """Writes `WORKDIR/summary.json` atomically (the table runner skips runs whose summary says complete)."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, SUMMARY_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(jax.tree.map(_plain, summary), f, indent=2, default=str)
  os.replace(path + ".tmp", path)


def read_summary(workdir: str) -> dict | None:
  """`WORKDIR/summary.json`, or None if the run never finished writing one."""
  path = os.path.join(workdir, SUMMARY_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
