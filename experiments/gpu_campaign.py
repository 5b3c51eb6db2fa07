r"""The GPU campaign: the accelerator checks, then the data-scale question at full width, in one command of under
9 minutes on one H100.

Here, once (pip and the CIFAR-10 archive in the data root, `$SVDKD_DATA` or `~/svdkd_data`):

  experiments/accelerator_wheels.sh          # .whl/, 6.7 MiB: the packages the GPU image lacks; flax, optax, orbax
  python experiments/gpu_campaign_data.py    # .gpu_campaign/, 31.1 MiB: 25,000 training images and the test split

On the GPU machine, from the repository root, with both folders beside the tree (51 MiB in all, the tree 13.1 MiB),
under a 10-minute limit:

  python3 experiments/gpu_campaign.py --out OUT

It runs from the source tree on the image's own jax and jaxlib (0.11.2 on the CUDA image, below the jax >= 0.12 that
setup.cfg asks for; their CUDA wheels are too large to bring along): both smoke modes (this one and
accelerator_check.sh's) pass with jax 0.11.2 and the wheels of .whl/ on a CPU.

It runs, against a deadline of `--budget_s` (510 s) from its start:
  1. the wheels: installed into /tmp/site when the image lacks grain (`--no-deps`, nothing fetched);
  2. the checks of experiments/accelerator_check.sh (devices; bench_svd at 16x16x64; bench_step at full width for
     teacher, student and KD-SVD exact, each also in bfloat16), with time limits that leave most of the budget to 3;
     the trainer's own throughput is in each run's metrics, so its epoch checks are not repeated;
  3. the data-scale question on the 25,000 images (`configs/regime_cifar10.py` tokens `per_class=2500,width=1.0`):
     the teacher, the student alone and KD-SVD exact+mean's untrained-teacher control side by side on the GPU, then
     KD-SVD exact+mean on the trained teacher; one seed each. Students train E epochs and the teacher 2E (the
     regime's ratio), E the most that fits the time left at the step rates bench_step measured (at most the
     regime's 40); each run stops at the deadline regardless.
Into `--out` (4 files): `checks.jsonl` (one JSON line per check), `campaign.json` (the plan, its measurements, each
run's outcome and the phases' seconds), `runs.tar.gz` (each run's config.json, summary.json, metrics.jsonl and log,
and the checks' logs; no checkpoints) and `campaign.log`. To commit them:

  mkdir -p experiments/results/gpu_campaign && cp OUT/{checks.jsonl,campaign.json} experiments/results/gpu_campaign/
  tar xzf OUT/runs.tar.gz -C experiments/results/gpu_campaign

`--smoke` runs every phase at tiny sizes on any machine (the bundled digits, width 1/8, 2 steps per run; under 2
minutes on a CPU): tests/test_gpu_campaign.py keeps the script working. The script itself needs only the standard
library; it starts each check and run as its own process.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / ".gpu_campaign" / "cifar10_25k"
CONFIG = ROOT / "configs" / "regime_cifar10.py"
PER_CLASS, IMAGES, BATCH = 2500, 25_000, 128
MAX_EPOCHS = 40  # the regime table's student epochs (its teacher trains twice as many)
MIN_EPOCHS = 3  # the fewest with the schedule's two decays (at 1/2 and 3/4 of the run) on distinct epochs
PACK_S = 20  # seconds kept at the end for packing the results
STARTUP_S = 30  # a run's process start, data loading and evaluation step compile, beyond its train step's compile
EPOCH_EXTRA_S = 2.0  # a run's evaluation of the test split and checkpoint at each epoch end
SHARING = 1.5  # slowdown of the teacher's steps while two students share the GPU with it
STEP_CASES = {False: "teacher,student,kd_svd_exact,student@bf16,kd_svd_exact@bf16", True: "teacher,kd_svd_exact"}
RUN_FILES = ("config.json", "summary.json", "metrics.jsonl", "run.log")
# variant -> the variant whose bench_step rate it trains at
RUNS = {"teacher": "teacher", "student": "student", "kd_svd_exact_mean_untrained_teacher": "kd_svd_exact",
        "kd_svd_exact_mean": "kd_svd_exact"}


class Campaign:
  """The phases, their log and the result they build; every phase runs its commands as subprocesses."""

  def __init__(self, out: pathlib.Path, work: pathlib.Path, budget_s: float, smoke: bool):
    self.out, self.work, self.smoke = out, work, smoke
    self.deadline = time.monotonic() + budget_s
    self.result = {"smoke": smoke, "budget_s": budget_s, "phases_s": {}, "runs": {}}
    out.mkdir(parents=True, exist_ok=True)
    if work.exists():
      shutil.rmtree(work)
    work.mkdir(parents=True)
    self.log_file = open(out / "campaign.log", "a", buffering=1)
    self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT),
                "JAX_COMPILATION_CACHE_DIR": str(work / "jax_cache")}

  def log(self, message: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    print(line, flush=True)
    self.log_file.write(line + "\n")

  def left(self) -> float:
    return self.deadline - time.monotonic()

  def phase(self, name: str, fn) -> None:
    start = time.monotonic()
    self.log(f"{name}: started, {self.left():.0f} s left")
    try:
      fn()
    except Exception as e:  # pylint: disable=broad-except  (a failed phase is reported; the next ones still run)
      self.result.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
      self.log(f"{name}: FAILED {type(e).__name__}: {e}")
    self.result["phases_s"][name] = round(time.monotonic() - start, 1)

  # --- 1. wheels ---

  def wheels(self) -> None:
    probe = [sys.executable, "-c", "import grain, ml_collections, tensorboardX"]
    if subprocess.run(probe, env=self.env, capture_output=True).returncode == 0:
      self.result["wheels"] = "present"
      return
    site = self.work / "site"
    wheels = sorted(str(p) for p in (ROOT / ".whl").glob("*.whl"))
    if not wheels:
      raise RuntimeError("no .whl/*.whl: run experiments/accelerator_wheels.sh here, then carry .whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--target", str(site), *wheels], check=True, env=self.env)
    self.env["PYTHONPATH"] = f"{site}{os.pathsep}{ROOT}"
    self.result["wheels"] = [pathlib.Path(w).name for w in wheels]

  # --- 2. checks ---

  def checks(self) -> None:
    limits = {"SVD_LIMIT": 60, "STEP_LIMIT": 150} if not self.smoke else {}
    env = {**self.env, "PYTHON": sys.executable, "CHECKS": "devices bench_svd bench_step",
           "STEP_CASES": STEP_CASES[self.smoke], "STEP_ARGS": "--steps 10 --rounds 2 --no-breakdown",
           "SVD_SHAPES": "4x4x16" if self.smoke else "16x16x64", "SMOKE": "1" if self.smoke else "0",
           **{k: str(v) for k, v in limits.items()}}
    if self.smoke:
      env["STEP_ARGS"] = "--steps 1 --rounds 1 --no-breakdown"
    checks_dir = self.work / "checks"
    subprocess.run(["bash", str(ROOT / "experiments" / "accelerator_check.sh"), str(checks_dir)], env=env,
                   cwd=ROOT, stdout=self.log_file, stderr=subprocess.STDOUT, timeout=max(self.left(), 1))
    shutil.copyfile(checks_dir / "checks.jsonl", self.out / "checks.jsonl")
    for line in (checks_dir / "checks.jsonl").read_text().splitlines():
      check = json.loads(line)
      self.log(f"  check {check['check']}: rc {check['rc']}, {check['seconds']} s")
      if check["check"] == "bench_step":
        self.result["bench_step"] = {k: check["result"].get(k) for k in ("images_per_sec", "compile_seconds")}

  # --- 3. runs ---

  def plan(self) -> int:
    """Student epochs E (the teacher trains 2E): the most whose critical path, the teacher then KD-SVD, fits the
    time left at the measured step rates, at most MAX_EPOCHS (`MIN_EPOCHS + 1` in smoke mode, once planned)."""
    bench = self.result.get("bench_step") or {}
    rates, compile_s = bench.get("images_per_sec") or {}, bench.get("compile_seconds") or {}
    if not all(rates.get(c) for c in ("teacher", "kd_svd_exact")):
      raise RuntimeError(f"bench_step measured no teacher and KD-SVD rates ({rates}): nothing to plan epochs on")
    steps = IMAGES // BATCH
    epoch = {c: steps * BATCH / rates[c] + EPOCH_EXTRA_S for c in ("teacher", "kd_svd_exact")}
    fixed = 2 * STARTUP_S + compile_s.get("teacher", 60) + compile_s.get("kd_svd_exact", 60)
    per_e = 2 * SHARING * epoch["teacher"] + epoch["kd_svd_exact"]
    epochs = int((self.left() - PACK_S - fixed) // per_e)
    self.result["plan"] = {"epoch_s": {c: round(t, 1) for c, t in epoch.items()}, "fixed_s": round(fixed, 1),
                           "left_s": round(self.left(), 1), "epochs": epochs, "teacher_epochs": 2 * epochs}
    if self.smoke:
      return MIN_EPOCHS + 1
    if epochs < MIN_EPOCHS:
      raise RuntimeError(f"no time for {MIN_EPOCHS} epochs: {self.result['plan']}")
    return min(epochs, MAX_EPOCHS)

  def _command(self, variant: str, epochs: int) -> list[str]:
    width, per_class = (0.125, 10) if self.smoke else (1.0, PER_CLASS)
    tokens = f"per_class={per_class},width={width},epochs={epochs},teacher_epochs={2 * epochs}"
    command = [sys.executable, "-m", "svdkd_jax.main", f"--config={CONFIG}:{variant},{tokens}",
               f"--workdir={self.work / 'runs' / variant}", "--config.seed=0",
               f"--config.data.cache_dir={self.work / 'data_cache'}"]
    if self.smoke:  # the bundled digits instead of the archive, 2 steps of 32
      command += ["--config.data.source=digits", "--config.data.name=digits", "--config.data.path=",
                  "--config.data.normalization=dataset", "--config.train.batch_size=32",
                  "--config.train.log_every_steps=1", "--config.train.max_steps=2"]
    else:
      command.append(f"--config.data.path={DATA}")
    if variant == "kd_svd_exact_mean":
      command.append(f"--config.teacher.workdir={self.work / 'runs' / 'teacher'}")
    return command

  def _start(self, variant: str, epochs: int) -> subprocess.Popen:
    workdir = self.work / "runs" / variant
    workdir.mkdir(parents=True, exist_ok=True)
    command = self._command(variant, epochs)
    self.log(f"  {variant}: {' '.join(command[1:])}")
    log = open(workdir / "run.log", "w")
    # Three processes share the GPU: each takes its memory as it needs it, not 75 % up front.
    env = {**self.env, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

  def _wait(self, variant: str, process: subprocess.Popen) -> None:
    try:
      rc = process.wait(timeout=max(self.left() - PACK_S, 1))
    except subprocess.TimeoutExpired:  # SIGTERM: the trainer checkpoints and writes its summary, then stops
      process.terminate()
      try:
        process.wait(timeout=PACK_S / 2)
      except subprocess.TimeoutExpired:
        process.kill()
      rc = "stopped at the deadline"
    summary = self.work / "runs" / variant / "summary.json"
    outcome = {"rc": rc}
    if summary.exists():
      done = json.loads(summary.read_text())
      outcome.update({k: done.get(k) for k in ("complete", "step", "last_eval_accuracy", "best_eval_accuracy")})
    self.result["runs"][variant] = outcome
    self.log(f"  {variant}: {outcome}")

  def runs(self) -> None:
    epochs = self.plan()
    self.log(f"  epochs: students {epochs}, teacher {2 * epochs}")
    first = {v: self._start(v, epochs) for v in ("teacher", "student", "kd_svd_exact_mean_untrained_teacher")}
    self._wait("teacher", first.pop("teacher"))
    distilled = self._start("kd_svd_exact_mean", epochs)
    for variant, process in first.items():
      self._wait(variant, process)
    self._wait("kd_svd_exact_mean", distilled)

  # --- 4. results ---

  def pack(self) -> None:
    with tarfile.open(self.out / "runs.tar.gz", "w:gz") as tar:
      for variant in RUNS:
        for name in RUN_FILES:
          path = self.work / "runs" / variant / name
          if path.exists():
            tar.add(path, arcname=f"runs/{variant}/{name}")
      for path in sorted((self.work / "checks").glob("*.log")):
        tar.add(path, arcname=f"checks/{path.name}")
    (self.out / "campaign.json").write_text(json.dumps(self.result, indent=1) + "\n")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu_campaign_out"), help="where results go")
  parser.add_argument("--work", default="/tmp/gpu_campaign", help="workdirs, caches (emptied first)")
  parser.add_argument("--budget_s", type=float, default=510, help="seconds from start to the last result")
  parser.add_argument("--smoke", action="store_true", help="every phase at tiny sizes, on any machine")
  args = parser.parse_args(argv)
  campaign = Campaign(pathlib.Path(args.out), pathlib.Path(args.work), args.budget_s, args.smoke)
  if not args.smoke and not (DATA / "meta.json").exists():
    campaign.log(f"no {DATA.relative_to(ROOT)}: run experiments/gpu_campaign_data.py here and carry .gpu_campaign")
    return 1
  for name in ("wheels", "checks", "runs"):
    campaign.phase(name, getattr(campaign, name))
  campaign.phase("pack", campaign.pack)
  campaign.log(f"done, {campaign.left():.0f} s of the budget left")
  runs = campaign.result["runs"]
  return 0 if len(runs) == len(RUNS) and all(r["rc"] == 0 and (args.smoke or r.get("complete"))
                                             for r in runs.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
