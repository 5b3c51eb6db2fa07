"""The top eigenpairs of batches of small symmetric PSD matrices (the Gram matrices of `svd.truncated_svd`).

    lam, w = eig.top_eigh(g, p, solver="auto")     # g [..., r, r] -> lam [..., p] descending, w [..., r, p]

Solvers:
  "eigh"      a full eigendecomposition, keeping the top p pairs. On CUDA it is the batched Jacobi kernel
              (`EighImplementation.JACOBI`): jaxlib's default sends each matrix larger than 32x32 to its own
              `syevd` call, which costs about 1000x a batched call at batch 128 (as reported to jax).
  "subspace"  block subspace iteration built from matmuls: a block of m = p + EXTRA vectors from a fixed start,
              steps of `Q <- orthonormalise(G Q)` (CholeskyQR of the [r, m] block), then a Rayleigh-Ritz step (an
              m x m `eigh`). Each matrix is then checked: every kept pair must have a residual
              `||G w - lam w|| <= tolerance * lam_1`, which bounds its error by what `eigh` itself achieves in this
              precision (residual / gap), and the kept vectors must be orthonormal. Pair p converges like
              (lam_{m+1} / lam_p)^steps.
              The first round stops as soon as the block's leading p columns pass the check on their own (a top p
              well separated from the rest, as a teacher's single pair), and after `PROBE` steps if the spectra
              are too flat to converge (more than a few matrices with `lam_m / lam_p > RATE_MAX`, read off the
              block's Rayleigh quotients): that batch takes "eigh" at once. Else rounds of `ITERATIONS` steps (at
              most `MAX_ROUNDS`), each ended by the check (of the leading columns, else of a Rayleigh-Ritz step),
              run while more than a few matrices fail; those few then take "eigh" alone, and a batch still failing
              takes it as a whole.
  "lanczos"   Lanczos with full reorthogonalisation: J = `lanczos_steps(r, p)` steps from a fixed start, each a
              batched matvec and two Gram-Schmidt passes against the basis (matmuls), then the top p pairs of the
              J x J tridiagonal by bisection and twisted factorisation, vectorised across the batch. No per-matrix
              library call at all, where CholeskyQR, Rayleigh-Ritz and `eigh` make one each per matrix on a CPU.
              The Krylov space holds every polynomial filter of degree < J, so pair p converges far faster than a
              fixed block's (lam_{m+1} / lam_p)^steps; with J = r it is exact up to rounding, so every spectrum
              passes at r <= J (ties inside the kept pairs aside). The same residual check follows, and the same
              fallback (`eigh` alone while few failing matrices, else for the whole batch).
  "auto"      the fastest checked solver by backend, chosen at lowering (docs/performance.md has the measurements):
              on a CPU (jaxlib's CPU `eigh` is one LAPACK call per matrix) "lanczos" for Gram matrices larger than
              `LANCZOS_MIN_SIZE`, and for a single pair (p = 1, the teacher's with k = 1) of a matrix larger than
              `POWER_MIN_SIZE` "power"; on CUDA/TPU, whose batched `eigh` kernels are fast below, "subspace" for
              matrices larger than `SUBSPACE_MIN_SIZE` when the block is smaller than the matrix. Else "eigh".
  "power"     (p = 1, chosen by "auto" on a CPU) power iteration: steps of `q <- G q / ||G q||` from a fixed
              start, every one a batched matvec, until every matrix passes the same residual check (at most
              `POWER_STEPS`); the matrices that fail take `eigh` as in "subspace" (alone while few, else the whole
              batch). It converges like (lam_2 / lam_1)^steps, which the teacher's well-separated pair makes fast.

Backend-dependent choices are made when the program is lowered (`jax.lax.platform_dependent`), not from the machine
that traces it: a step exported for CUDA on a CPU carries the CUDA choices.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

SOLVERS = ("auto", "eigh", "subspace", "lanczos")
EXTRA = 6  # block vectors beyond the p asked for: pair p converges like (lam_{p+EXTRA+1} / lam_p)^steps
ITERATIONS = 8  # steps per round; real taps' spectra set it (docs/performance.md)
MAX_ROUNDS = 3  # rounds of ITERATIONS steps before a batch falls back to "eigh"
PROBE = 3  # steps after which a batch with more than a few flat spectra takes "eigh"
RATE_MAX = 0.8  # a matrix whose estimated lam_m / lam_p exceeds this after PROBE steps counts as flat
FEW = 1 / 16  # up to this share of a batch, failing matrices take "eigh" alone; beyond it the whole batch does
SUBSPACE_MIN_SIZE = 32  # "auto" on accelerators: subspace iteration for Gram matrices larger than this (r x r)
POWER_MIN_SIZE = 8  # "auto" on a CPU: p = 1 of a Gram matrix larger than this by power iteration
POWER_STEPS = 12  # the teacher's single pair passes within 4 at every real tap measured (docs/performance.md)
LANCZOS_MIN_SIZE = 8  # "auto" on a CPU: p >= 2 pairs of a Gram matrix larger than this by Lanczos
LANCZOS_STEPS = 14  # Lanczos steps beyond the p asked for (at most r); real taps' spectra set it (docs/performance.md)
JACOBI_BATCHED_MAX = 32  # jaxlib's CUDA eigh batches matrices up to this size without being told to

_einsum = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)


def tolerance(dtype: jax.typing.DTypeLike) -> float:
  """Residual bound of a kept pair relative to lam_1: 64 x the unit roundoff, above float rounding of `G w`."""
  return 64 * float(jnp.finfo(dtype).eps)


def resolve(solver: str, r: int, p: int, platform: str = "cpu") -> str:
  """The solver "auto" means on `platform` ("cpu" or an accelerator's name) for r x r matrices and p pairs ("eigh",
  "subspace", "lanczos" or "power"); the others map to themselves."""
  if solver not in SOLVERS:
    raise ValueError(f"Unknown eigensolver {solver!r}; valid: {', '.join(SOLVERS)}.")
  if solver != "auto":
    return solver
  if platform == "cpu":
    if p == 1 and r > POWER_MIN_SIZE:
      return "power"
    return "lanczos" if r > LANCZOS_MIN_SIZE else "eigh"
  return "subspace" if r > SUBSPACE_MIN_SIZE and p + EXTRA < r else "eigh"


def eigh_everywhere(solver: str, r: int, p: int) -> bool:
  """Whether `top_eigh(g, p, solver)` takes a full `eigh` on every backend (then `full_eigh(g, r)` gives every pair
  at the same cost)."""
  return resolve(solver, r, p, "cpu") == resolve(solver, r, p, "other") == "eigh"


def top_eigh(g: jax.Array, p: int, solver: str = "auto", *, every_pair: bool = False) -> tuple:
  """The p largest eigenpairs of symmetric PSD matrices.

  Args:
    g: `[..., r, r]` symmetric positive semi-definite matrices (float32 or float64).
    p: pairs to return, `1 <= p <= r` (static).
    solver: one of `SOLVERS` (module docstring).
    every_pair: also return `spectrum = (lam_all [..., r], w_all [..., r, r], known [])`: every eigenpair where the
      batch took a full `eigh` (`known` True), zeros where it did not.

  Returns:
    `(lam [..., p], w [..., r, p])`, eigenvalues descending and orthonormal eigenvectors in columns; with
    `every_pair`, `(lam, w, spectrum)`.
  """
  r = g.shape[-1]
  if not 1 <= p <= r:
    raise ValueError(f"top_eigh: p must satisfy 1 <= p <= r = {r}, got {p}.")
  lead = g.shape[:-2]
  g = g.reshape((-1, r, r))
  solve = {"eigh": _every_pair, "subspace": _subspace, "power": _power, "lanczos": _lanczos}
  cpu, other = resolve(solver, r, p, "cpu"), resolve(solver, r, p, "other")
  if cpu == other:
    out = solve[cpu](g, p)
  else:
    out = jax.lax.platform_dependent(g, cpu=lambda g: solve[cpu](g, p), default=lambda g: solve[other](g, p))
  lam, w, lam_all, w_all, known = out
  lam, w = lam.reshape(lead + (p,)), w.reshape(lead + (r, p))
  if not every_pair:
    return lam, w
  return lam, w, (lam_all.reshape(lead + (r,)), w_all.reshape(lead + (r, r)), known)


def _eigh_desc(g: jax.Array, p: int, jacobi: bool) -> tuple[jax.Array, jax.Array]:
  if jacobi:
    w, lam = jax.lax.linalg.eigh(g, implementation=jax.lax.linalg.EighImplementation.JACOBI)
  else:
    lam, w = jnp.linalg.eigh(g)
  return lam[..., ::-1][..., :p], w[..., ::-1][..., :p]


def _every_pair(g: jax.Array, p: int):
  """`full_eigh` with every pair kept as well: `(lam, w, lam_all, w_all, True)` (`top_eigh`'s `every_pair`)."""
  lam_all, w_all = full_eigh(g, g.shape[-1])
  return lam_all[..., :p], w_all[..., :p], lam_all, w_all, jnp.array(True)


def _no_spectrum(lam: jax.Array, w: jax.Array):
  """`(lam, w)` with an empty spectrum (zeros, known False), the shape of `_every_pair`'s."""
  b, r = w.shape[:-1]
  return lam, w, jnp.zeros((b, r), w.dtype), jnp.zeros((b, r, r), w.dtype), jnp.array(False)


def full_eigh(g: jax.Array, p: int) -> tuple[jax.Array, jax.Array]:
  """The top p pairs of a full `eigh`, batched on every backend (Jacobi on CUDA above 32 x 32).

  `g [..., r, r]` -> `(lam [..., p], w [..., r, p])`: eigenvalues descending, orthonormal eigenvectors in columns.
  """
  if g.shape[-1] <= JACOBI_BATCHED_MAX:
    return _eigh_desc(g, p, jacobi=False)
  return jax.lax.platform_dependent(g, cuda=lambda g: _eigh_desc(g, p, jacobi=True),
                                    default=lambda g: _eigh_desc(g, p, jacobi=False))


@functools.cache
def _start(r: int, m: int, dtype: str) -> np.ndarray:
  """A fixed orthonormal start block `[r, m]` (QR of a seeded Gaussian): results are a deterministic function of G."""
  z = np.random.default_rng(r * 1000 + m).standard_normal((r, m))
  return np.linalg.qr(z)[0].astype(dtype)


def orthonormalise(z: jax.Array) -> jax.Array:
  """Columns spanning `z [..., r, m]`: CholeskyQR of the column-scaled block, its Gram matrix shifted by m eps.

  Orthonormal to working precision when the scaled columns are well conditioned (a converging subspace block: its
  columns point at different eigenvectors); else a well-conditioned basis of the same span, which a second call
  makes orthonormal. The shift keeps the Cholesky factor of a rank-deficient or zero block finite. Two m x m
  library calls (Cholesky, triangular inverse) where a QR of the [r, m] block would take two r x m ones.
  """
  c = _einsum("...ri,...rj->...ij", z, z)
  d = jnp.sqrt(jnp.diagonal(c, axis1=-2, axis2=-1))
  d = jnp.where(d > 0, d, 1)
  m = z.shape[-1]
  eye = jnp.eye(m, dtype=z.dtype)
  shift = m * float(jnp.finfo(z.dtype).eps)
  low = jax.lax.linalg.cholesky(c / (d[..., :, None] * d[..., None, :]) + shift * eye, symmetrize_input=False)
  inv = jax.lax.linalg.triangular_solve(low, jnp.broadcast_to(eye, low.shape), left_side=True, lower=True)
  # z D^-1 L^-T, times (1 + shift / 2): the shift shrinks well-conditioned columns by (1 + shift)^-1/2.
  return _einsum("...rm,...nm->...rn", z * ((1 + shift / 2) / d[..., None, :]), inv)


def _steps(g: jax.Array, q: jax.Array, n) -> jax.Array:
  return jax.lax.fori_loop(0, n, lambda _, q: orthonormalise(_einsum("...rs,...sm->...rm", g, q)), q)


def _passes(lam: jax.Array, w: jax.Array, gw: jax.Array) -> jax.Array:
  """Per matrix, whether pairs `(lam [B, p], w [B, r, p])` with `gw = G w` pass the residual check, and `w` is
  orthonormal: `[B]` bool."""
  tol = tolerance(w.dtype)
  residual = jnp.linalg.norm(gw - w * lam[..., None, :], axis=-2)
  gram = _einsum("...ri,...rj->...ij", w, w)
  orthonormal = jnp.all(jnp.abs(gram - jnp.eye(w.shape[-1], dtype=w.dtype)) <= tol, axis=(-2, -1))
  return jnp.all(residual <= tol * jnp.maximum(lam[..., :1], 0), axis=-1) & orthonormal


def _top_pairs(g: jax.Array, q: jax.Array, p: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Top p pairs of G from the block q [B, r, m], and whether each matrix's pairs pass the check.

  The block's leading p columns converge on their own where lam_{p+1} / lam_p is small (simultaneous iteration):
  when they pass for the whole batch they are the pairs. Else a Rayleigh-Ritz step on the block (an m x m `eigh`,
  batched everywhere) finds them at the block's rate.
  """
  z = _einsum("...rs,...sm->...rm", g, q)
  leading = _leading(q, z, p)

  def rayleigh_ritz():
    h = _einsum("...ri,...rj->...ij", q, z)
    theta, y = _eigh_desc((h + jnp.swapaxes(h, -1, -2)) / 2, p, jacobi=False)
    return theta, _einsum("...rm,...mp->...rp", q, y), _einsum("...rm,...mp->...rp", z, y)

  lam, w, gw = jax.lax.cond(jnp.all(_passes(*leading)), lambda: leading, rayleigh_ritz)
  return lam, w, _passes(lam, w, gw)


def _too_flat(q: jax.Array, z: jax.Array, p: int) -> jax.Array:
  """Per matrix, whether the Rayleigh quotients of the block q's last column and its p-th (z = G q) put
  lam_m / lam_p above RATE_MAX: `[B]` bool."""
  h = jnp.sum(q * z, axis=-2)
  return h[:, -1] > RATE_MAX * h[:, p - 1]


def _leading(q: jax.Array, z: jax.Array, p: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The block's leading p columns as pairs `(lam, w, G w)`, their eigenvalues the columns' Rayleigh quotients."""
  return jnp.sum(q[..., :p] * z[..., :p], axis=-2), q[..., :p], z[..., :p]


def _few(batch: int) -> int:
  return max(1, int(batch * FEW))


def _patch(g: jax.Array, p: int, lam: jax.Array, w: jax.Array, ok: jax.Array):
  """`(lam, w)` with the matrices failing `ok` replaced by `full_eigh`'s pairs: alone while they are few, else the
  whole batch (whose every pair is then kept); as `_every_pair` returns them."""
  failing, few = jnp.sum(~ok), _few(g.shape[0])

  def alone():
    idx = jnp.nonzero(~ok, size=few, fill_value=-1)[0]
    idx = jnp.where(idx < 0, idx[0], idx)  # spare slots repeat the first failing matrix (same values written)
    lam_f, w_f = full_eigh(g[idx], p)
    return _no_spectrum(lam.at[idx].set(lam_f), w.at[idx].set(w_f))

  branch = (failing > 0).astype(jnp.int32) + (failing > few).astype(jnp.int32)
  return jax.lax.switch(branch, [lambda: _no_spectrum(lam, w), alone, lambda: _every_pair(g, p)])


def _iterate(g, q, p, rounds, iterations, first):
  """Rounds of subspace iteration from q (`first` steps in round 1, `iterations` after) while more than a few
  matrices fail the check, at most `rounds`: `(lam, w, ok, rounds run)`."""
  few = _few(g.shape[0])

  def one_round(state):
    q, _, _, _, done = state
    q = _steps(g, q, jnp.where(done == 0, first, iterations))
    return (q, *_top_pairs(g, q, p), done + 1)

  state = one_round((q, None, None, None, 0))
  _, lam, w, ok, done = jax.lax.while_loop(lambda s: (jnp.sum(~s[3]) > few) & (s[4] < rounds), one_round, state)
  return lam, w, ok, done


def subspace_rounds(g: jax.Array, p: int, rounds: int, *, iterations: int = ITERATIONS,
                    extra: int = EXTRA) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`rounds` fixed rounds of subspace iteration with no fallback: `(lam, w, converged [...])` (diagnostics)."""
  lead, r = g.shape[:-2], g.shape[-1]
  g = g.reshape((-1, r, r))
  q = jnp.broadcast_to(_start(r, min(r, p + extra), jnp.dtype(g.dtype).name), g.shape[:1] + (r, min(r, p + extra)))
  q = _steps(g, q, iterations * (rounds - 1))
  lam, w, ok = _top_pairs(g, _steps(g, q, iterations), p)
  return lam.reshape(lead + (p,)), w.reshape(lead + (r, p)), ok.reshape(lead)


def _first_round(g: jax.Array, q: jax.Array, p: int, iterations: int) -> tuple[jax.Array, jax.Array]:
  """Round 1 from the start block q: steps while the block's leading p columns fail the check, at most `iterations`
  (they pass on their own where the top p is well separated, as the teacher's single pair), stopping after PROBE
  steps if more than a few matrices are too flat to converge. Returns `(q, status)`: 0 the leading columns pass,
  1 too flat, 2 neither."""
  few = _few(g.shape[0])

  def step(state):
    q, z, done, _ = state
    q = orthonormalise(z)
    z = _einsum("...rs,...sm->...rm", g, q)
    flat = (done + 1 == PROBE) & (jnp.sum(_too_flat(q, z, p)) > few)
    return q, z, done + 1, jnp.where(jnp.all(_passes(*_leading(q, z, p))), 0, jnp.where(flat, 1, 2))

  state = (q, _einsum("...rs,...sm->...rm", g, q), 0, 2)
  q, _, _, status = jax.lax.while_loop(lambda s: (s[3] == 2) & (s[2] < iterations), step, state)
  return q, status


def _subspace(g: jax.Array, p: int, *, iterations: int = ITERATIONS, max_rounds: int = MAX_ROUNDS,
              extra: int = EXTRA):
  """`subspace_eigh` on `g [B, r, r]`, as `_every_pair` returns them."""
  r = g.shape[-1]
  m = min(r, p + extra)
  q, status = _first_round(g, jnp.broadcast_to(_start(r, m, jnp.dtype(g.dtype).name), g.shape[:1] + (r, m)), p,
                           iterations)

  def converge():  # round 1's Rayleigh-Ritz check, then more rounds while more than a few matrices fail
    lam, w, ok, _ = _iterate(g, q, p, max_rounds, iterations, 0)
    return _patch(g, p, lam, w, ok)

  leading = lambda: _no_spectrum(*_leading(q, _einsum("...rs,...sm->...rm", g, q), p)[:2])  # noqa: E731
  return jax.lax.switch(status, [leading, lambda: _every_pair(g, p), converge])


def _power(g: jax.Array, p: int):
  """The top pair of `g [B, r, r]` by checked power iteration (module docstring), as `_every_pair` returns it."""
  if p != 1:
    raise ValueError(f"power iteration finds one pair, not p = {p}.")
  r = g.shape[-1]
  q = jnp.broadcast_to(_start(r, 1, jnp.dtype(g.dtype).name), g.shape[:1] + (r, 1))

  def step(state):
    q, z, _, done = state
    norm = jnp.linalg.norm(z, axis=-2, keepdims=True)
    q = jnp.where(norm > 0, z / jnp.where(norm > 0, norm, 1), q)  # G q = 0: q is an eigenvector of eigenvalue 0
    z = _einsum("...rs,...sm->...rm", g, q)
    return q, z, _passes(*_leading(q, z, 1)), done + 1

  z = _einsum("...rs,...sm->...rm", g, q)
  state = (q, z, _passes(*_leading(q, z, 1)), 0)
  q, z, ok, _ = jax.lax.while_loop(lambda s: ~jnp.all(s[2]) & (s[3] < POWER_STEPS), step, state)
  lam, w, _ = _leading(q, z, 1)
  return _patch(g, 1, lam, w, ok)


def subspace_eigh(g: jax.Array, p: int, *, iterations: int = ITERATIONS, max_rounds: int = MAX_ROUNDS,
                  extra: int = EXTRA) -> tuple[jax.Array, jax.Array]:
  """The top p pairs by checked block subspace iteration (module docstring), with `full_eigh` as the fallback.

  `g [..., r, r]` -> `(lam [..., p], w [..., r, p])`: eigenvalues descending, orthonormal eigenvectors in columns.
  """
  lead, r = g.shape[:-2], g.shape[-1]
  lam, w = _subspace(g.reshape((-1, r, r)), p, iterations=iterations, max_rounds=max_rounds, extra=extra)[:2]
  return lam.reshape(lead + (p,)), w.reshape(lead + (r, p))


def lanczos_steps(r: int, p: int) -> int:
  """The Lanczos steps (Krylov dimension J) for p pairs of an r x r matrix: `min(r, p + LANCZOS_STEPS)`."""
  return min(r, p + LANCZOS_STEPS)


@functools.partial(jax.jit, static_argnums=(1, 2))  # eagerly, its unrolled steps would compile op by op
def lanczos_pairs(g: jax.Array, p: int, steps: int | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The top p pairs of `g [B, r, r]` by Lanczos with no fallback: `(lam [B, p], w [B, r, p], converged [B])`,
  `converged` the residual check; `steps` Lanczos steps (default `lanczos_steps(r, p)`)."""
  steps = lanczos_steps(g.shape[-1], p) if steps is None else steps
  return _ritz_pairs(g, *_tridiagonalise(g, steps), p)


def _lanczos(g: jax.Array, p: int):
  """`lanczos_pairs` with `full_eigh` for the matrices that fail the check, as `_every_pair` returns them."""
  lam, w, ok = lanczos_pairs(g, p)
  return _patch(g, p, lam, w, ok)


def _ritz_pairs(g: jax.Array, basis: jax.Array, alpha: jax.Array, beta: jax.Array,
                p: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The top p Ritz pairs of `g [B, r, r]` from its Lanczos tridiagonalisation (`_tridiagonalise`), checked:
  `(lam [B, p], w [B, r, p], ok [B])`."""
  w = _einsum("...jr,...jp->...rp", basis, _tridiagonal_top(alpha, beta, p)[1])
  cols = []  # Gram-Schmidt of the Ritz vectors: close Ritz values leave them slightly non-orthogonal
  for i in range(p):
    c = w[..., i]
    for prev in cols:
      c = c - jnp.sum(prev * c, axis=-1, keepdims=True) * prev
    norm = jnp.linalg.norm(c, axis=-1, keepdims=True)
    cols.append(c / jnp.where(norm > 0, norm, 1))
  w = jnp.stack(cols, axis=-1)
  gw = _einsum("...rs,...sp->...rp", g, w)
  lam = jnp.sum(w * gw, axis=-2)  # Rayleigh quotients: accurate to the square of the vectors' error
  return lam, w, _passes(lam, w, gw)


def _orthogonalise(z: jax.Array, basis: jax.Array) -> jax.Array:
  """`z [B, r]` minus its projection on the orthonormal rows of `basis [B, j, r]`, twice (classical Gram-Schmidt
  repeated: orthogonal to working precision)."""
  for _ in range(2):
    z = z - _einsum("...jr,...j->...r", basis, _einsum("...jr,...r->...j", basis, z))
  return z


def _tridiagonalise(g: jax.Array, steps: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Lanczos tridiagonalisation of `g [B, r, r]` with full reorthogonalisation, `steps` = J steps from a fixed start.

  Returns `(basis [B, J, r], alpha [B, J], beta [B, J - 1])`: orthonormal rows Q with `Q G Q^T` the tridiagonal of
  diagonal alpha and off-diagonal beta. Where the Krylov space of a matrix closes early (an invariant subspace, as
  in a rank-deficient or zero G), its later rows are 0 and so are their alphas and betas: the tridiagonal splits,
  and its top block's eigenpairs are still G's (pairs beyond that block get zero vectors, which fail the residual
  check and take `eigh`).
  """
  r = g.shape[-1]
  q = jnp.broadcast_to(jnp.asarray(_start(r, r, jnp.dtype(g.dtype).name)[:, 0]), g.shape[:1] + (r,))
  rows, alpha, beta = [q], [], []
  floor = r * float(jnp.finfo(g.dtype).eps) * jnp.max(jnp.abs(g), axis=(-2, -1))  # below it, beta is rounding
  for j in range(steps):
    z = _einsum("...rs,...s->...r", g, q)
    alpha.append(jnp.sum(q * z, axis=-1))
    if j + 1 == steps:
      break
    z = _orthogonalise(z, jnp.stack(rows, axis=1))
    norm = jnp.linalg.norm(z, axis=-1)
    closed = norm <= floor
    q = jnp.where(closed[:, None], 0, z / jnp.where(closed, 1, norm)[:, None])
    rows.append(q)
    beta.append(jnp.where(closed, 0, norm))
  beta = jnp.stack(beta, axis=-1) if beta else jnp.zeros(g.shape[:1] + (0,), g.dtype)
  return jnp.stack(rows, axis=1), jnp.stack(alpha, axis=-1), beta


def _tridiagonal_top(alpha: jax.Array, beta: jax.Array, p: int) -> tuple[jax.Array, jax.Array]:
  """The top p eigenpairs of symmetric tridiagonal matrices (diagonal `alpha [B, J]`, off-diagonal `beta [B, J-1]`),
  vectorised across the batch with no library call: eigenvalues by bisection on Sturm counts, then each eigenvector
  from the twisted factorisation of `T - theta I` at its best twist (Dhillon's), in O(J) per pair.

  Returns `(theta [B, p]` descending, `y [B, J, p]` unit columns`)`."""
  dtype = alpha.dtype
  b, steps = alpha.shape
  radius = jnp.pad(jnp.abs(beta), ((0, 0), (0, 1))) + jnp.pad(jnp.abs(beta), ((0, 0), (1, 0)))
  lo = jnp.broadcast_to(jnp.min(alpha - radius, axis=-1, keepdims=True), (b, p))  # Gershgorin bounds
  hi = jnp.broadcast_to(jnp.max(alpha + radius, axis=-1, keepdims=True), (b, p))
  scale = jnp.maximum(jnp.abs(lo), jnp.abs(hi))[:, :1]
  floor = float(jnp.finfo(dtype).eps) * jnp.where(scale > 0, scale, 1)  # smallest pivot magnitude
  beta2 = jnp.square(beta)
  below_kth = steps - 1 - jnp.arange(p)  # theta_k (k-th largest) >= x iff fewer than this + 1 are below x

  def safe(d):
    return jnp.where(jnp.abs(d) < floor, jnp.where(d < 0, -floor, floor), d)

  def count_below(x):  # eigenvalues below x: the negative pivots of the LDL^T of T - x I
    d = alpha[:, :1] - x
    count = (d < 0).astype(jnp.int32)
    for i in range(1, steps):
      d = alpha[:, i:i + 1] - x - beta2[:, i - 1:i] / safe(d)
      count += d < 0
    return count

  def bisect(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) / 2
    up = count_below(mid) <= below_kth
    return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

  lo, hi = jax.lax.fori_loop(0, jnp.finfo(dtype).nmant + 4, bisect, (lo, hi))  # to below one ulp of the scale
  theta = (lo + hi) / 2
  shifted = alpha[:, :, None] - theta[:, None, :]  # [B, J, p]
  off = beta[:, :, None]
  top = [shifted[:, 0]]  # pivots of the top-down LDL^T
  for i in range(1, steps):
    top.append(shifted[:, i] - off[:, i - 1] ** 2 / safe(top[-1]))
  bottom = [shifted[:, -1]]  # pivots of the bottom-up UDU^T
  for i in range(steps - 2, -1, -1):
    bottom.insert(0, shifted[:, i] - off[:, i] ** 2 / safe(bottom[0]))
  twist = jnp.argmin(jnp.abs(jnp.stack(top, 1) + jnp.stack(bottom, 1) - shifted), axis=1)  # [B, p]
  y = [jnp.ones_like(theta)] * steps
  for i in range(steps - 2, -1, -1):  # above the twist, from the top-down factors
    y[i] = jnp.where(i < twist, -off[:, i] / safe(top[i]) * y[i + 1], y[i])
  for i in range(1, steps):  # below it, from the bottom-up ones
    y[i] = jnp.where(i > twist, -off[:, i - 1] / safe(bottom[i]) * y[i - 1], y[i])
  y = jnp.stack(y, axis=1)
  return theta, y / jnp.linalg.norm(y, axis=1, keepdims=True)
