"""Truncated SVD of feature maps with a custom VJP, and the KD-SVD alignment step.

A tapped feature map `[B, H, W, D]` is reshaped per sample to `M: [HW, D]`, `r = min(HW, D)`, and decomposed as
`M = U S V^T`. KD-SVD distils the top right singular vectors `v_1..v_k` (channel space).

Forward (all modes): the top k eigenpairs of the smaller Gram matrix (`M^T M` if HW >= D else `M M^T`) from
`eig.top_eigh` (checked Lanczos or subspace iteration built from matmuls where it pays, else `eigh`;
svdkd_jax/eig.py), then the other factor and `s` from one product with `M` (`s_i = ||M v_i||` or `||M^T u_i||`,
more accurate for small `s_i` than `sqrt(eigenvalue)`). Accuracy of the Gram route falls with the squared condition number, so only the top
triplets are accurate when the trailing spectrum is tiny; tests/test_svd.py checks the top-k against NumPy.

Sign convention: the largest-magnitude entry of each `v_i` is positive (on an exact tie between `+a` and `-a` the
vector is left as computed) and `u_i` is flipped with it, so outputs are a deterministic function of `M` and the
gradients below are those of the sign-fixed vectors.

Backward (`jax.custom_vjp`; derivations and the evidence for "released_code" in docs/svd_gradient.md):
  "kept_triplets"  the poster's rearranged gradient on the k kept triplets, `K_ij = 1/(s_i^2 - s_j^2)`,
                   `K_ii = 0`, `sym(A) = (A + A^T)/2`; branch HW <= D (as the poster writes it; the released code
                   switches at HW < D): `U E^T - U (E^T V)_diag V^T - 2 U sym(K o (S V^T E)) S V^T`, `E = dV S^-1`;
                   branch HW > D: `2 U S sym(K^T o (V^T dV)) V^T`. Equal to "exact" when k = r; truncated, it
                   drops the coupling between kept and discarded vectors. The released code keeps min(5, r)
                   triplets instead.
  "exact"          the true gradient of the returned (u, s, v), including the coupling with the discarded triplets
                   (from the kept pairs alone: the resolvent on their complement, by conjugate gradients) and,
                   when HW < D, the null-space term through `v = M^T u / s`.
  "released_code"  what the authors' TF code effectively computes (its K is zeroed by its NaN guard): zero when
                   HW >= D; when HW < D, the gradient of `v_i = normalize(M^T stop_gradient(u_i))`.
In "kept_triplets" and "released_code" the cotangent of `u` is ignored (KD-SVD never uses `u`); `s` gets its exact
gradient `u_i v_i^T` in every mode.

CPU threads: jaxlib's CPU `eigh`, QR and Cholesky call the LAPACK of SciPy's OpenBLAS, which by default starts its
own threads for the blocked steps of `syevd` (Gram matrices of size > 25). Inside an XLA program that already keeps
both cores busy, and worse on a shared machine, those threads spin against XLA's: 128 eighs of 32x32 took 8 ms
single-threaded but 14 ms to 2 s threaded, and the width-0.25 KD-SVD train step ran 3x slower. So the first trace of
`truncated_svd` limits SciPy's OpenBLAS to one thread (`_sequential_lapack`; numpy's own BLAS, when it is a separate
library, is left alone).

Guards (never NaN/inf): with `eps = 32 * finfo(dtype).eps` (3.8e-6 in float32, 7.1e-15 in float64),
`1/(s_i^2 - s_j^2)` is set to 0 where `|s_i^2 - s_j^2| <= eps * s_1^2`, `1/s_i` is set to 0 where
`s_i <= eps * s_1`, the derived factor (`u_i` if HW >= D, else `v_i`) is returned as 0 where `s_i <= eps * s_1`,
and a sample whose gradient is still non-finite gets a zero gradient (as SSKD's `crop_removenan`; checked on the
low-rank factors of the gradient, which are formed before the one `[HW, D]` product).
"""

import functools
import operator
import os

import jax
import jax.numpy as jnp
import threadpoolctl

from svdkd_jax import eig

GRAD_MODES = ("kept_triplets", "exact", "released_code")

# Gram products must not drop to bfloat16 passes on TPU: the small singular values live in the low bits.
_einsum = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)


def truncated_svd(
    x: jax.Array, k: int, *, grad_mode: str = "exact", solver: str = "auto"
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Top-k singular triplets of `x` with a custom gradient.

  Args:
    x: `[..., HW, D]` matrices (leading batch dims allowed); bfloat16/float16/integer inputs are upcast to float32.
    k: number of triplets, `1 <= k <= min(HW, D)` (static).
    grad_mode: one of `GRAD_MODES`, see the module docstring.
    solver: the Gram matrix's top-k eigensolver, one of `eig.SOLVERS` ("auto": Lanczos or subspace iteration where
      it pays, else `eigh`; see svdkd_jax/eig.py).

  Returns:
    `(u, s, v)`: `u [..., HW, k]`, `s [..., k]` descending, `v [..., D, k]` with `v[..., :, i]` the i-th right
    singular vector; sign convention and zero guards as in the module docstring.
  """
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise ValueError(f"truncated_svd expects x of shape [..., HW, D] (rank >= 2), got shape {x.shape}.")
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    raise ValueError(f"truncated_svd supports real inputs only, got dtype {x.dtype}.")
  if grad_mode not in GRAD_MODES:
    raise ValueError(f"Unknown grad_mode {grad_mode!r}; valid choices are {GRAD_MODES}.")
  try:
    k = operator.index(k)
  except TypeError:
    raise ValueError(f"k must be a Python int, got {k!r}.") from None
  hw, d = x.shape[-2:]
  if not 1 <= k <= min(hw, d):
    raise ValueError(
        f"k must satisfy 1 <= k <= min(HW, D) = {min(hw, d)} for x of shape {x.shape} (HW={hw}, D={d}); got k={k}."
    )
  eig.resolve(solver, min(hw, d), k)  # a ValueError naming the valid solvers
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  return _truncated_svd(x.astype(dtype), k, grad_mode, solver)


def align(
    student_v: jax.Array, teacher_v: jax.Array, teacher_s: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """KD-SVD post-processing: match student vectors to teacher vectors (docs/method.md section 3).

  For each teacher vector the student candidate with the largest |cosine| is gathered (gradient flows through the
  gather; two teacher vectors may pick the same candidate), both are weighted by the teacher's `s_i / ||s||`
  (no gradient), and the teacher vector is flipped where the pair's inner product is negative, as SSKD does.

  Args:
    student_v: `[..., D, c]` unit student candidates (c = k + 1 in KD-SVD).
    teacher_v: `[..., D, k]` unit teacher vectors.
    teacher_s: `[..., k]` teacher singular values.

  Returns:
    `(student_feats, teacher_feats)`, both `[..., D, k]`.
  """
  student_v, teacher_v, teacher_s = map(jnp.asarray, (student_v, teacher_v, teacher_s))
  if student_v.ndim < 2 or teacher_v.ndim != student_v.ndim or teacher_s.ndim != teacher_v.ndim - 1:
    raise ValueError(
        "align expects student_v [..., D, c], teacher_v [..., D, k] and teacher_s [..., k] with the same leading "
        f"dims; got shapes {student_v.shape}, {teacher_v.shape}, {teacher_s.shape}."
    )
  if student_v.shape[-2] != teacher_v.shape[-2]:
    raise ValueError(
        f"align needs equal channel counts D for student and teacher (the cosine is v_S^T v_T); got "
        f"{student_v.shape[-2]} and {teacher_v.shape[-2]}. Tap layers with matching widths."
    )
  if teacher_s.shape != teacher_v.shape[:-2] + teacher_v.shape[-1:]:
    raise ValueError(f"teacher_s must have shape {teacher_v.shape[:-2] + teacher_v.shape[-1:]}, got {teacher_s.shape}.")
  if student_v.shape[:-2] != teacher_v.shape[:-2]:
    raise ValueError(f"Leading dims differ: student_v {student_v.shape}, teacher_v {teacher_v.shape}.")

  cos = _einsum("...dc,...dk->...ck", student_v, teacher_v)  # [..., c, k]
  pick = jnp.argmax(jnp.abs(jax.lax.stop_gradient(cos)), axis=-2)  # [..., k]
  student = jnp.take_along_axis(student_v, pick[..., None, :], axis=-1)  # [..., D, k]
  norm = jnp.linalg.norm(teacher_s, axis=-1, keepdims=True)
  w = jax.lax.stop_gradient(teacher_s / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny))[..., None, :]
  student, teacher = student * w, teacher_v * w
  inner = jax.lax.stop_gradient(jnp.sum(student * teacher, axis=-2, keepdims=True))
  return student, jnp.where(inner < 0, -teacher, teacher)


# ------------------------------------------------------------------------------------------------------------------
# Forward.


def _eps(dtype) -> float:
  return 32 * float(jnp.finfo(dtype).eps)


@functools.cache
def _sequential_lapack() -> None:
  """Limits the BLAS behind jaxlib's CPU LAPACK kernels (SciPy's) to one thread; see the module docstring."""
  import scipy.linalg  # noqa: F401  (loads the library jaxlib's LAPACK kernels call, so it can be limited)

  scipy_dir = os.path.dirname(os.path.dirname(scipy.linalg.__file__))  # .../scipy (wheels: also .../scipy.libs)
  blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
  own = [c.filepath for c in blas.lib_controllers if c.filepath.startswith(scipy_dir)]
  # A BLAS shared with numpy (e.g. conda) is limited too: it is the one jaxlib calls.
  (blas.select(filepath=own) if own else blas).limit(limits=1)


def _gram(x: jax.Array) -> jax.Array:
  """The smaller Gram matrix: `M^T M [D, D]` if HW >= D, else `M M^T [HW, HW]`."""
  if x.shape[-2] >= x.shape[-1]:
    return _einsum("...mi,...mj->...ij", x, x)
  return _einsum("...im,...jm->...ij", x, x)


def _forward(x: jax.Array, k: int, solver: str):
  """Top k of `x / c` (sign-fixed), `c = max|x|` per matrix, with the Gram matrix and its top k eigenvalues.

  Scaling keeps the Gram matrix clear of float32 overflow/underflow (`|x| ~ 1e-30` squares to 0); it changes
  nothing else since `svd(x) = c * svd(x / c)`. Returns `((u, s / c, v), (g, lam, spectrum), xs, c)`, `spectrum`
  as `eig.top_eigh(..., every_pair=True)` gives it (every eigenpair where the batch took a full `eigh`).
  """
  _sequential_lapack()
  c = jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True)
  c = jnp.where(c > 0, c, 1)
  xs = x / c
  g = _gram(xs)
  lam, base, spectrum = eig.top_eigh(g, k, solver, every_pair=True)  # base: v if tall else u
  tall = x.shape[-2] >= x.shape[-1]
  # The other factor is formed transposed, [..., k, HW] or [..., k, D]: its reductions then run along the minor
  # axis (with k minor, XLA's CPU loops over a stride of k).
  y = _einsum("...mn,...nk->...km", xs, base) if tall else _einsum("...mn,...mk->...kn", xs, base)
  s = jnp.linalg.norm(y, axis=-1)  # [..., k]
  s = jax.lax.cummin(s, axis=s.ndim - 1)  # norms of near-equal values may be 1 ulp out of order
  ok = s > _eps(x.dtype) * s[..., :1]
  other = jnp.where(ok[..., None], y / jnp.where(ok, s, 1)[..., None], 0)
  v = jnp.swapaxes(base, -1, -2) if tall else other  # [..., k, D]
  # The largest-magnitude entry of each v is made positive (on a tie between +a and -a, v is kept as is).
  neg = -jnp.min(v, axis=-1) > jnp.max(v, axis=-1)
  sign = jnp.where(neg, -1, 1).astype(x.dtype)[..., None, :]
  other = jnp.swapaxes(other, -1, -2) * sign
  u, v = (other, base * sign) if tall else (base * sign, other)
  return (u, s, v), (g, lam, spectrum), xs, c[..., 0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _truncated_svd(x, k, grad_mode, solver):
  (u, s, v), _, _, c = _forward(x, k, solver)
  return u, s * c, v


def _fwd(x, k, grad_mode, solver):
  (u, s, v), (g, lam, spectrum), xs, c = _forward(x, k, solver)
  # Only "exact" needs xs, G and the eigenpairs (every pair, where the batch took a full eigh).
  full = (xs, g, lam, spectrum) if grad_mode == "exact" else (None,) * 4
  return (u, s * c, v), (u, s, v, c) + full


# ------------------------------------------------------------------------------------------------------------------
# Backward. Shapes: x [m, n] = [HW, D], kept u [m, k], s [k], v [n, k]; all products are O(HW * D * k) except the
# [r, r] x [r, k] product with the full eigenvectors in "exact".


def _inv_gap(lam_rows: jax.Array, lam_cols: jax.Array, lam_max: jax.Array, eps: float) -> jax.Array:
  """`F_ij = 1 / (lam_cols_j - lam_rows_i)`, 0 where the gap is <= eps * lam_max (incl. i == j)."""
  gap = lam_cols[..., None, :] - lam_rows[..., :, None]
  ok = jnp.abs(gap) > eps * lam_max[..., None, None]
  return jnp.where(ok, 1 / jnp.where(ok, gap, 1), 0)


def _sym(a: jax.Array) -> jax.Array:
  return (a + jnp.swapaxes(a, -1, -2)) / 2


def _cat(*arrays: jax.Array) -> jax.Array:
  return jnp.concatenate(arrays, axis=-1)


# Each gradient is returned as low-rank factors (left [..., m, K], right [..., n, K]) with dx = left @ right^T, so
# the guards act on small arrays and the [m, n] gradient is formed by one product.


def _complement_resolvent(g, base, lam, rhs, eps):
  """`y_j = (lam_j I - G)^+ P rhs_j` on the complement of the kept eigenvectors (P its projector), per kept j.

  This is the discarded eigenpairs' part of `W (F o W^T rhs)` without them. `lam_j I - G_perp` (G without the kept
  pairs) is positive definite: on the complement lam_j is above every discarded eigenvalue. Conjugate gradients solve
  every system of the batch at once from matmuls alone (`jax.scipy.sparse.linalg.cg`, vmapped), to a relative
  residual of `CG_TOLERANCE` unit roundoffs: as accurate as a Cholesky solve, in a few steps where the discarded
  spectrum is far below lam_j, as real taps'. Each solution's backward error is then checked (`_solved`); a batch
  with a system that fails (a gap too small for `CG_MAX_STEPS` steps) takes shifted Cholesky solves instead. Kept
  pairs with `lam_j <= eps * lam_1` get 0, as the gap guard gives them.
  """
  keep = (lam > eps * lam[..., :1])[..., None, :]
  g_perp, b = _complement_system(g, base, lam, rhs)
  b = jnp.where(keep, b, 0)  # a system with b = 0 takes no CG step
  y = _cg_solve(g_perp, lam, b)
  y = jax.lax.cond(jnp.all(_solved(g_perp, lam, b, y)), lambda: y, lambda: _cholesky_solve(g_perp, lam, b))
  return jnp.where(keep, _complement_projection(base, y), 0)


def _complement_projection(base: jax.Array, a: jax.Array) -> jax.Array:
  """`(I - W_k W_k^T) a`: `base [..., r, k]` (W_k), `a [..., r, c]`."""
  return a - _einsum("...rk,...kj->...rj", base, _einsum("...rk,...rj->...kj", base, a))


def _complement_system(g: jax.Array, base: jax.Array, lam: jax.Array,
                       rhs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The resolvent's systems `(lam_j I - G_perp) y_j = P rhs_j`: `(G_perp [..., r, r], P rhs [..., r, k])`, with
  `G_perp = G - W_k diag(lam) W_k^T` (`base [..., r, k]` = W_k, `lam [..., k]`)."""
  g_perp = g - _einsum("...ik,...k,...jk->...ij", base, lam, base)
  return g_perp, _complement_projection(base, rhs)


CG_TOLERANCE = 8  # unit roundoffs of relative residual: CG then matches a Cholesky solve's accuracy
CG_MAX_STEPS = 16  # every real tap measured is solved within 12 (experiments/results/tap_spectra.json)


def _cg_solve(g_perp: jax.Array, lam: jax.Array, b: jax.Array, max_steps: int | None = None) -> jax.Array:
  """`(lam_j I - G_perp)^-1 b_j` by conjugate gradients, each `[r]` system on its own (vmapped over the batch
  dimensions and the k kept pairs): `g_perp [..., r, r]`, `lam [..., k]`, `b [..., r, k]` -> `[..., r, k]`; at most
  `max_steps` steps (default `CG_MAX_STEPS`)."""
  tol = CG_TOLERANCE * float(jnp.finfo(g_perp.dtype).eps)
  max_steps = CG_MAX_STEPS if max_steps is None else max_steps

  def one(g_perp, lam_j, b_j):
    matvec = lambda y: lam_j * y - jnp.dot(g_perp, y, precision=jax.lax.Precision.HIGHEST)
    return jax.scipy.sparse.linalg.cg(matvec, b_j, tol=tol, maxiter=max_steps)[0]

  solve = jax.vmap(one, in_axes=(None, 0, 1), out_axes=1)  # over the kept pairs
  for _ in range(b.ndim - 2):
    solve = jax.vmap(solve)
  return solve(g_perp, lam, b)


def _solved(g_perp: jax.Array, lam: jax.Array, b: jax.Array, y: jax.Array) -> jax.Array:
  """Whether each `y_j` solves `(lam_j I - G_perp) y_j = b_j` to a normwise backward error within `eig.tolerance`
  (what a Cholesky solve guarantees; `lam_j` bounds the matrix's norm): `[..., k]` booleans, shapes as `_cg_solve`."""
  residual = lam[..., None, :] * y - _einsum("...rs,...sk->...rk", g_perp, y) - b
  scale = lam * jnp.linalg.norm(y, axis=-2) + jnp.linalg.norm(b, axis=-2)
  return jnp.linalg.norm(residual, axis=-2) <= eig.tolerance(g_perp.dtype) * scale


def _cholesky_solve(g_perp, lam, b):
  """`(lam_j I - G_perp)^-1 b_j` by one Cholesky factorisation per kept j (one LAPACK call per matrix on a CPU),
  shifted by `delta = 4 r eps(dtype) lam_1` so that rounding cannot make it indefinite, then refined once (error
  O((delta / gap)^2)). Shapes as `_cg_solve`."""
  r = g_perp.shape[-1]
  delta = 4 * r * float(jnp.finfo(g_perp.dtype).eps) * lam[..., :1]
  shifts = (lam + delta)[..., :, None, None] * jnp.eye(r, dtype=g_perp.dtype)  # [..., k, r, r]
  # LAPACK reads one triangle: the matrix is symmetric by construction, so it is not symmetrised first (a pass).
  factor = jax.lax.linalg.cholesky(shifts - g_perp[..., None, :, :], symmetrize_input=False)
  solve = lambda c: jax.scipy.linalg.cho_solve((factor, True), c[..., None])[..., 0]
  y = solve(jnp.swapaxes(b, -1, -2))  # [..., k, r]
  y = y + delta[..., None] * solve(y)
  return jnp.swapaxes(y, -1, -2)


def _grad_exact(x, g, spectrum, u, s, v, lam, du, ds, dv, inv_s, eps, known: bool):
  """True gradient: chain rule through the top eigenpairs of the Gram matrix and the product that derives the
  other factor (docs/svd_gradient.md sections 4 and 8), from every eigenpair where the forward took a full `eigh`
  (`spectrum`; `known`: on every backend, whatever the batch) or from the kept pairs."""
  tall = x.shape[-2] >= x.shape[-1]
  lam = jnp.maximum(lam, 0)
  if tall:  # G = M^T M with v its top eigenvectors; u = M v / s.
    base = v
    dbase = dv + _einsum("...mn,...mk->...nk", x, du) * inv_s[..., None, :]
    ds = ds - jnp.sum(du * u, axis=-2) * inv_s
  else:  # G = M M^T with u its top eigenvectors; v = M^T u / s.
    base = u
    dbase = du + _einsum("...mn,...nk->...mk", x, dv) * inv_s[..., None, :]
    ds = ds - jnp.sum(dv * v, axis=-2) * inv_s
  # P = W (F o W^T dbase) over all eigenpairs, F_ij = 1/(lam_j - lam_i): directly when every pair is known, else
  # the kept block explicitly and the rest by the resolvent on the kept vectors' complement.
  def every_pair():
    lam_all, w_all, _ = spectrum
    f = _inv_gap(lam_all, lam, lam[..., 0], eps)  # [r, k]
    return _einsum("...ri,...ik->...rk", w_all, f * _einsum("...ri,...rk->...ik", w_all, dbase))

  def kept_pairs():
    f = _inv_gap(lam, lam, lam[..., 0], eps)  # [k, k]
    p = _einsum("...ri,...ik->...rk", base, f * _einsum("...ri,...rk->...ik", base, dbase))
    return p + _complement_resolvent(g, base, lam, dbase, eps)

  p = every_pair() if known else jax.lax.cond(spectrum[2], every_pair, kept_pairs)
  us_dlam = u * (ds * inv_s * s)[..., None, :]  # U diag(2 s dlam), since s = sqrt(lam)
  # Direct term of u = M v / s (or v = M^T u / s), plus M (dG + dG^T) (or (dG + dG^T) M) with
  # dG = P base^T + base diag(dlam) base^T.
  if tall:
    left = du * inv_s[..., None, :] + _einsum("...mn,...nk->...mk", x, p) + us_dlam
    return _cat(left, u * s[..., None, :]), _cat(v, p)
  right = dv * inv_s[..., None, :] + _einsum("...mn,...mk->...nk", x, p)
  return _cat(u, p * s[..., None, :] + us_dlam), _cat(right, v)


def _grad_paper(u, s, v, ds, dv, inv_s, eps, left: bool):
  """The poster's rearranged gradient restricted to the k kept triplets (module docstring)."""
  lam = s * s
  kt = _inv_gap(lam, lam, lam[..., 0], eps)  # kt_ij = 1/(s_j^2 - s_i^2) = K_ji
  if left:  # HW <= D: U E^T - U (E^T V)_diag V^T - 2 U sym(K o (S V^T E)) S V^T
    e = dv * inv_s[..., None, :]  # [n, k]
    vte = _einsum("...nk,...nj->...kj", v, e)  # V^T E [k, k]
    inner = _sym(jnp.swapaxes(kt, -1, -2) * (s[..., :, None] * vte))
    t = _einsum("...mk,...kj->...mj", u, inner) * s[..., None, :]  # U sym(.) S
    diag = jnp.diagonal(vte, axis1=-2, axis2=-1)
    return _cat(u, u * (ds - diag)[..., None, :] - 2 * t), _cat(e, v)
  # HW > D: 2 U S sym(K^T o (V^T dV)) V^T
  inner = _sym(kt * _einsum("...nk,...nj->...kj", v, dv))
  return 2 * _einsum("...mk,...kj->...mj", u * s[..., None, :], inner) + u * ds[..., None, :], v


def _bwd(k, grad_mode, solver, res, cts):
  # Work on xs = x / c (c held constant: u, v are scale invariant and s is 1-homogeneous), then dx = dxs / c.
  u, s, v, c, x, g, lam, spectrum = res
  du, ds, dv = cts
  ds = ds * c
  eps = _eps(s.dtype)
  ok = s > eps * s[..., :1]
  inv_s = jnp.where(ok, 1 / jnp.where(ok, s, 1), 0)
  hw, d = u.shape[-2], v.shape[-2]
  if grad_mode == "exact":
    known = eig.eigh_everywhere(solver, g.shape[-1], k)
    left, right = _grad_exact(x, g, spectrum, u, s, v, lam, du, ds, dv, inv_s, eps, known)
  elif grad_mode == "kept_triplets":
    left, right = _grad_paper(u, s, v, ds, dv, inv_s, eps, left=hw <= d)
  elif hw < d:  # "released_code": gradient of normalize(M^T stop_gradient(u)).
    dv_perp = dv - v * jnp.sum(dv * v, axis=-2, keepdims=True)
    left, right = _cat(u, u * ds[..., None, :]), _cat(dv_perp * inv_s[..., None, :], v)
  else:  # "released_code", HW >= D: only the exact term of s.
    left, right = u * ds[..., None, :], v
  right = right / c[..., None]
  finite = (jnp.all(jnp.isfinite(left), axis=(-2, -1), keepdims=True)
            & jnp.all(jnp.isfinite(right), axis=(-2, -1), keepdims=True))
  left, right = jnp.where(finite, left, 0), jnp.where(finite, right, 0)
  return (_einsum("...mk,...nk->...mn", left, right),)


_truncated_svd.defvjp(_fwd, _bwd)
