r"""The KD-SVD train step and the eval step, exported for TPU and CUDA from any machine: custom calls and XLA's cost.

  python experiments/export_step.py [--platforms tpu,cuda] [--width 1.0] [--batch 128] [--variant kd_svd_exact]
      [--compute_dtype bfloat16]

Builds the jitted 1-stage train step of `configs/cifar100_vgg.py:<variant>` (the paper's VGG pair, CIFAR-100 shapes)
and its eval step, exports both with `jax.export` for each platform (lowering only: no accelerator needed), and
prints, per platform and step, the custom calls in the lowered module with their operand shapes, and XLA's cost
analysis of the same step on the local backend (FLOPs and bytes accessed, per image). `check(...)` holds the
allow-list that tests/test_export.py asserts: no host callbacks, no CPU-only kernels, no float64, and on CUDA no
`syevd` on matrices above 32 x 32 unless it is the batched Jacobi kernel. The last line is one JSON object.
"""

import argparse
import collections
import json
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_CLASSES, STEPS_PER_EPOCH = 100, 390
ALLOWED = {
    "cuda": {"cusolver_syevd_ffi", "cusolver_potrf_ffi", "cu_threefry2x32_ffi"},
    "tpu": {"Eigh"},
}
_CALL = re.compile(r"custom_call @([\w.]+)\((.*?)\)(.*?):\s*\((.*?)\)\s*->")


def build_steps(variant: str, width: float, batch: int, compute_dtype: str = "float32"):
  """`(train_step, train_args, eval_step, eval_args)`: the trainer's jitted steps and abstract arguments."""
  from svdkd_jax import config_files, distill, networks, parallel, steps, train  # pylint: disable=g-import-not-at-top
  config = config_files.get_config(f"{ROOT / 'configs' / 'cifar100_vgg.py'}:{variant}")
  config.model.width = config.teacher.width = width
  config.train.batch_size = batch
  config.train.compute_dtype = compute_dtype
  mesh = parallel.create_mesh()
  student = networks.build(config.model.name, width, NUM_CLASSES, 0, mesh=mesh, compute_dtype=compute_dtype)
  teacher = train.random_teacher(config, NUM_CLASSES, mesh=mesh)
  state, optimizer = train.create_train_state(config, student, STEPS_PER_EPOCH, mesh=mesh)
  mean, std = np.full(3, 120.0, np.float32), np.full(3, 64.0, np.float32)
  train_step = steps.make_train_step(config, student, optimizer, distill_fn=distill.from_config(config.distill),
                                     steps_per_epoch=STEPS_PER_EPOCH, mesh=mesh, mean=mean, std=std,
                                     teacher=teacher)
  eval_step = steps.make_eval_step(student, mesh=mesh, mean=mean, std=std)
  abstract = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  images = jax.ShapeDtypeStruct((batch, 32, 32, 3), jnp.uint8)
  labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
  train_args = (abstract(state), abstract(teacher.variables), {"image": images, "label": labels})
  eval_args = (abstract(state["params"]), abstract(state["rest"]),
               {"image": images, "label": labels, "mask": jax.ShapeDtypeStruct((batch,), jnp.bool_)})
  return train_step, train_args, eval_step, eval_args


def custom_calls(module_text: str) -> list[dict]:
  """Each custom call of a StableHLO module: target, backend config and operand types."""
  out = []
  for line in module_text.splitlines():
    m = _CALL.search(line)
    if m:
      out.append({"target": m.group(1), "config": m.group(3).strip()[:200], "operands": m.group(4)})
  return out


def check(platform: str, module_text: str) -> list[str]:
  """The allow-list's violations in an exported module (an empty list passes)."""
  problems = []
  for call in custom_calls(module_text):
    target = call["target"]
    if target not in ALLOWED[platform]:
      problems.append(f"{target} is not on the {platform} allow-list")
    if target == "cusolver_syevd_ffi" and "algorithm = 2" not in call["config"]:
      n = max(int(d) for d in re.findall(r"x(\d+)x", call["operands"] + "x") or [0])
      if n > 32:
        problems.append(f"one-call-per-matrix syevd on {call['operands']}")
  if re.search(r"\bf64\b|xf64>", module_text):
    problems.append("float64 in the module")
  if re.search(r"callback", module_text, re.IGNORECASE):
    problems.append("a host callback in the module")
  return problems


def export(fn, args, platform: str) -> str:
  return jax.export.export(fn, platforms=[platform])(*args).mlir_module()


def cost_per_image(fn, args, batch: int) -> dict:
  """XLA's cost analysis of `fn` lowered for the local backend, per image of the batch."""
  cost = fn.lower(*args).cost_analysis() or {}
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {"flops": float(cost.get("flops", 0.0)) / batch, "bytes_accessed": float(cost.get("bytes accessed", 0.0)) / batch}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--platforms", default="tpu,cuda")
  parser.add_argument("--width", type=float, default=1.0)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--variant", default="kd_svd_exact")
  parser.add_argument("--compute_dtype", default="float32", help="config.train.compute_dtype")
  args = parser.parse_args(argv)
  train_step, train_args, eval_step, eval_args = build_steps(args.variant, args.width, args.batch, args.compute_dtype)
  result = {"variant": args.variant, "width": args.width, "batch": args.batch, "compute_dtype": args.compute_dtype,
            "steps": {}}
  for name, fn, fn_args in (("train", train_step, train_args), ("eval", eval_step, eval_args)):
    entry = {"cost_per_image": cost_per_image(fn, fn_args, args.batch), "custom_calls": {}, "problems": {}}
    for platform in args.platforms.split(","):
      text = export(fn, fn_args, platform)
      calls = custom_calls(text)
      entry["custom_calls"][platform] = dict(collections.Counter(f"{c['target']} {c['operands']}" for c in calls))
      entry["problems"][platform] = check(platform, text)
    result["steps"][name] = entry
    cost = entry["cost_per_image"]
    print(f"{name} step: {cost['flops'] / 1e9:.3f} GFLOP and {cost['bytes_accessed'] / 1e6:.1f} MB accessed per image",
          flush=True)
    for platform, calls in entry["custom_calls"].items():
      print(f"  {platform}: " + ("; ".join(f"{n} x {c}" for c, n in calls.items()) or "no custom calls"))
      print(f"  {platform} allow-list: {entry['problems'][platform] or 'passes'}")
  print(json.dumps(result))
  return 0 if not any(p for e in result["steps"].values() for p in e["problems"].values()) else 1


if __name__ == "__main__":
  sys.exit(main())
