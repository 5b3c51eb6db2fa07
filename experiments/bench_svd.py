"""Benchmark `svdkd_jax.svd.truncated_svd` against differentiating `jnp.linalg.svd`.

For each tapped shape of the VGG pair (and 32x32x64) and batch 128: median forward time, and median
forward+backward time of every gradient mode, with the speed-up over `jnp.linalg.svd` (its time / ours, so > 1 is
faster). Also reports whether the gradient is finite on a batch holding degenerate samples (all-zero, rank-1,
repeated singular values), where JAX's own SVD gradient can be NaN. The last line is one JSON object.

  python experiments/bench_svd.py [--batch 128] [--k 2] [--repeats 10]

k = 2 is what KD-SVD asks of the student with one distilled vector (k + 1 candidates).
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from svdkd_jax import svd

SHAPES = [(16, 16, 64), (8, 8, 128), (4, 4, 256), (2, 2, 512), (32, 32, 64)]


def linalg_svd_top(x: jax.Array, k: int):
  """Reference: top-k (u, s, v) from jnp.linalg.svd, differentiated by JAX's own rule."""
  u, s, vt = jnp.linalg.svd(x, full_matrices=False)
  return u[..., :k], s[..., :k], jnp.swapaxes(vt, -1, -2)[..., :k]


def interleaved_times(fns: dict, x: jax.Array, repeats: int) -> dict:
  """{name: (median, min)} wall time of fn(x); one compiling call each, then round-robin so that load from other
  processes on a shared CPU falls on every method alike."""
  for fn in fns.values():
    jax.block_until_ready(fn(x))
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(x))
      times[name].append(time.perf_counter() - start)
  return {name: (float(np.median(t)), float(np.min(t))) for name, t in times.items()}


def feature_maps(key, batch: int, h: int, w: int, d: int) -> jax.Array:
  """ReLU feature maps reshaped to [B, HW, D]."""
  return jax.nn.relu(jax.random.normal(key, (batch, h * w, d)))


def degenerate_maps(key, batch: int, h: int, w: int, d: int) -> jax.Array:
  """A batch whose first samples are all-zero, rank-1, and with all singular values equal."""
  x = feature_maps(key, batch, h, w, d)
  a, b = jax.random.normal(key, (2, max(h * w, d)))
  x = x.at[0].set(0).at[1].set(jnp.outer(a[: h * w], b[:d]))
  return x.at[2].set(jnp.eye(h * w, d))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--k", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()

  methods = {f"truncated_svd[{m}]": (lambda m: lambda x, k: svd.truncated_svd(x, k, grad_mode=m))(m)
             for m in svd.GRAD_MODES}
  methods["jnp.linalg.svd"] = linalg_svd_top

  print(f"jax {jax.__version__}, devices {jax.devices()}, batch {args.batch}, k {args.k}, float32, "
        f"median (min) of {args.repeats} interleaved runs; the forward is the same for every grad_mode")
  print(f"{'shape':>10} {'method':>24} {'fwd ms':>17} {'fwd x':>6} {'fwd+bwd ms':>17} {'f+b x':>6} "
        f"{'finite':>7} {'degen.':>7}")
  summary = {}
  for i, (h, w, d) in enumerate(SHAPES):
    key = jax.random.key(i)
    x = feature_maps(key, args.batch, h, w, d)
    x_bad = degenerate_maps(key, args.batch, h, w, d)
    weights = jax.random.normal(jax.random.fold_in(key, 1), (args.batch, d, args.k))
    forwards = {"truncated_svd": jax.jit(lambda x: svd.truncated_svd(x, args.k)),
                "jnp.linalg.svd": jax.jit(lambda x: linalg_svd_top(x, args.k))}
    # A sign-invariant loss on v, as KD-SVD's downstream loss is after alignment.
    grads = {name: jax.jit(jax.grad(lambda x, fn=fn: jnp.sum(weights * fn(x, args.k)[2] ** 2)))
             for name, fn in methods.items()}
    t_fwd = interleaved_times(forwards, x, args.repeats)
    t_both = interleaved_times(grads, x, args.repeats)
    ref_fwd, ref_both = t_fwd["jnp.linalg.svd"][0], t_both["jnp.linalg.svd"][0]
    label = f"{h}x{w}x{d}"
    summary[label] = {}
    for name, grad in grads.items():
      finite = bool(jnp.all(jnp.isfinite(grad(x)))), bool(jnp.all(jnp.isfinite(grad(x_bad))))
      fwd = t_fwd["jnp.linalg.svd" if name == "jnp.linalg.svd" else "truncated_svd"]
      both = t_both[name]
      print(f"{label:>10} {name:>24} {1e3 * fwd[0]:8.2f} ({1e3 * fwd[1]:6.2f}) {ref_fwd / fwd[0]:6.2f} "
            f"{1e3 * both[0]:8.2f} ({1e3 * both[1]:6.2f}) {ref_both / both[0]:6.2f} {str(finite[0]):>7} "
            f"{str(finite[1]):>7}")
      mode = name[len("truncated_svd["):-1] if name.startswith("truncated") else name
      summary[label][mode] = round(ref_both / both[0], 2)
      if name == "jnp.linalg.svd":
        summary[label]["jnp.linalg.svd_grad_finite_on_degenerate"] = finite[1]
  print("columns: 'x' = jnp.linalg.svd time / this method's time (> 1 is faster); 'finite' = gradient finite on "
        "random ReLU maps; 'degen.' = finite on a batch with all-zero, rank-1 and equal-singular-value samples")
  print(json.dumps({"jax": jax.__version__, "batch": args.batch, "k": args.k,
                    "fwd_bwd_speedup_vs_jnp_linalg_svd": summary}))


if __name__ == "__main__":
  main()
