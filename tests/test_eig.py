"""Tests for svdkd_jax.eig (the Gram matrices' top-p eigensolver) and for the SVD gradients built on its kept pairs.

References are independent: NumPy's float64 `eigh`, and JAX's own differentiation of a full `eigh` (the gradient
the kept-pairs backward must reproduce).
"""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svdkd_jax import eig
from svdkd_jax import svd

ROOT = pathlib.Path(__file__).resolve().parents[1]


def gram_with_spectrum(rng, lam: np.ndarray, batch: int = 4) -> np.ndarray:
  """Symmetric PSD matrices `[batch, r, r]` with eigenvalues `lam` (any order) in random orthonormal bases."""
  r = lam.shape[-1]
  q, _ = np.linalg.qr(rng.standard_normal((batch, r, r)))
  return np.einsum("bij,j,bkj->bik", q, lam, q)


def check_pairs(g: np.ndarray, lam: jax.Array, w: jax.Array, p: int, *, resolvable: int | None = None) -> None:
  """Eigenvalues against NumPy (relative to lam_1), residuals, orthonormality; eigenvectors of the first
  `resolvable` pairs (those separated from their neighbours) against NumPy's up to sign."""
  ref_lam, ref_w = np.linalg.eigh(g.astype(np.float64))
  ref_lam, ref_w = ref_lam[..., ::-1][..., :p], ref_w[..., ::-1][..., :p]
  lam, w = np.asarray(lam, np.float64), np.asarray(w, np.float64)
  eps = float(jnp.finfo(jnp.asarray(g).dtype).eps)
  scale = np.maximum(ref_lam[..., :1], 1e-300)
  assert np.all(np.abs(lam - ref_lam) <= 64 * eps * g.shape[-1] * scale), np.max(np.abs(lam - ref_lam) / scale)
  residual = np.linalg.norm(np.einsum("...ij,...jp->...ip", g, w) - w * lam[..., None, :], axis=-2)
  assert np.all(residual <= 2 * eig.tolerance(g.dtype) * scale + 1e-300)
  gram = np.einsum("...ip,...iq->...pq", w, w)
  np.testing.assert_allclose(gram, np.broadcast_to(np.eye(p), gram.shape), atol=32 * eps * g.shape[-1])
  if resolvable:
    cos = np.abs(np.einsum("...ip,...ip->...p", w[..., :resolvable], ref_w[..., :resolvable]))
    assert np.all(cos >= 1 - 1e3 * eps), cos.min()


@pytest.mark.parametrize("dtype", [np.float32, pytest.param(np.float64, marks=pytest.mark.slow)])
def test_subspace_matches_numpy_on_decaying_spectra(dtype):
  rng = np.random.default_rng(0)
  lam = 0.7 ** np.arange(64)
  g = gram_with_spectrum(rng, lam).astype(dtype)
  with jax.enable_x64(dtype == np.float64):
    for p in (1, 2, 5):
      out = jax.jit(eig.subspace_eigh, static_argnums=1)(g, p)
      assert out[0].dtype == dtype
      check_pairs(g, *out, p, resolvable=p)
      # No fallback involved: float32 passes its check after one round, float64's 1e-14 bound takes more.
      converged = eig.subspace_rounds(jnp.asarray(g), p, 1 if dtype == np.float32 else eig.MAX_ROUNDS)[2]
      assert bool(jnp.all(converged))


@pytest.mark.parametrize("case", ["tie_at_p", "tiny_gap_at_p", "tie_in_kept", "rank_deficient", "all_zero",
                                  "dynamic_range_1e6"])
@pytest.mark.parametrize("solver,r", [("subspace", 48), ("eigh", 48), ("lanczos", 48), ("auto", 16), ("auto", 24)])
def test_hard_spectra(case, solver, r):
  """Ties and tiny gaps at the truncation (k+1 vs k+2), ties inside the kept pairs, rank-deficient and all-zero
  matrices, and singular values spanning 1e6 (eigenvalues 1e12): pairs stay exact where they are determined.
  "auto" gives r = 16 and 24 to Lanczos on a CPU: with J = r and with J < r steps."""
  rng = np.random.default_rng(1)
  p = 2
  base = 0.6 ** np.arange(r)
  lam, resolvable = base.copy(), p
  if case == "tie_at_p":
    lam[2] = lam[1]
    resolvable = 1
  elif case == "tiny_gap_at_p":
    lam[2] = lam[1] * (1 - 1e-5)
    resolvable = 1
  elif case == "tie_in_kept":
    lam[1] = lam[0]
    resolvable = 0
  elif case == "rank_deficient":
    lam[3:] = 0
  elif case == "all_zero":
    lam[:] = 0
    resolvable = 0
  elif case == "dynamic_range_1e6":
    lam = np.logspace(0, -12, r)  # singular values from 1 to 1e-6
  g = gram_with_spectrum(rng, lam).astype(np.float32)
  out = jax.jit(eig.top_eigh, static_argnums=(1, 2))(g, p, solver)
  assert all(bool(jnp.all(jnp.isfinite(a))) for a in out)
  check_pairs(g, *out, p, resolvable=resolvable)


@pytest.mark.parametrize("r,p", [(24, 2), (32, 2), (32, 3), (64, 2)])
def test_small_and_tap_sized_matrices_match_numpy(r, p):
  """The sizes of the taps at widths 0.25 to 1 (Gram matrices of 17 to 64), p = k + 1 for k = 1 and 2, on a batch
  of 128 with the real taps' decay: every matrix passes Lanczos's check (the CPU's choice) and one round of
  subspace iteration (the accelerators'), with no fallback, and the pairs are NumPy's."""
  rng = np.random.default_rng(10)
  g = gram_with_spectrum(rng, np.arange(1, r + 1) ** -1.54 * (1 + 0.1 * rng.random(r)), batch=128)
  g = g.astype(np.float32)
  assert eig.resolve("auto", r, p, "cpu") == "lanczos"
  assert bool(jnp.all(eig.subspace_rounds(jnp.asarray(g), p, 1)[2]))
  assert bool(jnp.all(eig.lanczos_pairs(jnp.asarray(g), p)[2]))
  check_pairs(g, *jax.jit(eig.top_eigh, static_argnums=1)(g, p), p, resolvable=p)


@pytest.mark.parametrize("r", [16, 24, 64])
def test_one_pair_by_power_iteration(r):
  """p = 1 on a CPU (the teacher's pair at k = 1) is power iteration: on the real taps' separation (lam_2 / lam_1
  <= 0.1) every matrix of a batch passes within POWER_STEPS with NumPy's pair; a flat batch takes `eigh`'s pairs
  exactly (every pair kept), a single flat matrix alone; zero matrices give eigenvalue 0."""
  assert eig.resolve("auto", r, 1, "cpu") == "power" and eig.resolve("auto", 8, 1, "cpu") == "eigh"
  assert eig.resolve("auto", r, 1, "cuda") == ("subspace" if r > 32 else "eigh")
  rng = np.random.default_rng(11)
  lam = np.concatenate([[1.0], 0.1 * np.arange(1, r) ** -1.54])
  g = gram_with_spectrum(rng, lam * (1 + 0.01 * rng.random(r)), batch=128).astype(np.float32)
  out = jax.jit(eig._power, static_argnums=1)(jnp.asarray(g), 1)
  assert not bool(out[4])  # no fallback: every matrix passed
  check_pairs(g, out[0], out[1], 1, resolvable=1)
  check_pairs(g, *jax.jit(eig.top_eigh, static_argnums=1)(g, 1), 1, resolvable=1)

  flat = gram_with_spectrum(rng, 1 - 0.001 * np.arange(r), batch=16).astype(np.float32)
  lam_f, w_f, lam_all, _, known = jax.jit(eig._power, static_argnums=1)(jnp.asarray(flat), 1)
  ref = eig.full_eigh(jnp.asarray(flat), r)
  assert bool(known)
  np.testing.assert_array_equal(np.asarray(lam_f), np.asarray(ref[0][..., :1]))
  np.testing.assert_array_equal(np.asarray(w_f), np.asarray(ref[1][..., :1]))
  np.testing.assert_array_equal(np.asarray(lam_all), np.asarray(ref[0]))

  mixed = np.concatenate([g[:7], flat[:1], g[8:16]])
  lam_m, w_m, _, _, known = jax.jit(eig._power, static_argnums=1)(jnp.asarray(mixed), 1)
  assert not bool(known)
  ref = eig.full_eigh(jnp.asarray(mixed), 1)
  np.testing.assert_array_equal(np.asarray(w_m[7]), np.asarray(ref[1][7]))
  assert not np.array_equal(np.asarray(w_m), np.asarray(ref[1]))  # the others are power iteration's
  check_pairs(mixed, lam_m, w_m, 1, resolvable=1)

  lam_z, w_z = jax.jit(eig.top_eigh, static_argnums=1)(jnp.zeros((4, r, r)), 1)
  assert np.all(np.asarray(lam_z) == 0) and bool(jnp.all(jnp.isfinite(w_z)))


def test_few_failing_matrices_take_eigh_alone():
  """A batch where one matrix has a flat spectrum (lam_{p+EXTRA+1} / lam_p near 1): that matrix gets `eigh`'s pairs
  exactly, the others keep the subspace pairs (which still match NumPy)."""
  rng = np.random.default_rng(2)
  flat = gram_with_spectrum(rng, 1 - 0.001 * np.arange(40), batch=1)
  easy = gram_with_spectrum(rng, 0.5 ** np.arange(40), batch=15)
  g = np.concatenate([easy[:7], flat, easy[7:]]).astype(np.float32)
  converged = eig.subspace_rounds(jnp.asarray(g), 2, eig.MAX_ROUNDS)[2]
  assert np.flatnonzero(~np.asarray(converged)).tolist() == [7]
  lam, w = jax.jit(lambda g: eig.subspace_eigh(g, 2))(g)
  ref = eig.full_eigh(jnp.asarray(g), 2)
  np.testing.assert_array_equal(np.asarray(lam[7]), np.asarray(ref[0][7]))
  np.testing.assert_array_equal(np.asarray(w[7]), np.asarray(ref[1][7]))
  assert not np.array_equal(np.asarray(w), np.asarray(ref[1]))  # the others are the subspace solver's
  check_pairs(g, lam, w, 2, resolvable=1)


@pytest.mark.parametrize("r", [24, 64])
def test_a_flat_batch_takes_eigh_after_the_probe(r):
  """ReLU noise (a flat bulk after the first pair): the probe finds more than a few matrices too flat to converge,
  and the batch gets `eigh`'s pairs exactly; a batch of decaying spectra does not."""
  rng = np.random.default_rng(3)
  x = np.maximum(rng.standard_normal((64, 4 * r, r)), 0).astype(np.float32)
  g = np.einsum("bmi,bmj->bij", x, x)
  q = eig._steps(jnp.asarray(g), jnp.broadcast_to(eig._start(r, 8, "float32"), (64, r, 8)), eig.PROBE)
  assert int(jnp.sum(eig._too_flat(q, jnp.asarray(g) @ q, 2))) > eig._few(64)
  lam, w = jax.jit(lambda g: eig.subspace_eigh(g, 2))(g)
  ref = eig.full_eigh(jnp.asarray(g), 2)
  np.testing.assert_array_equal(np.asarray(lam), np.asarray(ref[0]))
  np.testing.assert_array_equal(np.asarray(w), np.asarray(ref[1]))
  decaying = gram_with_spectrum(rng, 0.5 ** np.arange(r), batch=64).astype(np.float32)
  q = eig._steps(jnp.asarray(decaying), jnp.broadcast_to(eig._start(r, 8, "float32"), (64, r, 8)), eig.PROBE)
  assert int(jnp.sum(eig._too_flat(q, jnp.asarray(decaying) @ q, 2))) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tridiagonal_top_pairs_match_numpy(dtype):
  """Bisection and twisted factorisation against NumPy's float64 `eigh` of the dense tridiagonal: random ones, one
  split by a zero off-diagonal (two blocks), one with a repeated diagonal, and the zero matrix."""
  rng = np.random.default_rng(5)
  steps, p = 12, 3
  alpha = rng.standard_normal((6, steps)) + 4
  beta = rng.standard_normal((6, steps - 1))
  beta[1, 5] = 0
  alpha[2] = 1.0
  alpha[3], beta[3] = 0, 0
  dense = np.zeros((6, steps, steps))
  i = np.arange(steps)
  dense[:, i, i] = alpha
  dense[:, i[:-1], i[1:]] = dense[:, i[1:], i[:-1]] = beta
  ref_lam, ref_y = np.linalg.eigh(dense)
  ref_lam, ref_y = ref_lam[:, ::-1][:, :p], ref_y[:, :, ::-1][:, :, :p]
  with jax.enable_x64(dtype == np.float64):
    theta, y = jax.jit(eig._tridiagonal_top, static_argnums=2)(alpha.astype(dtype), beta.astype(dtype), p)
  eps = float(np.finfo(dtype).eps)
  theta, y = np.asarray(theta, np.float64), np.asarray(y, np.float64)
  np.testing.assert_allclose(theta, ref_lam, atol=16 * eps * np.max(np.abs(dense)))
  resolved = np.r_[0, 1, 2, 4, 5]  # row 3 is zero: every vector is an eigenvector
  cos = np.abs(np.einsum("bjp,bjp->bp", y[resolved], ref_y[resolved]))
  assert np.all(cos >= 1 - 1e3 * eps), cos.min()
  np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, atol=8 * eps)


@pytest.mark.parametrize("dtype", [np.float32, pytest.param(np.float64, marks=pytest.mark.slow)])
def test_lanczos_matches_numpy_on_decaying_spectra(dtype):
  rng = np.random.default_rng(0)
  g = gram_with_spectrum(rng, 0.7 ** np.arange(64)).astype(dtype)
  with jax.enable_x64(dtype == np.float64):
    for p in (1, 2, 5):
      out = jax.jit(eig.top_eigh, static_argnums=(1, 2))(g, p, "lanczos")
      assert out[0].dtype == dtype
      check_pairs(g, *out, p, resolvable=p)
      if dtype == np.float32:  # no fallback involved
        assert bool(jnp.all(eig.lanczos_pairs(jnp.asarray(g), p)[2]))


@pytest.mark.parametrize("r", [16, 24, 64])
def test_lanczos_on_flat_spectra(r):
  """ReLU noise (a flat bulk after the first pair): with J = r Krylov steps (r = 16) every matrix converges; with
  J < r more than a few fail the check and the batch gets `eigh`'s pairs exactly, and a single failing matrix among
  decaying ones takes `eigh` alone."""
  rng = np.random.default_rng(3)
  x = np.maximum(rng.standard_normal((64, 4 * r, r)), 0).astype(np.float32)
  g = jnp.asarray(np.einsum("bmi,bmj->bij", x, x))
  converged = eig.lanczos_pairs(g, 2)[2]
  lam, w, _, _, known = jax.jit(eig._lanczos, static_argnums=1)(g, 2)
  if r <= eig.lanczos_steps(r, 2):
    assert bool(jnp.all(converged)) and not bool(known)
    check_pairs(np.asarray(g), lam, w, 2, resolvable=1)
    return
  assert int(jnp.sum(~converged)) > eig._few(64) and bool(known)
  ref = eig.full_eigh(g, 2)
  np.testing.assert_array_equal(np.asarray(lam), np.asarray(ref[0]))
  np.testing.assert_array_equal(np.asarray(w), np.asarray(ref[1]))
  easy = gram_with_spectrum(rng, 0.5 ** np.arange(r), batch=15).astype(np.float32)
  bad = int(np.flatnonzero(~np.asarray(converged))[0])
  mixed = jnp.asarray(np.concatenate([easy[:7], np.asarray(g[bad:bad + 1]), easy[7:]]))
  assert np.flatnonzero(~np.asarray(eig.lanczos_pairs(mixed, 2)[2])).tolist() == [7]
  lam, w, _, _, known = jax.jit(eig._lanczos, static_argnums=1)(mixed, 2)
  ref = eig.full_eigh(mixed, 2)
  assert not bool(known)
  np.testing.assert_array_equal(np.asarray(w[7]), np.asarray(ref[1][7]))
  check_pairs(np.asarray(mixed), lam, w, 2, resolvable=1)


def test_orthonormalise_spans_ill_conditioned_and_zero_blocks():
  """CholeskyQR of the column-scaled block: orthonormal after two passes even with two nearly parallel columns
  and a 1e3 spread of column norms, the span kept; a zero block stays finite."""
  rng = np.random.default_rng(4)
  z = rng.standard_normal((8, 32, 6)) * np.logspace(0, -3, 6)
  z[..., 1] = z[..., 0] + 1e-4 * z[..., 1]
  z = jnp.asarray(z, jnp.float32)
  q = eig.orthonormalise(eig.orthonormalise(z))
  gram = np.einsum("bri,brj->bij", q, q)
  np.testing.assert_allclose(gram, np.broadcast_to(np.eye(6), gram.shape), atol=1e-5)
  # span: z's columns are reproduced by projecting onto q
  proj = np.einsum("bri,bim->brm", q, np.einsum("bri,brm->bim", q, z))
  np.testing.assert_allclose(proj, z, atol=1e-5 * float(jnp.max(jnp.abs(z))))
  assert bool(jnp.all(jnp.isfinite(eig.orthonormalise(jnp.zeros((2, 16, 4))))))


def test_auto_rule_and_errors():
  assert eig.resolve("auto", 64, 2, "cuda") == "subspace" and eig.resolve("auto", 32, 2, "cuda") == "eigh"
  assert eig.resolve("auto", 32, 2, "cpu") == "lanczos" and eig.resolve("auto", 9, 2, "cpu") == "lanczos"
  assert eig.resolve("auto", 8, 2) == "eigh" and eig.resolve("auto", 8, 1) == "eigh"
  assert eig.resolve("eigh", 64, 2) == "eigh" and eig.resolve("subspace", 16, 2) == "subspace"
  assert eig.eigh_everywhere("auto", 8, 2) and not eig.eigh_everywhere("auto", 16, 2)
  with pytest.raises(ValueError, match="valid: auto, eigh, subspace, lanczos"):
    eig.resolve("arnoldi", 64, 2)
  with pytest.raises(ValueError, match="solver"):
    svd.truncated_svd(jnp.ones((4, 3)), 1, solver="arnoldi")


def _cuda_calls(fn, *shapes) -> list[str]:
  exported = jax.export.export(jax.jit(fn), platforms=["cuda"])(*[jax.ShapeDtypeStruct(s, jnp.float32)
                                                                  for s in shapes])
  return [line for line in exported.mlir_module().splitlines() if "custom_call" in line]


def test_cuda_lowering_keeps_large_matrices_off_one_call_per_matrix_syevd():
  """Exported for CUDA from a CPU: the 64 x 64 fallback is the batched Jacobi kernel (algorithm = 2), every
  other syevd is at most 32 x 32 (jaxlib batches those), whatever the machine that traces it."""
  calls = _cuda_calls(lambda g: eig.top_eigh(g, 2), (128, 64, 64))
  syevd = [c for c in calls if "cusolver_syevd_ffi" in c]
  assert syevd and any("algorithm = 2" in c for c in syevd)
  for c in syevd:
    assert "algorithm = 2" in c or "tensor<128x8x8xf32>" in c, c  # the Rayleigh-Ritz block is m x m = 8 x 8
  calls = _cuda_calls(lambda g: eig.top_eigh(g, 2, "eigh"), (128, 64, 64))
  assert all("algorithm = 2" in c for c in calls if "cusolver_syevd_ffi" in c)


# ---------------------------------------------------------------------------------------------------------------
# Real taps: the committed regime teacher on bundled images.


@pytest.fixture(scope="module")
def real_taps():
  """The regime table's trained teacher (committed checkpoint) on 64 bundled digit images, upsampled to 32x32."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  from svdkd_jax import networks  # pylint: disable=g-import-not-at-top
  from svdkd_jax import parallel  # pylint: disable=g-import-not-at-top
  step_dir = ROOT / "experiments/results/regime_runs/regime_cifar10/teacher/seed0/checkpoints/3120"
  assert step_dir.is_dir(), f"{step_dir} is part of the repository"
  net = networks.restore(str(step_dir), "vgg_teacher", 0.25, 10, mesh=parallel.create_mesh())
  digits = datasets.load_digits().images[:64] / 16.0  # [64, 8, 8] in [0, 1]
  x = np.repeat(np.repeat(digits, 4, axis=1), 4, axis=2)[..., None].repeat(3, axis=-1)
  _, taps, _ = networks.apply(net, net.variables, jnp.asarray((x - 0.5) / 0.25, jnp.float32))
  return [np.asarray(t) for t in taps]


@pytest.mark.slow
def test_real_taps_converge_in_one_round_and_match_numpy(real_taps):
  """Nearly every real tap passes the residual check after one round of subspace iteration (the rest take more rounds
  or `eigh`), every one passes Lanczos's, and both solvers' pairs match NumPy's on all of them."""
  for tap in real_taps:
    b, h, w, d = tap.shape
    m = tap.reshape(b, h * w, d)
    g = np.einsum("bmi,bmj->bij", m, m) if h * w >= d else np.einsum("bim,bjm->bij", m, m)
    g = (g / np.max(np.abs(m), axis=(1, 2))[:, None, None] ** 2).astype(np.float32)
    if g.shape[-1] <= 2 + eig.EXTRA:
      continue  # 2x2x128: a 4 x 4 Gram matrix, always "eigh"
    for p in (1, 2):
      converged = eig.subspace_rounds(jnp.asarray(g), p, 1)[2]
      assert float(jnp.mean(converged)) >= 0.95, (tap.shape, p)
      check_pairs(g, *eig.subspace_eigh(jnp.asarray(g), p), p)
      assert bool(jnp.all(eig.lanczos_pairs(jnp.asarray(g), p)[2])), (tap.shape, p)  # Lanczos: no fallback
      check_pairs(g, *eig.top_eigh(jnp.asarray(g), p, "lanczos"), p)


# ---------------------------------------------------------------------------------------------------------------
# Gradients from the kept pairs against the gradient of a full eigh.


def eigh_reference(x: jax.Array, k: int):
  """truncated_svd's forward written with a full `jnp.linalg.eigh`, differentiated by JAX's own rules."""
  c = jax.lax.stop_gradient(jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True))
  xs = x / c
  tall = x.shape[-2] >= x.shape[-1]
  g = jnp.swapaxes(xs, -1, -2) @ xs if tall else xs @ jnp.swapaxes(xs, -1, -2)
  _, w = jnp.linalg.eigh(g)
  base = w[..., ::-1][..., :k]
  y = xs @ base if tall else jnp.swapaxes(xs, -1, -2) @ base
  s = jnp.linalg.norm(y, axis=-2)
  u, v = (y / s[..., None, :], base) if tall else (base, y / s[..., None, :])
  neg = -jnp.min(v, axis=-2, keepdims=True) > jnp.max(v, axis=-2, keepdims=True)
  sign = jax.lax.stop_gradient(jnp.where(neg, -1.0, 1.0))
  return u * sign, s * c[..., 0], v * sign


SHAPES = [(256, 64), (64, 128), (16, 256), (4, 512), (100, 40), (64, 32), (20, 48)]
FAST_SHAPES = [(100, 40), (20, 48)]  # a tall map on the subspace solver; a wide one whose 20 x 20 Gram matrix is too


@pytest.mark.parametrize("dtype,tol,mode,shapes", [
    (np.float64, 1e-10, "exact", FAST_SHAPES),
    *(pytest.param(dtype, tol, mode, SHAPES, marks=pytest.mark.slow)
      for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-4)) for mode in svd.GRAD_MODES)])
def test_kept_pairs_gradient_equals_the_eigh_based_one(dtype, tol, mode, shapes):
  """`exact` from the kept pairs (resolvent on their complement) equals the gradient through a full `eigh`; the
  truncated modes are the same whichever solver finds the pairs. 1e-10 in float64, 1e-4 (relative) in float32."""
  rng = np.random.default_rng(3)
  with jax.enable_x64(dtype == np.float64):
    for hw, d in shapes:
      x = np.maximum(rng.standard_normal((3, hw, 6)) @ rng.standard_normal((3, 6, d)), 0)
      x = (x + 0.05 * rng.standard_normal(x.shape)).astype(dtype)
      cts = [jnp.asarray(rng.standard_normal(a.shape), dtype) for a in eigh_reference(jnp.asarray(x), 2)]
      loss = lambda f: lambda x: sum(jnp.sum(a * c) for a, c in zip(f(x), cts))
      if mode == "exact":
        reference = jax.grad(loss(lambda x: eigh_reference(x, 2)))(jnp.asarray(x))
      else:
        reference = jax.grad(loss(lambda x: svd.truncated_svd(x, 2, grad_mode=mode, solver="eigh")))(jnp.asarray(x))
      for solver in eig.SOLVERS:
        ours = jax.grad(loss(lambda x: svd.truncated_svd(x, 2, grad_mode=mode, solver=solver)))(jnp.asarray(x))
        err = float(jnp.linalg.norm(ours - reference) / jnp.linalg.norm(reference))
        assert err <= tol, (hw, d, solver, err)


@pytest.mark.parametrize("case", [pytest.param("tie_at_p", marks=pytest.mark.slow),
                                  pytest.param("rank_deficient", marks=pytest.mark.slow), "all_zero"])
def test_exact_gradient_is_finite_on_degenerate_maps(case):
  rng = np.random.default_rng(4)
  a, b = rng.standard_normal((2, 64, 3)), rng.standard_normal((2, 3, 48))
  x = a @ b
  if case == "tie_at_p":  # singular values 2, 1, 1: the second and third tie
    x = np.zeros((2, 64, 48))
    x[:, 0, 0], x[:, 1, 1], x[:, 2, 2] = 2, 1, 1
  elif case == "all_zero":
    x = np.zeros((2, 64, 48))
  x = jnp.asarray(x, jnp.float32)
  for solver in eig.SOLVERS:
    grad = jax.grad(lambda x: jnp.sum(svd.truncated_svd(x, 2, solver=solver)[2] ** 3))(x)
    assert bool(jnp.all(jnp.isfinite(grad))), (case, solver)


@pytest.mark.parametrize("solver", [pytest.param("subspace", marks=pytest.mark.slow), "auto"])
def test_exact_gradient_of_a_flat_batch_comes_from_its_full_eigh(solver):
  """ReLU noise (flat after the first pair) sends the batch to `eigh` after the probe, which then reports every pair
  (`every_pair`); the exact backward forms the gradient from them: equal to a full `eigh` differentiated by JAX."""
  rng = np.random.default_rng(11)
  with jax.enable_x64(True):
    x = jnp.asarray(np.maximum(rng.standard_normal((16, 96, 24)), 0))  # 24 x 24 Gram matrices: subspace on a CPU
    g = jnp.swapaxes(x, -1, -2) @ x
    assert bool(eig.top_eigh(g, 2, solver, every_pair=True)[2][2])  # the batch took eigh: every pair known
    cts = [jnp.asarray(rng.standard_normal(a.shape)) for a in eigh_reference(x, 2)]
    loss = lambda f: lambda x: sum(jnp.sum(a * c) for a, c in zip(f(x), cts))
    reference = jax.grad(loss(lambda x: eigh_reference(x, 2)))(x)
    ours = jax.grad(loss(lambda x: svd.truncated_svd(x, 2, solver=solver)))(x)
    assert float(jnp.linalg.norm(ours - reference) / jnp.linalg.norm(reference)) <= 1e-10


@pytest.mark.parametrize("max_steps", [svd.CG_MAX_STEPS, 1])
def test_complement_resolvent_equals_the_sum_over_discarded_pairs(max_steps, monkeypatch):
  """The resolvent of the exact backward, `sum_{i > k} w_i w_i^T b_j / (lam_j - lam_i)` from NumPy's float64 `eigh`:
  by conjugate gradients (the default, whose true residual passes the check), and by the Cholesky fallback that a
  batch CG leaves unconverged takes (one CG step)."""
  monkeypatch.setattr(svd, "CG_MAX_STEPS", max_steps)
  rng = np.random.default_rng(12)
  r, k = 40, 2
  q = np.linalg.qr(rng.standard_normal((8, r, r)))[0]
  lam_all = np.arange(1, r + 1) ** -1.5 * rng.uniform(0.5, 2, (8, 1))  # taps' power-law decay
  g = np.einsum("bri,bi,bsi->brs", q, lam_all, q)
  rhs = rng.standard_normal((8, r, k))
  f = 1 / (lam_all[:, None, :k] - lam_all[:, k:, None])  # [B, r - k, k]
  reference = np.einsum("bri,bik->brk", q[..., k:], f * np.einsum("bri,brk->bik", q[..., k:], rhs))
  with jax.enable_x64(True):
    g, base, lam, rhs = map(jnp.asarray, (g, q[..., :k], lam_all[:, :k], rhs))
    ours = svd._complement_resolvent(g, base, lam, rhs, 1e-14)
    g_perp, b = svd._complement_system(g, base, lam, rhs)
    cg_converged = bool(jnp.all(svd._solved(g_perp, lam, b, svd._cg_solve(g_perp, lam, b))))
  assert cg_converged == (max_steps > 1)
  assert np.max(np.abs(np.asarray(ours) - reference)) <= 1e-10 * np.max(np.abs(reference))
