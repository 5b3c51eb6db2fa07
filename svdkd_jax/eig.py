"""The top eigenpairs of batches of small symmetric PSD matrices (the Gram matrices of `svd.truncated_svd`).

    lam, w = eig.top_eigh(g, p, solver="auto")     # g [..., r, r] -> lam [..., p] descending, w [..., r, p]

Solvers:
  "eigh"      a full eigendecomposition, keeping the top p pairs. On CUDA it is the batched Jacobi kernel
              (`EighImplementation.JACOBI`): jaxlib's default sends each matrix larger than 32x32 to its own
              `syevd` call, which costs about 1000x a batched call at batch 128 (as reported to jax).
  "subspace"  block subspace iteration built from matmuls: a block of m = p + EXTRA vectors from a fixed start,
              `ITERATIONS` steps of `Q <- orthonormalise(G Q)` (a thin [r, m] QR), then a Rayleigh-Ritz step (an m x m `eigh`, m <= 32: one batched call on every backend). Each matrix is then
              checked: every kept pair must have a residual `||G w - lam w|| <= TOLERANCE * lam_1`, which bounds its
              error by what `eigh` itself achieves in this precision (residual / gap). While any matrix of the batch
              fails, up to `MAX_ROUNDS - 1` more rounds of `ITERATIONS` steps run; a batch still failing then takes
              "eigh" as a whole. Pair p converges like (lam_{m+1} / lam_p)^steps.
  "auto"      "subspace" where it pays, else "eigh": subspace when r > SUBSPACE_MIN_SIZE and the block is smaller
              than the matrix, on every backend (docs/performance.md has the measurements behind it: on a CPU,
              `eigh` is the faster of the two up to 32 x 32 inside the train step, subspace iteration above).

Backend-dependent choices are made when the program is lowered (`jax.lax.platform_dependent`), not from the machine
that traces it: a step exported for CUDA on a CPU carries the CUDA choices.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

SOLVERS = ("auto", "eigh", "subspace")
EXTRA = 6  # block vectors beyond the p asked for: pair p converges like (lam_{p+EXTRA+1} / lam_p)^steps
ITERATIONS = 8  # steps per round; real taps' spectra set it (docs/performance.md)
MAX_ROUNDS = 3  # rounds of ITERATIONS steps before a batch falls back to "eigh"
SUBSPACE_MIN_SIZE = 32  # "auto" uses subspace iteration for Gram matrices larger than this (r x r)
JACOBI_BATCHED_MAX = 32  # jaxlib's CUDA eigh batches matrices up to this size without being told to

_einsum = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)


def tolerance(dtype) -> float:
  """Residual bound of a kept pair relative to lam_1: 64 x the unit roundoff, above float rounding of `G w`."""
  return 64 * float(jnp.finfo(dtype).eps)


def resolve(solver: str, r: int, p: int) -> str:
  """The solver "auto" means for r x r matrices and p pairs ("eigh" or "subspace"); others map to themselves."""
  if solver not in SOLVERS:
    raise ValueError(f"Unknown eigensolver {solver!r}; valid: {', '.join(SOLVERS)}.")
  if solver != "auto":
    return solver
  return "subspace" if r > SUBSPACE_MIN_SIZE and p + EXTRA < r else "eigh"


def top_eigh(g: jax.Array, p: int, solver: str = "auto") -> tuple[jax.Array, jax.Array]:
  """The p largest eigenpairs of symmetric PSD matrices.

  Args:
    g: `[..., r, r]` symmetric positive semi-definite matrices (float32 or float64).
    p: pairs to return, `1 <= p <= r` (static).
    solver: one of `SOLVERS` (module docstring).

  Returns:
    `(lam [..., p], w [..., r, p])`, eigenvalues descending and orthonormal eigenvectors in columns.
  """
  r = g.shape[-1]
  if not 1 <= p <= r:
    raise ValueError(f"top_eigh: p must satisfy 1 <= p <= r = {r}, got {p}.")
  if resolve(solver, r, p) == "eigh":
    return full_eigh(g, p)
  return subspace_eigh(g, p)


def _eigh_desc(g: jax.Array, p: int, jacobi: bool) -> tuple[jax.Array, jax.Array]:
  if jacobi:
    w, lam = jax.lax.linalg.eigh(g, implementation=jax.lax.linalg.EighImplementation.JACOBI)
  else:
    lam, w = jnp.linalg.eigh(g)
  return lam[..., ::-1][..., :p], w[..., ::-1][..., :p]


def full_eigh(g: jax.Array, p: int) -> tuple[jax.Array, jax.Array]:
  """The top p pairs of a full `eigh`, batched on every backend (Jacobi on CUDA above 32 x 32)."""
  if g.shape[-1] <= JACOBI_BATCHED_MAX:
    return _eigh_desc(g, p, jacobi=False)
  return jax.lax.platform_dependent(g, cuda=lambda g: _eigh_desc(g, p, jacobi=True),
                                    default=lambda g: _eigh_desc(g, p, jacobi=False))


@functools.cache
def _start(r: int, m: int, dtype: str) -> np.ndarray:
  """A fixed start block `[r, m]` (seeded Gaussian): results are a deterministic function of G."""
  return np.random.default_rng(r * 1000 + m).standard_normal((r, m)).astype(dtype)


def orthonormalise(z: jax.Array) -> jax.Array:
  """Orthonormal columns spanning `z [..., r, m]`: Householder QR, orthonormal even when z is rank-deficient or
  zero (one batched call on every backend; jaxlib's CUDA plugin batches `geqrf` and `orgqr`)."""
  return jnp.linalg.qr(z)[0]


def _rayleigh_ritz(g: jax.Array, q: jax.Array, p: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Top p Ritz pairs of G on span(q) and whether each matrix's kept pairs pass the residual check."""
  h = _einsum("...ri,...rs,...sj->...ij", q, g, q)
  theta, y = _eigh_desc((h + jnp.swapaxes(h, -1, -2)) / 2, p, jacobi=False)  # m x m, m <= 32: batched everywhere
  w = _einsum("...rm,...mp->...rp", q, y)
  residual = jnp.linalg.norm(_einsum("...rs,...sp->...rp", g, w) - w * theta[..., None, :], axis=-2)
  bound = tolerance(g.dtype) * jnp.maximum(theta[..., :1], 0)
  return theta, w, jnp.all(residual <= bound, axis=-1)


def subspace_rounds(g: jax.Array, p: int, rounds: int, *, iterations: int = ITERATIONS,
                    extra: int = EXTRA) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`rounds` fixed rounds of subspace iteration with no fallback: `(lam, w, converged [...])` (diagnostics)."""
  theta, w, ok, _ = _iterate(g, p, rounds, iterations=iterations, extra=extra)
  return theta, w, ok


def _iterate(g, p, max_rounds, *, iterations, extra):
  r = g.shape[-1]
  m = min(r, p + extra)
  start = jnp.asarray(_start(r, m, jnp.dtype(g.dtype).name))

  def one_round(state):
    q, _, _, _, rounds = state
    q = jax.lax.fori_loop(0, iterations, lambda _, q: orthonormalise(_einsum("...rs,...sm->...rm", g, q)), q)
    return (q, *_rayleigh_ritz(g, q, p), rounds + 1)

  q = jnp.broadcast_to(orthonormalise(start), g.shape[:-2] + start.shape)
  state = one_round((q, None, None, None, 0))
  _, theta, w, ok, rounds = jax.lax.while_loop(lambda s: ~jnp.all(s[3]) & (s[4] < max_rounds), one_round, state)
  return theta, w, ok, rounds


def subspace_eigh(g: jax.Array, p: int, *, iterations: int = ITERATIONS, max_rounds: int = MAX_ROUNDS,
                  extra: int = EXTRA) -> tuple[jax.Array, jax.Array]:
  """The top p pairs by checked block subspace iteration (module docstring), with `full_eigh` as the fallback."""
  theta, w, ok, _ = _iterate(g, p, max_rounds, iterations=iterations, extra=extra)
  return jax.lax.cond(jnp.all(ok), lambda: (theta, w), lambda: full_eigh(g, p))
