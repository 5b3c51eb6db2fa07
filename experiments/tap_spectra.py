r"""The Gram spectra of real tapped feature maps: what sets the eigensolvers' step counts (svdkd_jax/eig.py).

  python experiments/tap_spectra.py RUN_WORKDIR [RUN_WORKDIR ...] [--images 512] [--json OUT.json]

For each finished run (its last checkpoint, its config's data), the tapped feature maps of `--images` training
images (eval mode, no augmentation) are reshaped to M [HW, D] and the smaller Gram matrix's eigenvalues are computed
in float64 (NumPy). For p = 1 (the teacher's kept pair) and p = 2 (the student's k + 1 with k = 1), per tap:
  gap ratio          lam_{p+1} / lam_p: how close the first discarded pair is (the gradient's conditioning)
  convergence ratio  lam_{p+EXTRA+1} / lam_p: pair p's error shrinks by this factor per subspace step
  steps for 1e-6     ceil(log(1e-6) / log(convergence ratio)): steps for that factor to reach 1e-6
  converged          per step count (3 to 8), the fraction of matrices whose kept pairs pass eig's residual check
                     after one round of that many steps (float32, as in training); a batch with any failure takes
                     another round, so eig.ITERATIONS is the smallest count that every real tap passes
  lanczos converged  per Lanczos step count J (8 to 24, at most the Gram size), the fraction of matrices whose kept
                     pairs pass the same check (eig.lanczos_pairs, float32): eig.LANCZOS_STEPS sets J = p + 14
  cg solved          (p = 2, the student's pairs) per step count, the fraction of the exact backward's resolvent
                     systems (svd._cg_solve, a random right-hand side, float32) whose solution passes svd._solved;
                     a batch with any failure takes the Cholesky fallback, so svd.CG_MAX_STEPS must cover every tap
Percentiles are over images. `--random_init NAME:WIDTH` adds an untrained network (seed 0) on the same images.
"""

import argparse
import json
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svdkd_jax import eig
from svdkd_jax import input_pipeline
from svdkd_jax import metrics as metrics_lib
from svdkd_jax import networks
from svdkd_jax import parallel
from svdkd_jax import svd
from svdkd_jax import workdir as workdir_lib

PERCENTILES = (50, 90, 99, 100)


def _images(config: ml_collections.ConfigDict, count: int) -> tuple[np.ndarray, input_pipeline.Datasets]:
  ds = input_pipeline.create_datasets(config.data, global_batch_size=config.train.batch_size,
                                      eval_batch_size=config.train.eval_batch_size, seed=0)
  it, batches = ds.train_iterator(), []
  while sum(len(b["image"]) for b in batches) < count:
    batches.append(next(it))
  return np.concatenate([b["image"] for b in batches])[:count], ds


def _taps(net: networks.Network, images: np.ndarray, ds: input_pipeline.Datasets) -> list[np.ndarray]:
  x = input_pipeline.preprocess(jnp.asarray(images), None, train=False, mean=jnp.asarray(ds.mean),
                                std=jnp.asarray(ds.std), augment="none")
  _, taps, _ = networks.apply(net, net.variables, x)
  return [np.asarray(t, np.float64) for t in taps]


def spectrum_stats(tap: np.ndarray) -> dict:
  """Ratios and solver convergence of one tap `[B, H, W, D]`, as described in the module docstring."""
  b, h, w, d = tap.shape
  m = tap.reshape(b, h * w, d)
  gram = np.einsum("bmi,bmj->bij", m, m) if h * w >= d else np.einsum("bim,bjm->bij", m, m)
  lam = np.linalg.eigvalsh(gram)[:, ::-1]
  lam = np.maximum(lam, 0)
  out = {"shape": f"{h}x{w}x{d}", "gram": gram.shape[-1]}
  for p in (1, 2):
    tiny = 1e-30
    gap = lam[:, p] / np.maximum(lam[:, p - 1], tiny)
    conv_index = min(p + eig.EXTRA, lam.shape[1] - 1)
    conv = lam[:, conv_index] / np.maximum(lam[:, p - 1], tiny) if p + eig.EXTRA < lam.shape[1] else np.zeros(b)
    steps = np.array([math.ceil(math.log(1e-6) / math.log(c)) if 0 < c < 1 else 0 for c in conv])
    g32 = jnp.asarray(gram / np.max(np.abs(m), axis=(1, 2))[:, None, None] ** 2, jnp.float32)  # as svd.py scales
    converged = {str(steps): round(float(jnp.mean(eig.subspace_rounds(g32, p, 1, iterations=steps)[2])), 4)
                 for steps in (3, 4, 5, 6, 8)} if gram.shape[-1] > p + eig.EXTRA else None
    lanczos = {str(j): round(float(jnp.mean(eig.lanczos_pairs(g32, p, j)[2])), 4)
               for j in (8, 12, 16, 20, 24) if j <= gram.shape[-1]} if gram.shape[-1] > eig.LANCZOS_MIN_SIZE else None
    solved = _cg_solved(g32, p) if p == 2 else None
    out[f"p{p}"] = {"gap_ratio": {str(q): round(float(np.percentile(gap, q)), 4) for q in PERCENTILES},
                    "convergence_ratio": {str(q): round(float(np.percentile(conv, q)), 4) for q in PERCENTILES},
                    "steps_for_1e-6": {str(q): int(np.percentile(steps, q)) for q in PERCENTILES},
                    "converged_in_one_round_by_steps": converged, "lanczos_converged_by_steps": lanczos,
                    "cg_solved_by_steps": solved}
  return out


def _cg_solved(g32: jax.Array, p: int) -> dict:
  """Per CG step count, the fraction of the resolvent systems of the top p pairs (exact pairs, float32) solved."""
  lam_all, w_all = jnp.linalg.eigh(g32)
  lam, base = lam_all[:, ::-1][:, :p], w_all[:, :, ::-1][:, :, :p]
  g_perp, b = svd._complement_system(g32, base, lam, jax.random.normal(jax.random.key(0), base.shape))
  return {str(n): round(float(jnp.mean(svd._solved(g_perp, lam, b, svd._cg_solve(g_perp, lam, b, n)))), 4)
          for n in (4, 6, 8, 12, 16, 32)}


def _network(spec: str, ds: input_pipeline.Datasets, mesh) -> tuple[str, networks.Network]:
  if ":" in spec:  # NAME:WIDTH, untrained
    name, width = spec.split(":")
    return f"{name} (untrained, width {width})", networks.build(name, float(width), ds.num_classes, 0, mesh=mesh,
                                                               image_size=ds.image_shape[0])
  workdir = pathlib.Path(spec)
  config = ml_collections.ConfigDict(workdir_lib.read_config(str(workdir)))
  step = metrics_lib.read_summary(str(workdir))["step"]
  net = networks.restore(str(workdir / "checkpoints" / str(step)), config.model.name, config.model.width,
                         ds.num_classes, mesh=mesh, image_size=ds.image_shape[0])
  return f"{workdir} ({config.model.name}, width {config.model.width})", net


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("workdirs", nargs="+", help="finished runs (the first one's config gives the data)")
  parser.add_argument("--random_init", action="append", default=[], metavar="NAME:WIDTH")
  parser.add_argument("--images", type=int, default=512)
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  config = ml_collections.ConfigDict(workdir_lib.read_config(args.workdirs[0]))
  images, ds = _images(config, args.images)
  mesh = parallel.create_mesh()
  results = []
  for spec in args.workdirs + args.random_init:
    label, net = _network(spec, ds, mesh)
    for i, tap in enumerate(_taps(net, images, ds)):
      row = {"network": label, "tap": i, **spectrum_stats(tap)}
      results.append(row)
      print(json.dumps(row), flush=True)
  if args.json:
    command = " ".join(["python experiments/tap_spectra.py", *(sys.argv[1:] if argv is None else argv)])
    pathlib.Path(args.json).write_text(json.dumps({"command": command, "images": args.images, "extra": eig.EXTRA,
                                                   "iterations": eig.ITERATIONS, "lanczos_steps": eig.LANCZOS_STEPS,
                                                   "rows": results}, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
