"""Metrics: JSON lines in the workdir, TensorBoard events (tensorboardX, no TensorFlow), a progress bar, a summary.

Only process 0 writes. `WORKDIR/metrics.jsonl` holds one JSON object per logged event, e.g.
`{"step": 400, "epoch": 1, "lr": 0.01, "train_loss": 2.3, ..., "images_per_sec": 150.2}`; read it with
`read_jsonl` (which skips a last line cut short by a killed run), pandas or jq.

Files go through `etils.epath`, so a workdir may be local or a URL (gs://...). Whole-file writes (summary.json,
config.json, a truncated metrics.jsonl) are atomic: a reader sees the old file or the new one, never half of one.
"""

from collections.abc import Callable
import json
import logging
import math
import os
import sys
import time
from typing import Any

from etils import epath
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


def _is_url(path: str | os.PathLike) -> bool:
  return "://" in os.fspath(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  """Replaces the file `path` by `text` in one step (a killed writer leaves the old file, never half a new one).

  Local: a temporary file in the same folder, flushed to disk, then `os.replace`. A URL (gs://...): one upload,
  which object stores make visible all at once.
  """
  if _is_url(path):
    epath.Path(path).write_text(text)
    return
  tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())  # Without it a power cut can leave the renamed file empty.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` as indented JSON, atomically (numpy/jax scalars as numbers, anything else via `str`)."""
  write_text_atomic(path, json.dumps(jax.tree.map(_plain, obj), indent=2, default=str) + "\n")


def read_json(path: str | os.PathLike, *, strict: bool = False) -> Any:
  """The JSON in `path`; None if it is missing, or (with a warning naming it) if it is not valid JSON. `strict`:
  invalid JSON raises json.JSONDecodeError (a ValueError) instead, for a caller that must not go on without it."""
  path = epath.Path(path)
  if not path.exists():
    return None
  text = path.read_text()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    if strict:
      raise
    logging.warning("%s is not valid JSON (%s, in %d bytes): it was cut short or damaged; ignoring it.", path, e,
                    len(text))
    return None


def _parse_lines(path: epath.Path, text: str) -> list[tuple[str, dict]]:
  """(line, row) for each line of `text` that is a JSON object; warns once per skipped line."""
  out = []
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      row = None
    if not isinstance(row, dict):
      logging.warning("%s line %d is not a JSON object (cut short when a run was killed?); skipped: %.60r",
                      path, number, line)
      continue
    out.append((line, row))
  return out


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The rows of a JSON-lines file such as `metrics.jsonl`. A line that does not parse (the last line of a run
  killed mid-write) is skipped with a warning naming the file and line. Raises FileNotFoundError if missing."""
  path = epath.Path(path)
  return [row for _, row in _parse_lines(path, path.read_text())]


class MetricWriter:
  """Appends scalars to `metrics.jsonl` and TensorBoard event files under `WORKDIR/tensorboard`."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self.path = epath.Path(workdir) / METRICS_FILE
    self._checked_end = False
    self._tb_dir = os.fspath(epath.Path(workdir) / "tensorboard") if self.active and tensorboard else None
    self._tb = None  # Opened at the first row: a writer never closed (a run failing before its first row)
    # makes tensorboardX's exit handler print a traceback.

  def truncate_after(self, step: int) -> None:
    """Drops rows logged after `step` (a resumed run re-runs those steps and logs them again) and torn lines.

    The file is replaced atomically: a run killed during the rewrite keeps the old file.
    """
    if not self.active or not self.path.exists():
      return
    kept = [line + "\n" for line, row in _parse_lines(self.path, self.path.read_text()) if row.get("step", 0) <= step]
    write_text_atomic(self.path, "".join(kept))
    self._checked_end = True

  def _append(self, line: str) -> None:
    if _is_url(self.path):  # Objects cannot be appended to: rewrite (one upload, atomic).
      old = self.path.read_text() if self.path.exists() else ""
      self.path.write_text(old + ("\n" if old and not old.endswith("\n") else "") + line)
      return
    with open(self.path, "a+b") as f:
      # A run killed mid-write leaves a last line without its newline; start a new line so that the first row
      # written now does not merge into it (the torn line is then skipped by readers, this row kept).
      if not self._checked_end and f.seek(0, os.SEEK_END) > 0:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
          line = "\n" + line
      f.write(line.encode())
    self._checked_end = True

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    """Appends `{"step": step, **scalars}` as one JSON line and the numbers to TensorBoard (process 0 only)."""
    if not self.active:
      return
    row = {"step": int(step), **{k: _plain(v) for k, v in scalars.items()}}
    self._append(json.dumps(row) + "\n")
    if self._tb is None and self._tb_dir is not None:
      import tensorboardX  # Imported here: only process 0 needs it.
      self._tb = tensorboardX.SummaryWriter(self._tb_dir)
    if self._tb is not None:
      for key, value in row.items():
        if key != "step" and isinstance(value, (int, float)):
          self._tb.add_scalar(key, value, int(step))

  def close(self) -> None:
    """Closes the TensorBoard writer, if one was opened; `metrics.jsonl` needs no closing."""
    if self._tb is not None:
      self._tb.close()
      self._tb = None


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
    """Moves the bar to `step`, the scalars `postfix` beside it; without a bar, logs them every `log_every` steps."""
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
    """Closes the bar, if any."""
    if self.bar is not None:
      self.bar.close()


def write_summary(workdir: str, summary: dict[str, Any]) -> None:
  """Writes `WORKDIR/summary.json` atomically (the table runner skips runs whose summary says complete)."""
  if jax.process_index() != 0:
    return
  write_json(epath.Path(workdir) / SUMMARY_FILE, summary)


def read_summary(workdir: str) -> dict | None:
  """`WORKDIR/summary.json`, or None if the run never finished writing one (or, with a warning, if it is damaged:
  the run is then treated as unfinished and resumes from its checkpoints)."""
  summary = read_json(epath.Path(workdir) / SUMMARY_FILE)
  return summary if isinstance(summary, dict) else None
