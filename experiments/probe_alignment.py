r"""Does KD-SVD training make the student's singular vectors match the teacher's? Measured on finished runs.

  python experiments/probe_alignment.py --workdirs DIR [DIR ...] [--teacher TDIR] [--batches 4] [--split train] \
      [--out FILE.json]

Each DIR is a run workdir (config.json, checkpoints/); its student (best, else latest checkpoint) is compared with
the teacher of `--teacher`, else of its config.teacher.workdir. On `--batches` batches of 128 images of the split
(a fixed random sample, permutation seed 0), normalised as at evaluation (no augmentation), both networks run in eval mode and give their taps
`[B, H, W, D]`; per tap, each sample's map is reshaped to `M: [HW, D]` and decomposed (`svd.truncated_svd`):
  cos_top1       mean_b |cos(v_1^S, v_1^T)|, the top right singular vectors `[D]` of student and teacher;
  cos_aligned    mean_b |cos| between v_1^T and the student vector `svd.align` picks among the student's top k+1;
  picked_second  the fraction of samples where that pick is the student's 2nd vector;
and per tap pair l, `dist/pair_l`: the KD-SVD loss of `distill.kd_svd(k, beta, svd_grad="kept_triplets", loss_scale="mean")`
(mean over samples), with k and beta from the run's config.distill. A network probed against itself gives
cos_top1 = 1 and zero losses. Prints a table (variant = DIR's parent folder, seed = DIR's name); `--out` writes JSON
(one dict per DIR: these means, both accuracies, "checkpoints": [student's, teacher's step directory]). Relative
paths (also a config's teacher.workdir and data.path) are read from the current directory: run from the project root.
"""

import argparse
import json
import logging
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svdkd_jax import checkpoint
from svdkd_jax import distill
from svdkd_jax import input_pipeline
from svdkd_jax import networks
from svdkd_jax import parallel
from svdkd_jax import svd
from svdkd_jax import workdir as workdir_lib

BATCH = 128


def restore_run(workdir: str, num_classes: int, *, mesh, image_size: int) -> networks.Network:
  """The network trained in run `workdir` (teacher or student: its config.json's model), best checkpoint else latest."""
  model = workdir_lib.read_config(workdir)["model"]
  return networks.restore(workdir, model["name"], model["width"], num_classes, mesh=mesh, image_size=image_size)


def _unit(v: jax.Array) -> jax.Array:
  """`[B, D]` rows scaled to norm 1 (zero rows, from dead maps, stay 0)."""
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-30)


def make_probe(student: networks.Network, teacher: networks.Network, *, k: int, beta: float, mean, std):
  """Jitted `(s_vars, t_vars, uint8 [B, H, W, 3], int labels [B]) -> {name: scalar or [taps] array}`."""
  loss_fn = distill.kd_svd(k=k, beta=beta, svd_grad="kept_triplets", loss_scale="mean")

  def probe(s_vars, t_vars, images, labels):
    x = input_pipeline.preprocess(images, None, train=False, mean=mean, std=std, augment="none")
    s_logits, s_taps, _ = networks.apply(student, s_vars, x)
    t_logits, t_taps, _ = networks.apply(teacher, t_vars, x)
    out = {"student_accuracy": jnp.mean(jnp.argmax(s_logits, -1) == labels),
           "teacher_accuracy": jnp.mean(jnp.argmax(t_logits, -1) == labels)}
    per_tap = {"cos_top1": [], "cos_aligned": [], "picked_second": []}
    for s, t in zip(s_taps, t_taps):
      b, h, w, d = s.shape
      _, _, s_v = svd.truncated_svd(s.astype(jnp.float32).reshape(b, h * w, d), k + 1)  # [B, D, k+1]
      _, t_s, t_v = svd.truncated_svd(t.astype(jnp.float32).reshape(b, -1, t.shape[-1]), k)  # [B, D, k]
      s_feat, t_feat = svd.align(s_v, t_v, t_s)  # [B, D, k]: picked student vector, weighted, teacher sign-matched
      picked = _unit(s_feat[..., 0])
      pick = jnp.argmax(jnp.abs(jnp.einsum("bdc,bd->bc", s_v, picked)), axis=-1)  # [B] index of the pick
      per_tap["cos_top1"].append(jnp.mean(jnp.abs(jnp.sum(_unit(s_v[..., 0]) * _unit(t_v[..., 0]), -1))))
      per_tap["cos_aligned"].append(jnp.mean(jnp.abs(jnp.sum(picked * _unit(t_feat[..., 0]), -1))))
      per_tap["picked_second"].append(jnp.mean(pick == 1))
    out.update({name: jnp.clip(jnp.stack(v), 0.0, 1.0) for name, v in per_tap.items()})
    _, aux = loss_fn(s_taps, t_taps, s_logits, t_logits)
    out.update({f"dist/{name}": v for name, v in aux.items()})
    return out

  return jax.jit(probe)


def sample_indices(size: int, batches: int) -> list[np.ndarray]:
  """Sorted indices of `batches` batches of a fixed random sample (seed 0) of a split of `size` examples: the
  archives are sorted by class, so the first batches would hold one class."""
  order = np.random.default_rng(0).permutation(size)
  return [np.sort(order[i * BATCH:(i + 1) * BATCH]) for i in range(batches)]


def probe_workdir(workdir: str, teacher_dir: str, *, batches: int, split: str) -> dict[str, Any]:
  """Means over `batches` batches of `make_probe`'s outputs for the student of `workdir` against `teacher_dir`."""
  cfg = ml_collections.ConfigDict(workdir_lib.read_config(workdir))
  ds = input_pipeline.create_datasets(cfg.data, global_batch_size=BATCH, eval_batch_size=BATCH, seed=cfg.seed)
  source = ds.train if split == "train" else ds.eval
  mesh = parallel.create_mesh()
  size = ds.image_shape[0]
  student = restore_run(workdir, ds.num_classes, mesh=mesh, image_size=size)
  teacher = restore_run(teacher_dir, ds.num_classes, mesh=mesh, image_size=size)
  k = int(cfg.distill.get("k", 1))
  fn = make_probe(student, teacher, k=k, beta=float(cfg.distill.get("beta", 8.0)), mean=ds.mean, std=ds.std)
  n = min(batches, len(source) // BATCH) or 1  # full batches only (one compilation); all of a tiny split
  rows, examples = [], 0
  for i, indices in enumerate(sample_indices(len(source), n)):
    batch = source.gather(indices)
    examples += len(batch["label"])
    rows.append(jax.device_get(fn(student.variables, teacher.variables, batch["image"], batch["label"])))
    print(f"  {workdir}: batch {i + 1}/{n}", file=sys.stderr)
  mean = {key: np.mean([r[key] for r in rows], axis=0).tolist() for key in rows[0]}
  return {"workdir": workdir, "variant": os.path.basename(os.path.dirname(os.path.abspath(workdir))),
          "seed": os.path.basename(os.path.abspath(workdir)), "teacher": teacher_dir, "split": split, "k": k,
          "examples": examples, **mean,
          "checkpoints": [student.step_dir, teacher.step_dir]}


def format_table(results: list[dict]) -> str:
  """One row per run: accuracies, per tap `cos_top1/cos_aligned/picked_second`, per pair the KD-SVD loss."""
  taps = max(len(r["cos_top1"]) for r in results)
  pairs = sorted({key for r in results for key in r if key.startswith("dist/")})
  head = ["variant", "seed", "acc S", "acc T"] + [f"tap{i} cos1/cosA/2nd" for i in range(taps)] + pairs
  lines = []
  for r in results:
    cells = [r["variant"], r["seed"], f"{r['student_accuracy']:.3f}", f"{r['teacher_accuracy']:.3f}"]
    cells += [f"{r['cos_top1'][i]:.3f}/{r['cos_aligned'][i]:.3f}/{r['picked_second'][i]:.2f}"
              if i < len(r["cos_top1"]) else "-" for i in range(taps)]
    cells += [f"{r[p]:.3g}" if p in r else "-" for p in pairs]
    lines.append(cells)
  widths = [max(len(str(row[j])) for row in [head] + lines) for j in range(len(head))]
  return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head] + lines)


def check_run(workdir: str, teacher: str = "", *, student_checkpoint: bool = True) -> str:
  """The teacher workdir of run `workdir` (`teacher`, else its config.teacher.workdir), after checking that both
  are run workdirs with a finished checkpoint (the run's own only with `student_checkpoint`); ValueError if not."""
  if not os.path.isfile(os.path.join(workdir, workdir_lib.CONFIG_FILE)):
    raise ValueError(f"{workdir} is not a run workdir (no {workdir_lib.CONFIG_FILE}).")
  teacher_dir = teacher or workdir_lib.read_config(workdir)["teacher"].get("workdir", "")
  if not teacher_dir:
    raise ValueError(f"{workdir} names no teacher (config.teacher.workdir is empty, e.g. a teacher or student-alone "
                     "run): pass --teacher DIR.")
  if not os.path.isfile(os.path.join(teacher_dir, workdir_lib.CONFIG_FILE)):
    raise ValueError(f"teacher {teacher_dir} (of {workdir}) is not a run workdir (no {workdir_lib.CONFIG_FILE}).")
  for who, path in ([("run", workdir)] if student_checkpoint else []) + [("teacher", teacher_dir)]:
    try:
      checkpoint.find_step_dir(path)
    except FileNotFoundError:
      raise ValueError(f"{who} {path} has no finished checkpoint (nothing in "
                       f"{os.path.join(path, 'checkpoints')}).") from None
  return teacher_dir


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdirs", nargs="+", required=True, help="finished student run workdirs")
  parser.add_argument("--teacher", default="", help="teacher run workdir (default: each run's config.teacher.workdir)")
  parser.add_argument("--batches", type=int, default=4, help=f"batches of {BATCH} images")
  parser.add_argument("--split", choices=("train", "eval"), default="train")
  parser.add_argument("--out", default="", help="write the results as JSON here")
  args = parser.parse_args(argv)
  if args.batches < 1:
    parser.error(f"--batches={args.batches} must be >= 1")
  jobs = []
  for workdir in args.workdirs:  # Every error before any computation.
    try:
      teacher_dir = check_run(workdir, args.teacher)
    except ValueError as e:
      parser.error(str(e))
    jobs.append((workdir, teacher_dir))
  results = []
  for workdir, teacher_dir in jobs:
    print(f"probing {workdir} against teacher {teacher_dir}", file=sys.stderr)
    try:
      results.append(probe_workdir(workdir, teacher_dir, batches=args.batches, split=args.split))
    except (ValueError, FileNotFoundError) as e:
      parser.error(f"{workdir}: {e}")
  print(format_table(results))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)
    print(f"wrote {args.out}", file=sys.stderr)
  return results


if __name__ == "__main__":
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's notes on read-only checkpoint managers
  main()
