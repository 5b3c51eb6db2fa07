"""Data parallelism: 1 device vs 2 devices (same parameters), and 2 processes on 127.0.0.1 vs 1 process.

Host-platform device counts must be set before jax initialises, so each scenario runs in a fresh subprocess.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # every test starts JAX processes with other device counts

TWO_DEVICES = r"""
import json, os, sys
import jax, ml_collections, numpy as np
from svdkd_jax import distill, networks, parallel, steps, train

assert jax.device_count() == 2, jax.devices()
fsp_config, student_config, workdir = sys.argv[1:]  # two tiny_config()s as JSON, a workdir
# FSP: a smooth loss. (KD-SVD's singular-vector gradients, 1 / (s_i^2 - s_j^2), and its argmax alignment amplify
# float32 reduction-order differences between 1 and 2 devices, so it cannot match to float32 tolerance; its first
# step, which sees identical parameters, is compared instead, below.)
config = ml_collections.ConfigDict(json.loads(fsp_config))
config.model.name, config.teacher.name = "vgg8", "vgg13"   # BatchNorm: statistics must be over the global batch
rng = np.random.default_rng(0)
batches = [{"image": rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8),
            "label": rng.integers(0, 2, 8).astype(np.int32)} for _ in range(3)]
out = {}
for n in (1, 2):
  mesh = parallel.create_mesh(jax.devices()[:n])
  student = networks.build("vgg8", 0.125, 2, 0, mesh=mesh)
  teacher = networks.build("vgg13", 0.125, 2, 100, mesh=mesh)
  state, tx = train.create_train_state(config, student, steps_per_epoch=2, mesh=mesh)
  step_fn = steps.make_train_step(config, student, tx, distill_fn=distill.from_config(config.distill),
                                  steps_per_epoch=2, mesh=mesh, mean=[128.0] * 3, std=[64.0] * 3, teacher=teacher)
  for batch in batches:
    batch = jax.device_put(batch, parallel.data_sharding(mesh))
    assert len(batch["image"].sharding.device_set) == n
    state, metrics = step_fn(state, teacher.variables, batch)
  out[n] = jax.tree.map(np.asarray, {"params": state["params"], "rest": state["rest"], "loss": metrics["loss"]})
  # KD-SVD (sharded SVD forward and custom VJP): one step from the same parameters.
  config.distill.method = "kd_svd"
  state, _ = train.create_train_state(config, student, steps_per_epoch=2, mesh=mesh)
  step_fn = steps.make_train_step(config, student, tx, distill_fn=distill.from_config(config.distill),
                                  steps_per_epoch=2, mesh=mesh, mean=[128.0] * 3, std=[64.0] * 3, teacher=teacher)
  _, metrics = step_fn(state, teacher.variables, jax.device_put(batches[0], parallel.data_sharding(mesh)))
  out[n]["kd_svd"] = {k: np.asarray(metrics[k]) for k in ("dist_loss", "grad_norm_dist", "grad_norm")}
  config.distill.method = "fsp"
def excess(a, b):  # > 0 where |a - b| exceeds float32 tolerance (atol 1e-6, rtol 1e-4)
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b) - (1e-6 + 1e-4 * np.abs(a))))
diffs = jax.tree.map(excess, out[1], out[2])
worst = max(jax.tree_util.tree_flatten_with_path(diffs)[0], key=lambda kv: kv[1])
# Taps by name (svdkd_jax.taps) on the sharded batch: resnet8's own taps named, the same FSP step as its own.
mesh = parallel.create_mesh(jax.devices()[:2])
teacher = networks.build("resnet8", 0.125, 2, 100, mesh=mesh)
by_taps = {}
for taps in ((), ("stages.0.0", "stages.1.0", "stages.2.0")):
  student = networks.build("resnet8", 0.125, 2, 0, mesh=mesh, taps=taps)
  state, tx = train.create_train_state(config, student, steps_per_epoch=2, mesh=mesh)
  step_fn = steps.make_train_step(config, student, tx, distill_fn=distill.from_config(config.distill),
                                  steps_per_epoch=2, mesh=mesh, mean=[128.0] * 3, std=[64.0] * 3, teacher=teacher)
  state, metrics = step_fn(state, teacher.variables, jax.device_put(batches[0], parallel.data_sharding(mesh)))
  by_taps[bool(taps)] = jax.tree.map(np.asarray, {"params": state["params"], "rest": state["rest"],
                                                  "dist_loss": metrics["dist_loss"]})
named = max(jax.tree.leaves(jax.tree.map(excess, by_taps[False], by_taps[True])))
assert float(by_taps[True]["dist_loss"]) > 0
# A whole run on 2 devices (sharded input pipeline, eval with padding).
summary = train.train_and_evaluate(ml_collections.ConfigDict(json.loads(student_config)), workdir)
print("RESULT", json.dumps({"excess": worst[1], "worst": jax.tree_util.keystr(worst[0]), "named_taps_excess": named, "devices": summary["devices"], "step": summary["step"]}))
"""


def _run(args, env_extra, timeout=600):
  env = {**os.environ, **env_extra}
  env.pop("PYTEST_CURRENT_TEST", None)
  args = [sys.executable, *args]
  return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_two_devices_match_one(tmp_path, tiny_config):
  configs = [tiny_config("fsp").to_json(), tiny_config("student", train__max_steps=2).to_json()]
  proc = _run(["-c", TWO_DEVICES, *configs, str(tmp_path / "run")],
              {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, timeout=900)
  result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
  assert proc.returncode == 0 and result, proc.stderr[-4000:]
  result = json.loads(result[0][len("RESULT "):])
  assert result["devices"] == 2 and result["step"] == 2
  assert result["excess"] <= 0 and result["named_taps_excess"] <= 0, result


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


MAIN_ARGS = ["-m", "svdkd_jax.main", "--config", "configs/quickstart.py:student", "--config.data.class_subset=2",
             "--config.data.num_classes=2", "--config.model.width=0.125", "--config.train.batch_size=32",
             "--config.train.eval_batch_size=64", "--config.train.epochs=1", "--config.train.max_steps=3",
             "--config.train.checkpoint_every_steps=100"]


def _start_processes(args: list[str], tmp_path, *, main_flags: bool = False, name: str = "process"
                     ) -> tuple[list[subprocess.Popen], list[pathlib.Path]]:
  """Starts `python ARGS` as processes 0 and 1 of a 2-process run on 127.0.0.1; returns them and their log files
  (`tmp_path/NAME_<i>.log`).

  The cluster is given as svdkd_jax.main's flags (`main_flags`) or as JAX_* environment variables. Output goes to
  files (a full pipe left unread would block a process, and with it the other one, in a collective).
  """
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTEST_CURRENT_TEST", "SVDKD_TRACEBACK")}
  cluster = [(f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}") for i in range(2)]
  envs = [{**env, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)}
          for i in range(2)]
  logs = [tmp_path / f"{name}_{i}.log" for i in range(2)]
  procs = []
  for i, log in enumerate(logs):
    with open(log, "w") as out:  # the child keeps its own copy
      procs.append(subprocess.Popen([sys.executable, *args, *(cluster[i] if main_flags else ())],
                                    env=env if main_flags else envs[i], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
  return procs, logs


def _wait_processes(procs: list[subprocess.Popen], *, timeout: float, returncode: int | None = None,
                    since: float | None = None) -> list[float | None]:
  """Seconds from `since` (default: now) until each process exited, None for those killed after `timeout` seconds.
  Stops waiting when one exits with another status than `returncode` (if given) and kills whatever still runs then:
  it would wait for its peer until the coordinator's timeouts."""
  t0, seconds = time.time(), [None] * len(procs)
  since = t0 if since is None else since
  try:
    while any(s is None for s in seconds) and time.time() - t0 < timeout:
      for i, p in enumerate(procs):
        if seconds[i] is None and p.poll() is not None:
          seconds[i] = time.time() - since
      if returncode is not None and any(p.poll() not in (None, returncode) for p in procs):
        break
      time.sleep(0.1)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  return seconds


def _run_processes(args: list[str], tmp_path, *, main_flags: bool = False, timeout: float = 900,
                   returncode: int = 0, name: str = "process") -> list[str]:
  """Runs `python ARGS` as a 2-process run (`_start_processes`); returns their output once both have exited with
  `returncode`. When one process fails, the other is stopped."""
  procs, logs = _start_processes(args, tmp_path, main_flags=main_flags, name=name)
  _wait_processes(procs, timeout=timeout, returncode=returncode)
  errs = [log.read_text() for log in logs]
  for i, (p, err) in enumerate(zip(procs, errs)):
    assert p.returncode == returncode, f"process {i} exited with {p.returncode}:\n{err[-4000:]}"
  return errs


def test_two_processes_match_one(tmp_path, final_params):
  """Two processes (one CPU device each) on 127.0.0.1 train the same parameters as one process."""
  one = _run(MAIN_ARGS + ["--workdir", str(tmp_path / "one")], {})
  assert one.returncode == 0, one.stderr[-4000:]
  _run_processes(MAIN_ARGS + ["--workdir", str(tmp_path / "two")], tmp_path, main_flags=True)
  summary = json.loads((tmp_path / "two" / "summary.json").read_text())
  assert summary["processes"] == 2 and summary["devices"] == 2 and summary["step"] == 3
  a, b = final_params(str(tmp_path / "one")), final_params(str(tmp_path / "two"))
  import jax  # pylint: disable=g-import-not-at-top
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-6), a, b)


HOLD = r"""
import sys, time
from svdkd_jax import workdir_lock
lock = workdir_lock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def test_two_processes_on_a_workdir_in_use_both_stop(tmp_path):
  """Process 0 locks the workdir for the whole run; when another run holds it, process 0 names that run and process
  1 stops with it (instead of waiting for its peer in a collective until the coordinator's timeouts)."""
  workdir = tmp_path / "run"
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTEST_CURRENT_TEST", "SVDKD_WORKDIR_LOCK_FD")}
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    errs = _run_processes(MAIN_ARGS + ["--workdir", str(workdir)], tmp_path, main_flags=True, timeout=300,
                          returncode=2)
  finally:
    holder.kill()
    holder.wait()
  errors = [[line for line in err.splitlines() if line.startswith("error:")] for err in errs]
  assert errors[0] == [f"error: {workdir} is in use by another run (pid {holder.pid} on {socket.gethostname()} "
                       f"since {json.loads((workdir / '.lock').read_text())['since']}: -c {workdir}). Wait for it to "
                       "finish or stop it; two runs on one workdir would overwrite each other's checkpoints."]
  assert errors[1] == [f"error: {workdir} is in use by another run (named in the output of process 0). Wait for it "
                       "to finish or stop it; two runs on one workdir would overwrite each other's checkpoints."]
  assert not any("Traceback" in err for err in errs)
  assert sorted(os.listdir(workdir)) == [".lock"]  # nothing written


LAGGING = r"""
import sys, time
from svdkd_jax import parallel
assert parallel.maybe_initialize_distributed()
import jax
from jax.experimental import multihost_utils
if jax.process_index() == 1:
  time.sleep(float(sys.argv[1]))  # loading data and compiling took this much longer on process 1
multihost_utils.sync_global_devices("the run's first barrier")
print("in step", jax.process_index())
"""


def test_processes_may_reach_their_first_collective_far_apart(tmp_path):
  """XLA's CPU collectives give up connecting after 30 s: a run whose processes reached their first collective more
  than 30 s apart (as under load) failed with "Gloo context initialization failed: DEADLINE_EXCEEDED"."""
  errs = _run_processes(["-c", LAGGING, "35"], tmp_path, timeout=300)
  assert "in step 0" in errs[0] and "in step 1" in errs[1]


# A long run (20 epochs of 9 steps): every stop below lands well before its end.
LONG = {"--config.train.epochs": "20", "--config.train.log_every_steps": "1",
        "--config.train.checkpoint_every_steps": "4"}
LONG_ARGS = [a for a in MAIN_ARGS if a.split("=")[0] not in (*LONG, "--config.train.max_steps")] + [
    f"{k}={v}" for k, v in LONG.items()]
STOP_SECONDS = 60  # the most a process may take to exit after a signal to it or a peer, or a lost peer


def _trained_step(workdir: pathlib.Path) -> int:
  """The last training row of `workdir`'s metrics.jsonl (0 if none)."""
  path = workdir / "metrics.jsonl"
  lines = path.read_text().splitlines() if path.exists() else []
  return max([json.loads(line)["step"] for line in lines if line.endswith("}") and '"loss"' in line] or [0])


def _wait_for_step(procs: list[subprocess.Popen], workdir: pathlib.Path, step: int, timeout: float = 600) -> int:
  t0 = time.time()
  while (done := _trained_step(workdir)) < step:
    assert all(p.poll() is None for p in procs) and time.time() - t0 < timeout, [p.poll() for p in procs]
    time.sleep(0.1)
  return done


def _interrupted_at(log: pathlib.Path, workdir: pathlib.Path) -> list[int]:
  """The steps named by the log's "Interrupted" lines, after checking that it holds no traceback."""
  text = log.read_text()
  assert "Traceback" not in text, text[-3000:]
  pattern = (r"Interrupted at step (\d+); checkpoint saved in " + re.escape(str(workdir)) +
             r"\. Rerun the same command on every host to resume\.")
  return [int(m) for m in re.findall(pattern, text)]


def _finished_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_preempted_or_lost_processes_stop_together_and_resume_exactly(tmp_path, final_params):
  """A SIGTERM to one process, then to both a few steps apart: both save the same step and exit 128 + 15 within a
  minute, each with one line. A process killed: the other exits 1 within a minute with one line naming it and the
  last checkpoint. Resuming after all three gives the parameters of an uninterrupted run."""
  run = tmp_path / "run"
  args = LONG_ARGS + ["--workdir", str(run)]

  def preempt(targets: list[int], name: str) -> int:
    procs, logs = _start_processes(args, tmp_path, main_flags=True, name=name)
    first = _wait_for_step(procs, run, _trained_step(run) + 3)
    t0 = time.time()
    for n, i in enumerate(targets):
      while n and _trained_step(run) < first + 1 and all(p.poll() is None for p in procs):
        time.sleep(0.02)  # the next signal some steps later (a process that stops already ignores it)
      procs[i].send_signal(signal.SIGTERM)
    seconds = _wait_processes(procs, timeout=2 * STOP_SECONDS, since=t0)
    assert [p.returncode for p in procs] == [128 + signal.SIGTERM] * 2, [log.read_text()[-3000:] for log in logs]
    assert max(seconds) < STOP_SECONDS, seconds
    steps = [_interrupted_at(log, run) for log in logs]
    assert steps[0] == steps[1] and len(steps[0]) == 1, steps
    assert steps[0][0] > first and steps[0][0] in _finished_steps(run)
    return steps[0][0]

  one = preempt([1], "sigterm_one")
  both = preempt([0, 1], "sigterm_both")
  assert both > one

  # Process 1 lost (SIGKILL): process 0 stops with one line naming it and the newest finished checkpoint.
  procs, logs = _start_processes(args, tmp_path, main_flags=True, name="lost")
  _wait_for_step(procs, run, both + 3)
  procs[1].kill()
  seconds = _wait_processes(procs, timeout=2 * STOP_SECONDS)  # (from the kill)
  survivor = logs[0].read_text()
  assert procs[0].returncode == 1 and seconds[0] < STOP_SECONDS, (seconds, survivor[-3000:])
  assert "Traceback" not in survivor and "Check failure" not in survivor, survivor[-3000:]
  errors = [line for line in survivor.splitlines() if line.startswith("error:")]
  last = _finished_steps(run)[-1]
  assert len(errors) == 1 and re.fullmatch(
      r"error: process 1 of 2 was lost \([A-Z_]+: .+\)\. " + re.escape(
          f"The last checkpoint is step {last} in {run / 'checkpoints'}: rerun the same command on every host to "
          "resume."), errors[0]), errors
  assert last >= both

  # Resume to a few steps past the last checkpoint. The same run uninterrupted, in one process with two devices (the
  # same computation, to the bit, at half the start-up cost).
  end = f"--config.train.max_steps={last + 3}"
  _run_processes(args + [end], tmp_path, main_flags=True, name="resumed")
  whole = _run(LONG_ARGS + [end, "--workdir", str(tmp_path / "uninterrupted")],
               {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert whole.returncode == 0, whole.stderr[-3000:]
  for workdir in (run, tmp_path / "uninterrupted"):
    assert json.loads((workdir / "summary.json").read_text())["step"] == last + 3
  a, b = final_params(str(tmp_path / "uninterrupted")), final_params(str(run))
  import jax  # pylint: disable=g-import-not-at-top
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)
