r"""Images/s of the VGG pair's train step at batch 128: student alone, + teacher forward, + FSP, + KD-SVD per svd_grad.

  python experiments/bench_step.py [--width 1.0] [--batch 128] [--steps 4] [--rounds 3] [--devices 1]

Every case is the trainer's own jitted step (`svdkd_jax.train.make_train_step`, with augmentation inside the step)
on a fixed synthetic uint8 batch, with an untrained teacher (`train.random_teacher`; speed does not depend on the
weights). Cases:
  student              student alone (one backward)
  student+teacher      student step + a teacher forward in eval mode, one backward
  floor                the trainer's distillation step with a distillation loss that costs nearly nothing but
                       reaches every tap (`floor_loss`, non-zero gradient): teacher forward, the main AND the
                       distillation pullback through the student, per-tensor clipping. What any feature distillation
                       with the released clipping rule costs before its own loss: the floor KD-SVD is measured against
  fsp                  FSP, 1-stage
  kd_svd_<mode>        KD-SVD (k = 1, 4 taps), svd_grad = paper | exact | sskd_code, 1-stage
  teacher              the teacher trained alone (a T-DNN run; for sizing experiment tables)
Cases are timed round-robin (`--rounds` rounds of `--steps` steps after a compile + warm-up step) and each rate is the
median over rounds, so load from other processes on a shared machine hits all cases alike. The last line is one
JSON object: rates (images/s), each case's time per step relative to student+teacher and to the floor, and whether
KD-SVD stays within 10% of the floor (the project's target).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--width", type=float, default=1.0, help="channel multiplier of both networks")
  p.add_argument("--batch", type=int, default=128, help="global batch")
  p.add_argument("--steps", type=int, default=4, help="timed steps per case and round")
  p.add_argument("--rounds", type=int, default=3, help="round-robin rounds (median taken)")
  p.add_argument("--devices", type=int, default=0,
                 help="force N host CPU devices (sets XLA_FLAGS before jax starts; 0 = leave as is)")
  p.add_argument("--cases", default="", help="comma-separated subset of the cases (default: all)")
  return p.parse_args(argv)


CASES = ("student", "student+teacher", "floor", "fsp", "kd_svd_paper", "kd_svd_exact", "kd_svd_sskd_code", "teacher")
TARGET = 0.10  # KD-SVD's time per step over the floor's


def floor_loss(student_taps, teacher_taps, student_logits, teacher_logits):
  """`1e-3 * sum_l (mean(S_l) - mean(T_l))^2` over the taps [B, h, w, d]: a few reductions, gradient at every tap."""
  del student_logits, teacher_logits
  terms = [(s.astype("float32").mean() - t.astype("float32").mean()) ** 2 for s, t in zip(student_taps, teacher_taps)]
  return 1e-3 * sum(terms), {}


def main(argv=None) -> dict:
  args = parse_args(argv)
  if args.devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}").strip()
  # Imported after XLA_FLAGS is set.
  import flax
  import jax
  import jax.numpy as jnp
  import numpy as np

  from svdkd_jax import config_files
  from svdkd_jax import distill
  from svdkd_jax import input_pipeline
  from svdkd_jax import networks
  from svdkd_jax import parallel
  from svdkd_jax import train

  cases = [c.strip() for c in args.cases.split(",") if c.strip()] or list(CASES)
  unknown = sorted(set(cases) - set(CASES))
  if unknown:
    raise SystemExit(f"unknown case(s) {unknown}; valid: {', '.join(CASES)}")
  vgg_config = config_files.load_module(config_files.CONFIG_DIR / "cifar100_vgg.py")

  mesh = parallel.create_mesh()
  parallel.check_batch_size(args.batch, mesh, "--batch")
  num_classes, steps_per_epoch = 100, 390
  mean, std = np.full(3, 120.0, np.float32), np.full(3, 64.0, np.float32)
  rng = np.random.default_rng(0)
  batch = input_pipeline.to_global(
      {"image": rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8),
       "label": rng.integers(0, num_classes, (args.batch,), dtype=np.int32)},
      parallel.data_sharding(mesh))

  def config_for(case):
    variant = {"student+teacher": "student", "floor": "student", "kd_svd_paper": "kd_svd"}.get(case, case)
    config = vgg_config.get_config(variant)
    config.model.width = config.teacher.width = args.width
    config.train.batch_size = args.batch
    return config

  def teacher_forward_step(student_step, teacher):
    """The student-alone step plus a teacher eval-mode forward whose output is kept (so it is not removed)."""
    mean_, std_ = jnp.asarray(mean), jnp.asarray(std)

    def step(state, t_vars, batch):
      state, metrics = student_step(state, None, batch)
      images = input_pipeline.preprocess(batch["image"], None, train=False, mean=mean_, std=std_, augment="none")
      logits, _, _ = networks.apply(teacher, t_vars, images)
      metrics["teacher_accuracy"] = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
      return state, metrics

    return jax.jit(step, donate_argnums=0)

  runners = {}
  for case in cases:
    config = config_for(case)
    student = networks.build(config.model.name, config.model.width, num_classes, 0, mesh=mesh)
    teacher = train.random_teacher(config, num_classes, mesh=mesh) if case not in ("student", "teacher") else None
    state, tx = train.create_train_state(config, student, steps_per_epoch, mesh=mesh)
    distill_fn = floor_loss if case == "floor" else distill.from_config(config.distill)
    kwargs = dict(distill_fn=distill_fn, steps_per_epoch=steps_per_epoch, mesh=mesh, mean=mean, std=std)
    if case == "student+teacher":
      step = teacher_forward_step(train.make_train_step(config, student, tx, **kwargs), teacher)
    else:
      step = train.make_train_step(config, student, tx, teacher=teacher, **kwargs)
    t_vars = train.teacher_vars(teacher)
    start = time.perf_counter()
    state, metrics = step(state, t_vars, batch)  # compile + first step
    jax.block_until_ready(state)
    loss = float(metrics["loss"])
    print(f"{case:<18} compiled + 1 step in {time.perf_counter() - start:6.1f} s  (loss {loss:.3f})", flush=True)
    runners[case] = [step, state, t_vars]

  times = {case: [] for case in cases}
  for r in range(args.rounds):
    for case in cases:
      step, state, t_vars = runners[case]
      start = time.perf_counter()
      for _ in range(args.steps):
        state, _ = step(state, t_vars, batch)
      jax.block_until_ready(state)
      times[case].append((time.perf_counter() - start) / args.steps)
      runners[case][1] = state
    print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{c} {args.batch / times[c][-1]:.1f}" for c in cases),
          flush=True)

  per_step = {c: statistics.median(t) for c, t in times.items()}
  rates = {c: round(args.batch / t, 2) for c, t in per_step.items()}
  rel = lambda base: {c: round(t / per_step[base] - 1.0, 4) for c, t in per_step.items()} if base in per_step else {}
  vs_teacher, vs_floor = rel("student+teacher"), rel("floor")
  kd = [c for c in cases if c.startswith("kd_svd")]
  print()
  print(f"{'case':<18} {'img/s':>8} {'ms/step':>8} {'vs student+teacher':>19} {'vs floor':>9}")
  for c in cases:
    fmt = lambda d: f"{100 * d[c]:+.1f}%" if c in d else "-"  # noqa: E731
    print(f"{c:<18} {rates[c]:8.1f} {1000 * per_step[c]:8.1f} {fmt(vs_teacher):>19} {fmt(vs_floor):>9}")
  result = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
      "width": args.width, "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
      "devices": jax.device_count(), "platform": jax.default_backend(), "cpu_count": os.cpu_count(),
      "versions": {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__},
      "images_per_sec": rates,
      "time_vs_student_plus_teacher": vs_teacher,
      "time_vs_floor": vs_floor,
      "kd_svd_within_10pct_of_floor": {c: vs_floor[c] <= TARGET for c in kd} if vs_floor else {},
  }
  print(json.dumps(result), flush=True)
  return result


if __name__ == "__main__":
  main()
