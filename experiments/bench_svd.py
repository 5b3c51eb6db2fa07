r"""Benchmark `svdkd_jax.svd.truncated_svd` per eigensolver against differentiating `jnp.linalg.svd`.

  python experiments/bench_svd.py [--batch 128] [--k 2] [--repeats 10] [--shapes 16x16x64,8x8x128]
      [--inputs taplike,relu] [--before COMMIT]

For each tapped shape of the paper's VGG pair at full width (and 32x32x64), batch 128, k = 2 (what KD-SVD asks of
the student: k + 1 candidates with one distilled vector):
  fwd+bwd ms   of truncated_svd for each solver ("eigh", "subspace", "lanczos") and grad mode, and of `jnp.linalg.svd`
               differentiated by JAX; with `--before COMMIT`, also of that commit's `svdkd_jax/svd.py` (read with
               `git show`, so old and new are timed in one run)
  x            jnp.linalg.svd's time / this one's (> 1 is faster)
  fwd ms       the Gram matrices' top-k alone: `eigh` as jaxlib lowers it by default, `eigh` forced to Jacobi, and
               the subspace and Lanczos solvers (on CUDA the default sends each matrix above 32 x 32 to its own
               solver call)
Inputs: `taplike` maps have the singular-value decay of real taps (s_i ~ i^-0.77, which gives lam_9 / lam_2 = 0.1,
the median of experiments/results/tap_spectra.json); `relu` maps are random ReLU noise, whose flat bulk makes the
iterative solvers fall back to `eigh` (their worst case). Every method is timed round-robin (median of `--repeats`), so
load from other processes hits all alike. The last line is one JSON object.
"""

import argparse
import functools
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from svdkd_jax import config_files
from svdkd_jax import eig
from svdkd_jax import svd

# `--before`: that commit's svd.py under today's mode names (experiments/ is not a package).
load_before = config_files.load_module(pathlib.Path(__file__).with_name("bench_step.py")).load_before

SHAPES = [(16, 16, 64), (8, 8, 128), (4, 4, 256), (2, 2, 512), (32, 32, 64)]
SOLVERS = ("eigh", "subspace", "lanczos")


def linalg_svd_top(x: jax.Array, k: int):
  """Reference: top-k (u, s, v) from jnp.linalg.svd, differentiated by JAX's own rule."""
  u, s, vt = jnp.linalg.svd(x, full_matrices=False)
  return u[..., :k], s[..., :k], jnp.swapaxes(vt, -1, -2)[..., :k]


def interleaved_times(fns: dict, x: jax.Array, repeats: int) -> dict:
  """{name: median seconds} of fn(x); one compiling call each, then round-robin."""
  for fn in fns.values():
    jax.block_until_ready(fn(x))
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(x))
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


def feature_maps(key, batch: int, hw: int, d: int, kind: str) -> jax.Array:
  """`[B, HW, D]` maps: "taplike" (power-law singular values, as real taps) or "relu" (ReLU of Gaussian noise)."""
  if kind == "relu":
    return jax.nn.relu(jax.random.normal(key, (batch, hw, d)))
  r = min(hw, d)
  ku, kv = jax.random.split(key)
  u, _ = jnp.linalg.qr(jax.random.normal(ku, (batch, hw, r)))
  v, _ = jnp.linalg.qr(jax.random.normal(kv, (batch, d, r)))
  s = jnp.arange(1, r + 1, dtype=jnp.float32) ** -0.77
  return jnp.einsum("bir,r,bjr->bij", u, s, v)


def gram(x: jax.Array) -> jax.Array:
  return (jnp.swapaxes(x, -1, -2) @ x) if x.shape[-2] >= x.shape[-1] else (x @ jnp.swapaxes(x, -1, -2))


def eigh_forwards(k: int) -> dict:
  """The Gram matrix's top-k by the default `eigh` lowering, by Jacobi `eigh`, and by the subspace and Lanczos
  solvers."""
  jacobi = jax.lax.linalg.EighImplementation.JACOBI
  out = {"eigh default": lambda x: jnp.linalg.eigh(gram(x))[1][..., -k:],
         "subspace": lambda x: eig.subspace_eigh(gram(x), k)[1],
         "lanczos": lambda x: eig.top_eigh(gram(x), k, "lanczos")[1]}
  if jax.default_backend() != "cpu":  # jaxlib's CPU eigh has no Jacobi implementation
    out["eigh jacobi"] = lambda x: jax.lax.linalg.eigh(gram(x), implementation=jacobi)[0][..., -k:]
  return {name: jax.jit(fn) for name, fn in out.items()}


def bench_shape(shape, kind: str, args, before) -> dict:
  h, w, d = shape
  key = jax.random.key(h * w * d)
  x = feature_maps(key, args.batch, h * w, d, kind)
  weights = jax.random.normal(jax.random.fold_in(key, 1), (args.batch, d, args.k))
  methods = {f"{solver}/{mode}": functools.partial(svd.truncated_svd, grad_mode=mode, solver=solver)
             for solver in SOLVERS for mode in svd.GRAD_MODES}
  if before is not None:
    methods.update({f"before/{mode}": functools.partial(before.truncated_svd, grad_mode=mode)
                    for mode in before.GRAD_MODES})
  methods["jnp.linalg.svd"] = linalg_svd_top
  # A sign-invariant loss on v, as KD-SVD's downstream loss is after alignment.
  grads = {name: jax.jit(jax.grad(lambda x, fn=fn: jnp.sum(weights * fn(x, args.k)[2] ** 2)))
           for name, fn in methods.items()}
  both = interleaved_times(grads, x, args.repeats)
  fwd = interleaved_times(eigh_forwards(args.k), x, args.repeats)
  ref = both["jnp.linalg.svd"]
  finite = {name: bool(jnp.all(jnp.isfinite(g(x)))) for name, g in grads.items()}
  auto = eig.resolve("auto", min(h * w, d), args.k, jax.default_backend())
  row = {"shape": f"{h}x{w}x{d}", "inputs": kind, "solver_auto": auto,
         "fwd_bwd_ms": {n: round(1e3 * t, 2) for n, t in both.items()},
         "speedup_vs_jnp_linalg_svd": {n: round(ref / t, 2) for n, t in both.items()},
         "topk_fwd_ms": {n: round(1e3 * t, 2) for n, t in fwd.items()}, "finite": finite}
  return row


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--k", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--shapes", default="", help="comma-separated HxWxD (default: the VGG taps and 32x32x64)")
  parser.add_argument("--inputs", default="taplike,relu")
  parser.add_argument("--before", default="", help="a commit whose svd.py is timed too (needs git)")
  args = parser.parse_args(argv)
  shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",") if s] or SHAPES
  before = load_before(args.before) if args.before else None
  if args.before and before is None:
    print(f"# --before {args.before}: git could not show svdkd_jax/svd.py there; timing the current code only")
  print(f"# jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}, batch {args.batch}, "
        f"k {args.k}, float32, median of {args.repeats} round-robin runs; ms and speed-up over jnp.linalg.svd")
  rows = []
  for kind in args.inputs.split(","):
    for shape in shapes:
      row = bench_shape(shape, kind, args, before)
      rows.append(row)
      cells = "  ".join(f"{n} {row['fwd_bwd_ms'][n]:.2f} ({row['speedup_vs_jnp_linalg_svd'][n]:.1f}x)"
                        for n in row["fwd_bwd_ms"])
      fwd = "  ".join(f"{n} {t:.2f}" for n, t in row["topk_fwd_ms"].items())
      print(f"{row['shape']:>9} {kind:>7} auto={row['solver_auto']:<8} fwd+bwd: {cells} | top-k fwd: {fwd}"
            f"{'' if all(row['finite'].values()) else '  NON-FINITE: ' + str(row['finite'])}", flush=True)
  print(json.dumps({"jax": jax.__version__, "backend": jax.default_backend(), "batch": args.batch, "k": args.k,
                    "before": args.before or None, "rows": rows}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
