r"""Images/s of the VGG pair's train step at batch 128: student alone, + teacher forward, + FSP, + KD-SVD per svd_grad.

  python experiments/bench_step.py [--width 1.0] [--batch 128] [--steps 4] [--rounds 3] [--devices 1]

Every case is the trainer's own jitted step (`svdkd_jax.steps.make_train_step`, with augmentation inside the step)
on a fixed synthetic uint8 batch, with an untrained teacher (`train.random_teacher`; speed does not depend on the
weights). Cases:
  student              student alone (one backward)
  student+stop         student step + the trainer's stop decision after it (`train._StopRequest.due`: a flag in one
                       process, JAX's preemption sync point across several), as the loop runs them
  student+teacher      student step + a teacher forward in eval mode, one backward
  floor                the trainer's distillation step with a distillation loss that costs nearly nothing but
                       reaches every tap (`floor_loss`, non-zero gradient): teacher forward, the main AND the
                       distillation pullback through the student, per-tensor clipping. What any feature distillation
                       with the released clipping rule costs before its own loss: the floor KD-SVD is measured against
  fsp                  FSP, 1-stage
  soft_target, attention_transfer, dkd
                       the logit and attention baselines, 1-stage, their published options
  kd_svd_<mode>        KD-SVD (k = 1, 4 taps), svd_grad = kept_triplets | exact | released_code
                       for mode = paper | exact | sskd_code (the variants' names), 1-stage, the default eigensolver
                       (distill.svd_solver = "auto": svdkd_jax/eig.py says which solver each Gram matrix takes)
  kd_svd_<mode>@eigh   the same with svd_solver = "eigh" (a full eigendecomposition, kept pairs' backward)
  kd_svd_<mode>@before with `--before COMMIT`: the same step with that commit's svdkd_jax/svd.py (read with
                       `git show`), so the code before a change is timed in the same run as after it
  <case>@bf16          on request (`--cases student,student@bf16`): the case with train.compute_dtype = bfloat16
  teacher              the teacher trained alone (a T-DNN run; for sizing experiment tables)
Cases are timed round-robin (`--rounds` rounds of `--steps` steps after a compile + warm-up step, odd rounds in
reverse order): each rate is the median over rounds, and each relative time the median over rounds of the ratio
within a round, so load from other processes on a shared machine hits the cases compared alike.

Then, unless `--no-breakdown`, where KD-SVD's extra time goes: its loss alone on the untrained pair's taps of the
step's batch, in ms per step (median over rounds, also round-robin): "gram+eigh" and "gram+auto" (the Gram
matrices' top-k by a full `eigh` and by the default solver, student and teacher), "svd fwd" (the whole truncated
SVDs with the default solver),
"loss fwd" (+ alignment and DFV), "loss fwd+bwd <mode>" (+ the gradient to the student taps; the step then carries
it through the student like the floor does) and "floor fwd+bwd".

The last line is one JSON object: rates (images/s), each case's compile time (with its first step), its time per
step relative to student+teacher, to the floor and to FSP, whether KD-SVD stays within 10% of the floor and within
5% of FSP (the project's targets), and the breakdown.
jax is imported inside the functions: `--devices` must set XLA_FLAGS before jax starts.
"""

import argparse
from collections.abc import Callable
import datetime
import itertools
import json
import os
import platform
import statistics
import sys
import time

# Case label (after the variants: kd_svd is the poster's gradient, kd_svd_sskd_code the released code's) -> svd_grad.
MODES = {"paper": "kept_triplets", "exact": "exact", "sskd_code": "released_code"}
CASES = ("student", "student+stop", "student+teacher", "floor", "fsp", "soft_target", "attention_transfer", "dkd",
         *(f"kd_svd_{m}" for m in MODES),
         *(f"kd_svd_{m}@eigh" for m in MODES), "teacher")
BEFORE_CASES = tuple(f"kd_svd_{m}@before" for m in MODES)
BF16_CASES = tuple(f"{c}@bf16" for c in CASES if "@" not in c)
TARGET = 0.10  # KD-SVD's time per step over the floor's
FSP_TARGET = 0.05  # KD-SVD's time per step over FSP's, the cheapest feature distillation measured here
NUM_CLASSES, STEPS_PER_EPOCH = 100, 390
PIXEL_MEAN, PIXEL_STD = (120.0,) * 3, (64.0,) * 3  # the synthetic batch's normalisation, in every case


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--width", type=float, default=1.0, help="channel multiplier of both networks")
  p.add_argument("--batch", type=int, default=128, help="global batch")
  p.add_argument("--steps", type=int, default=4, help="timed steps per case and round")
  p.add_argument("--rounds", type=int, default=3, help="round-robin rounds (median taken)")
  p.add_argument("--devices", type=int, default=0,
                 help="force N host CPU devices (sets XLA_FLAGS before jax starts; 0 = leave as is)")
  p.add_argument("--cases", default="", help="comma-separated subset of the cases (default: all)")
  p.add_argument("--no-breakdown", dest="breakdown", action="store_false", help="skip the KD-SVD loss breakdown")
  p.add_argument("--before", default="", help="a commit whose svd.py is timed too (the @before cases; needs git)")
  return p.parse_args(argv)


def floor_loss(student_taps, teacher_taps, student_logits, teacher_logits, *, labels=None, epoch=None):
  """`1e-3 * sum_l (mean(S_l) - mean(T_l))^2` over the taps [B, h, w, d]: a few reductions, gradient at every tap
  (the signature of `distill.DistillFn`)."""
  del student_logits, teacher_logits, labels, epoch
  terms = [(s.astype("float32").mean() - t.astype("float32").mean()) ** 2 for s, t in zip(student_taps, teacher_taps)]
  return 1e-3 * sum(terms), {}


def round_robin(runs: dict[str, Callable[[], None]], rounds: int,
                report: Callable[[int, dict], None]) -> dict[str, list[float]]:
  """Seconds of each `runs[name]()` in each of `rounds` rounds that call every run once, in turn.

  Odd rounds go in reverse order, so that no case always follows the same one.
  """
  times = {name: [] for name in runs}
  for r in range(rounds):
    for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
      start = time.perf_counter()
      runs[name]()
      times[name].append(time.perf_counter() - start)
    report(r, {name: t[-1] for name, t in times.items()})
  return times


def relative(times: dict[str, list[float]], base: str) -> dict[str, float]:
  """Per case, the median over rounds of (its time / `base`'s time in the same round) - 1; {} without `base`.

  A ratio within one round cancels the load that other processes put on a shared machine at that time.
  """
  if base not in times:
    return {}
  return {c: round(statistics.median(a / b for a, b in zip(t, times[base])) - 1.0, 4) for c, t in times.items()}


def _config(case: str, args):
  from svdkd_jax import config as config_lib
  from svdkd_jax import config_files
  case, _, solver = case.partition("@")
  variant = {"student+teacher": "student", "student+stop": "student", "floor": "student",
             "kd_svd_paper": "kd_svd"}.get(case, case)
  config = config_files.get_config(f"{os.path.join(os.path.dirname(__file__), '..', 'configs', 'cifar100_vgg.py')}:{variant}")
  config.model.width = config.teacher.width = args.width
  config.train.batch_size = args.batch
  if solver in config_lib.CHOICES["distill.svd_solver"]:
    config.distill.svd_solver = solver
  if solver == "bf16":
    config.train.compute_dtype = "bfloat16"
  return config


def load_before(commit: str):
  """`svdkd_jax/svd.py` as of `commit`, with today's `truncated_svd` signature and mode names (None without git)."""
  import importlib.util
  import subprocess
  import tempfile
  import types
  try:
    source = subprocess.run(["git", "show", f"{commit}:svdkd_jax/svd.py"], check=True, capture_output=True,
                            text=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout
  except (OSError, subprocess.CalledProcessError):
    return None
  with tempfile.NamedTemporaryFile("w", suffix="_svd_before.py", delete=False) as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location("svd_before", f.name)
  old = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(old)
  from svdkd_jax import svd
  old_mode = dict(zip(svd.GRAD_MODES, old.GRAD_MODES))  # the same modes in the same order, under that commit's names
  return types.SimpleNamespace(
      GRAD_MODES=svd.GRAD_MODES, align=old.align,
      truncated_svd=lambda x, k, *, grad_mode="exact", solver="auto": old.truncated_svd(x, k,
                                                                                       grad_mode=old_mode[grad_mode]))


def _with_teacher_forward(student_step, teacher, mean, std):
  """The student-alone step plus a teacher eval-mode forward whose output is kept (so it is not removed)."""
  import jax
  import jax.numpy as jnp
  from svdkd_jax import input_pipeline, networks

  def step(state, t_vars, batch):
    state, metrics = student_step(state, None, batch)
    images = input_pipeline.preprocess(batch["image"], None, train=False, mean=jnp.asarray(mean),
                                       std=jnp.asarray(std), augment="none")
    logits, _, _ = networks.apply(teacher, t_vars, images)
    metrics["teacher_accuracy"] = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return state, metrics

  return jax.jit(step, donate_argnums=0)


def _with_stop_check(train_step, stop):
  """The train step, then the trainer's decision whether to stop after it, as `train._train_loop` runs them."""
  steps_done = itertools.count(1)

  def step(state, t_vars, batch):
    out = train_step(state, t_vars, batch)
    stop.due(next(steps_done))
    return out

  return step


def step_runs(cases: list[str], args, mesh, batch,
              before=None) -> tuple[dict[str, Callable[[], None]], dict[str, float]]:
  """Per case, a compiled train step (one step run now) and a closure running `args.steps` more steps; and the
  seconds each case took to compile and run its first step.

  `before` (see `load_before`) stands in for `svd` while the @before cases are traced."""
  import jax
  import numpy as np
  from svdkd_jax import distill, networks, steps, train

  mean, std = np.asarray(PIXEL_MEAN, np.float32), np.asarray(PIXEL_STD, np.float32)
  runs, compile_seconds = {}, {}
  for case in cases:
    config = _config(case, args)
    student = networks.build(config.model.name, config.model.width, NUM_CLASSES, 0, mesh=mesh,
                             compute_dtype=config.train.compute_dtype)
    teacher = (train.random_teacher(config, NUM_CLASSES, mesh=mesh) if case not in ("student", "student+stop", "teacher")
               else None)
    state, tx = train.create_train_state(config, student, STEPS_PER_EPOCH, mesh=mesh)
    distill_fn = floor_loss if case == "floor" else distill.from_config(config.distill)
    kwargs = dict(distill_fn=distill_fn, steps_per_epoch=STEPS_PER_EPOCH, mesh=mesh, mean=mean, std=std)
    if case == "student+teacher":
      step = _with_teacher_forward(steps.make_train_step(config, student, tx, **kwargs), teacher, mean, std)
    else:
      step = steps.make_train_step(config, student, tx, teacher=teacher, **kwargs)
    if case == "student+stop":
      step = _with_stop_check(step, train._StopRequest())  # pylint: disable=protected-access
    t_vars = train.teacher_vars(teacher)
    start = time.perf_counter()
    current_svd = distill.svd
    distill.svd = before if case.endswith("@before") else current_svd  # read when the step is traced, just below
    try:
      state, metrics = step(state, t_vars, batch)  # compile + first step
    finally:
      distill.svd = current_svd
    jax.block_until_ready(state)
    compile_seconds[case] = round(time.perf_counter() - start, 1)
    print(f"{case:<18} compiled + 1 step in {compile_seconds[case]:6.1f} s  (loss {float(metrics['loss']):.3f})",
          flush=True)

    def run(step=step, t_vars=t_vars, holder=[state]):  # the state is donated: keep the latest
      for _ in range(args.steps):
        holder[0], _ = step(holder[0], t_vars, batch)
      jax.block_until_ready(holder[0])

    runs[case] = run
  return runs, compile_seconds


def loss_breakdown(args, rounds: int, mesh, batch) -> dict[str, float]:
  """Milliseconds per step of the KD-SVD loss's parts on the untrained pair's taps of the step's batch (docstring).

  Network taps, not noise: ReLU noise has a flat spectrum, on which the iterative solvers fall back to `eigh`."""
  import jax
  import jax.numpy as jnp
  from svdkd_jax import distill, eig, input_pipeline, networks, svd, train

  config = _config("floor", args)
  images = input_pipeline.preprocess(batch["image"], None, train=False, mean=jnp.asarray(PIXEL_MEAN),
                                     std=jnp.asarray(PIXEL_STD), augment="none")
  s_taps, t_taps = (networks.apply(net, net.variables, images)[1] for net in (
      networks.build(config.model.name, args.width, NUM_CLASSES, 0, mesh=mesh),
      train.random_teacher(config, NUM_CLASSES, mesh=mesh)))

  def gram_topk(taps, k, solver):
    out = []
    for m in (t.reshape(t.shape[0], -1, t.shape[-1]) for t in taps):
      tall = m.shape[-2] >= m.shape[-1]
      out.append(eig.top_eigh(jnp.einsum("bmi,bmj->bij" if tall else "bim,bjm->bij", m, m), k, solver)[1])
    return out

  def svd_fwd(s, t):
    return [svd.truncated_svd(m.reshape(m.shape[0], -1, m.shape[-1]), k)[2] for taps, k in ((s, 2), (t, 1))
            for m in taps]

  fns = {f"gram+{solver}": lambda s, t, solver=solver: gram_topk(s, 2, solver) + gram_topk(t, 1, solver)
         for solver in ("eigh", "auto")}
  fns.update({"svd fwd": svd_fwd, "loss fwd": lambda s, t: distill.kd_svd(k=1)(s, t, None, None)[0]})
  losses = {**{f"loss fwd+bwd {m}": distill.kd_svd(k=1, svd_grad=MODES[m]) for m in MODES}, "floor fwd+bwd": floor_loss}
  for name, fn in losses.items():
    fns[name] = lambda s, t, fn=fn: jax.grad(lambda s: fn(s, t, None, None)[0])(s)
  runs = {}
  for name, fn in fns.items():
    jitted = jax.jit(fn)
    jax.block_until_ready(jitted(s_taps, t_taps))
    runs[name] = lambda jitted=jitted: jax.block_until_ready([jitted(s_taps, t_taps) for _ in range(args.steps)])
  times = round_robin(runs, rounds, lambda r, last: None)
  return {name: round(1000 * statistics.median(t) / args.steps, 2) for name, t in times.items()}


def report(args, times: dict[str, list[float]], breakdown: dict[str, float],
           compile_seconds: dict[str, float]) -> dict:
  """Prints the table (and the breakdown) and returns the JSON result; `times` as `round_robin` returns them."""
  import flax
  import jax

  per_step = {c: statistics.median(t) / args.steps for c, t in times.items()}
  rates = {c: round(args.batch / t, 2) for c, t in per_step.items()}
  vs_teacher, vs_floor, vs_fsp = (relative(times, base) for base in ("student+teacher", "floor", "fsp"))
  print()
  print(f"{'case':<18} {'img/s':>8} {'ms/step':>8} {'vs student+teacher':>19} {'vs floor':>9} {'vs fsp':>8}")
  for c in per_step:
    fmt = lambda d: f"{100 * d[c]:+.1f}%" if c in d else "-"  # noqa: E731
    print(f"{c:<18} {rates[c]:8.1f} {1000 * per_step[c]:8.1f} {fmt(vs_teacher):>19} {fmt(vs_floor):>9} "
          f"{fmt(vs_fsp):>8}")
  if breakdown:
    print("\nKD-SVD loss alone (ms per step): " + "  ".join(f"{k} {v:.1f}" for k, v in breakdown.items()))
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
      "width": args.width, "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
      "devices": jax.device_count(), "platform": jax.default_backend(), "cpu_count": os.cpu_count(),
      "versions": {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__},
      "images_per_sec": rates,
      "compile_seconds": compile_seconds,
      "time_vs_student_plus_teacher": vs_teacher,
      "time_vs_floor": vs_floor,
      "kd_svd_within_10pct_of_floor": {c: vs_floor[c] <= TARGET for c in per_step if c.startswith("kd_svd")
                                       and vs_floor},
      "time_vs_fsp": vs_fsp,
      "kd_svd_within_5pct_of_fsp": {c: vs_fsp[c] <= FSP_TARGET for c in per_step if c.startswith("kd_svd") and vs_fsp},
      "kd_svd_loss_ms_per_step": breakdown,
  }


def main(argv=None) -> dict:
  args = parse_args(argv)
  if args.devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}").strip()
  import numpy as np
  from svdkd_jax import input_pipeline, parallel

  before = load_before(args.before) if args.before else None
  if args.before and before is None:
    raise SystemExit(f"--before {args.before}: git cannot show svdkd_jax/svd.py at that commit")
  valid = CASES + BF16_CASES + (BEFORE_CASES if before else ())
  cases = [c.strip() for c in args.cases.split(",") if c.strip()] or [c for c in valid if c not in BF16_CASES]
  unknown = sorted(set(cases) - set(valid))
  if unknown:
    raise SystemExit(f"unknown case(s) {unknown}; valid: {', '.join(valid)}")
  mesh = parallel.create_mesh()
  parallel.check_batch_size(args.batch, mesh, "--batch")
  rng = np.random.default_rng(0)
  batch = input_pipeline.to_global(
      {"image": rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8),
       "label": rng.integers(0, NUM_CLASSES, (args.batch,), dtype=np.int32)},
      parallel.data_sharding(mesh))
  runs, compile_seconds = step_runs(cases, args, mesh, batch, before)
  times = round_robin(runs, args.rounds, lambda r, last: print(
      f"round {r + 1}/{args.rounds}: " + "  ".join(f"{c} {args.batch * args.steps / last[c]:.1f}" for c in runs),
      flush=True))
  breakdown = loss_breakdown(args, args.rounds, mesh, batch) if args.breakdown else {}
  result = report(args, times, breakdown, compile_seconds)
  print(json.dumps(result), flush=True)
  return result


if __name__ == "__main__":
  main()
