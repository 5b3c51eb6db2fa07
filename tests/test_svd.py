"""Tests for svdkd_jax.svd: forward against NumPy, gradients against finite differences and NumPy formulas."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svdkd_jax import svd

SHAPES = [(5, 7), (6, 6), (8, 5)]  # HW < D, HW = D, HW > D


def np_svd(x: np.ndarray, k: int):
  """Top-k (u, s, v) from numpy.linalg.svd with the module's sign convention (largest |v| entry positive)."""
  u, s, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
  u, s, v = u[..., :k], s[..., :k], np.swapaxes(vt, -1, -2)[..., :k]
  pivot = np.take_along_axis(v, np.argmax(np.abs(v), axis=-2)[..., None, :], axis=-2)
  sign = np.where(pivot < 0, -1.0, 1.0)
  return u * sign, s, v * sign


def np_kept_triplets_grad(x: np.ndarray, k: int, dv: np.ndarray) -> np.ndarray:
  """Transcription of the poster's rearranged gradient with K on the k kept triplets, sym(A) = (A + A^T)/2."""
  u, s, v = np_svd(x, k)
  kmat = 1 / (s[:, None] ** 2 - s[None, :] ** 2 + np.eye(k)) * (1 - np.eye(k))
  sym = lambda a: (a + a.T) / 2
  sigma = np.diag(s)
  if x.shape[0] <= x.shape[1]:
    e = dv @ np.linalg.inv(sigma)
    return (u @ e.T - u @ np.diag(np.diag(e.T @ v)) @ v.T
            - 2 * u @ sym(kmat * (sigma.T @ v.T @ e)) @ sigma.T @ v.T)
  return 2 * u @ sigma @ sym(kmat.T * (v.T @ dv)) @ v.T


def fd_grad(f, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
  """Central finite differences of f (scalar or vector valued) over every entry of x: [*x.shape, *f.shape]."""
  steps = (np.eye(x.size) * h).reshape((x.size,) + x.shape)
  f = jax.jit(jax.vmap(f))
  diff = np.asarray((f(x + steps) - f(x - steps)) / (2 * h))
  return diff.reshape(x.shape + diff.shape[1:])


@functools.partial(jax.jit, static_argnames=("k", "mode"))
def v_vjp(x: jax.Array, dv: jax.Array, k: int, mode: str) -> jax.Array:
  """Pull a cotangent of v back through truncated_svd: dv [..., D, k] -> [..., HW, D]."""
  return jax.vjp(lambda x: svd.truncated_svd(x, k, grad_mode=mode)[2], x)[1](dv)[0]


def rel_err(a, b) -> float:
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def relu_like(rng, shape, rank=6, noise=0.1):
  """Nonnegative, low-rank-ish matrices like post-ReLU feature maps."""
  *lead, m, n = shape
  a = rng.standard_normal((*lead, m, rank))
  b = rng.standard_normal((*lead, rank, n))
  return np.maximum(a @ b + noise * rng.standard_normal(shape), 0)


# ---------------------------------------------------------------------------------------------------------------
# Forward.


@pytest.mark.parametrize("kind", ["random", "relu"])
def test_forward_float32_matches_numpy_at_tapped_shapes(kind):
  rng = np.random.default_rng(0)
  k = 4
  for hw, d in [(256, 64), (64, 128), (16, 256), (4, 512), (1024, 64)]:
    shape = (2, hw, d)
    x = rng.standard_normal(shape) if kind == "random" else relu_like(rng, shape)
    x = x.astype(np.float32)
    u, s, v = jax.jit(svd.truncated_svd, static_argnums=1)(x, min(k, hw, d))
    kk = s.shape[-1]
    u_ref, s_ref, v_ref = np_svd(x, kk)
    all_s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    assert u.dtype == s.dtype == v.dtype == jnp.float32
    assert np.all(np.abs(s - s_ref) <= 2e-5 * s_ref + 2e-6 * all_s[..., :1]), (hw, d, s, s_ref)
    assert np.all(np.diff(np.asarray(s), axis=-1) <= 0)
    # Vectors: angle error bounded by the float32 Gram perturbation over the eigengap of each kept vector.
    lam = all_s**2
    gaps = np.array([[np.min(np.abs(np.delete(lam[b], i) - lam[b, i])) for i in range(kk)] for b in range(2)])
    for got, ref in [(v, v_ref), (u, u_ref)]:
      cos = np.abs(np.sum(np.asarray(got, np.float64) * ref, axis=-2))
      sin = np.sqrt(np.maximum(1 - cos**2, 0))
      assert np.all(sin <= 1e-5 * lam[..., :1] / gaps + 1e-3), (hw, d, sin)
      assert np.all(cos[gaps / lam[..., :1] > 1e-2] > 1 - 1e-6), (hw, d, cos)
    np.testing.assert_allclose(np.swapaxes(v, -1, -2) @ v, np.broadcast_to(np.eye(kk), (2, kk, kk)), atol=1e-5)
    assert np.all(np.abs(x @ v - u * s[..., None, :]) <= 1e-5 * all_s[..., :1, None]), (hw, d)


def test_forward_float64_and_sign_convention():
  rng = np.random.default_rng(1)
  with jax.enable_x64(True):
    for hw, d in SHAPES:
      x = rng.standard_normal((2, 3, hw, d))
      r = min(hw, d)
      u, s, v = svd.truncated_svd(x, r)
      u_ref, s_ref, v_ref = np_svd(x, r)
      assert s.dtype == jnp.float64
      np.testing.assert_allclose(s, s_ref, rtol=1e-10)
      np.testing.assert_allclose(v, v_ref, atol=1e-9)  # same sign convention, so equal not just up to sign
      np.testing.assert_allclose(u, u_ref, atol=1e-9)
      pivot = np.take_along_axis(np.asarray(v), np.argmax(np.abs(v), axis=-2)[..., None, :], axis=-2)
      assert np.all(pivot > 0)


def test_bfloat16_is_upcast_and_vmap_jit_agree():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((4, 8, 6)), jnp.bfloat16)
  u, s, v = svd.truncated_svd(x, 2)
  assert (u.shape, s.shape, v.shape) == ((4, 8, 2), (4, 2), (4, 6, 2)) and s.dtype == jnp.float32
  np.testing.assert_allclose(s, np_svd(np.asarray(x, np.float32), 2)[1], rtol=1e-5)
  fn = functools.partial(svd.truncated_svd, k=2, grad_mode="exact")
  for a, b in zip(jax.vmap(fn)(x), jax.jit(fn)(x)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  loss = lambda x: jnp.sum(fn(x)[2] ** 3)
  g = jax.jit(jax.grad(loss))(x)
  assert g.dtype == jnp.bfloat16
  g_vmap = jax.jit(jax.vmap(jax.grad(loss)))(x)
  np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(g_vmap, np.float32), rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------------------------------------------------------
# Gradients (float64).


def _sign_invariant_loss(k, mode, seed, shape):
  """A loss of (u, s, v) invariant to the sign of each singular pair (quadratic forms and s)."""
  rng = np.random.default_rng(seed)
  hw, d = shape
  a, b = rng.standard_normal((d, d)), rng.standard_normal((hw, hw))
  c = rng.standard_normal((3, k))

  def loss(x):
    u, s, v = svd.truncated_svd(x, k, grad_mode=mode)
    quad_v = jnp.einsum("ni,nm,mi->i", v, a + a.T, v)
    quad_u = jnp.einsum("ni,nm,mi->i", u, b + b.T, u) if mode == "exact" else 0
    return jnp.sum(c[0] * quad_v + c[1] * quad_u + c[2] * s)

  return loss


@pytest.mark.parametrize("shape", SHAPES)
def test_exact_matches_finite_differences(shape):
  rng = np.random.default_rng(3)
  p = rng.standard_normal((shape[0], 2)), rng.standard_normal((shape[1], 2))
  with jax.enable_x64(True):
    x = rng.standard_normal(shape)
    losses = [_sign_invariant_loss(k, "exact", k, shape) for k in (1, 2, 4)]

    def sign_dependent(x):  # the gradient is that of the sign-fixed vectors
      u, _, v = svd.truncated_svd(x, 2, grad_mode="exact")
      return jnp.sum(jnp.sin(3 * u) * p[0]) + jnp.sum(v * p[1])

    f = lambda x: jnp.stack([loss(x) for loss in losses + [sign_dependent]])
    jac, fd = jax.jit(jax.jacrev(f))(x), fd_grad(f, x)
    for i, name in enumerate(["k=1", "k=2", "k=4", "sign-dependent"]):
      assert rel_err(jac[i], fd[..., i]) < 1e-6, (shape, name)


def test_exact_matches_autodiff_of_linalg_svd_batched():
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    for hw, d in SHAPES:
      x = rng.standard_normal((2, 3, hw, d))
      dv = rng.standard_normal((2, 3, d, 3))

      def ref(x):
        _, _, vt = jnp.linalg.svd(x, full_matrices=False)
        v = jnp.swapaxes(vt, -1, -2)[..., :3]
        pivot = jnp.take_along_axis(v, jnp.argmax(jnp.abs(v), axis=-2)[..., None, :], axis=-2)
        return v * jax.lax.stop_gradient(jnp.sign(pivot))

      vjp = jax.jit(lambda f, x, dv: jax.vjp(f, x)[1](dv)[0], static_argnums=0)
      want = vjp(ref, x, dv)
      got = vjp(lambda x: svd.truncated_svd(x, 3, grad_mode="exact")[2], x, dv)
      assert rel_err(got, want) < 1e-8, (hw, d)


@pytest.mark.parametrize("shape", SHAPES)
def test_kept_triplets_equals_exact_untruncated_and_numpy_truncated(shape):
  rng = np.random.default_rng(5)
  r = min(shape)
  with jax.enable_x64(True):
    x = rng.standard_normal(shape)
    for k in (1, 2, r):
      dv = rng.standard_normal((shape[1], k))
      vjp = lambda mode: v_vjp(x, dv, k, mode)
      paper = vjp("kept_triplets")
      want = np_kept_triplets_grad(x, k, dv)  # zero for HW > D and k = 1: K is 1 x 1 with K_11 = 0
      np.testing.assert_allclose(paper, want, rtol=1e-9, atol=1e-12 * np.abs(dv).max())
      if k == r:
        assert rel_err(paper, vjp("exact")) < 1e-8, shape
      else:  # truncation drops the coupling with the discarded vectors
        assert rel_err(paper, vjp("exact")) > 1e-3, (shape, k)


@pytest.mark.parametrize("shape", SHAPES + [(4, 9)])
def test_released_code_mode(shape):
  rng = np.random.default_rng(6)
  hw, d = shape
  with jax.enable_x64(True):
    x = rng.standard_normal(shape)
    for k in (1, 3):
      dv = rng.standard_normal((d, k))
      got = v_vjp(x, dv, k, "released_code")
      if hw >= d:
        assert np.all(np.asarray(got) == 0)
        continue
      u_const = np_svd(x, k)[0]  # v = normalize(M^T u) with u held constant

      def surrogate(x):
        y = x.T @ u_const
        return y / jnp.linalg.norm(y, axis=0)

      want = jax.vjp(surrogate, x)[1](dv)[0]
      assert rel_err(got, want) < 1e-9, (shape, k)
      assert rel_err(got, fd_grad(lambda x: jnp.sum(surrogate(x) * dv), x)) < 1e-6


def _degenerate_inputs(rng, hw, d):
  r = min(hw, d)
  q = np.linalg.qr(rng.standard_normal((max(hw, d), max(hw, d))))[0]
  yield "zeros", np.zeros((hw, d))
  yield "rank1", np.outer(rng.standard_normal(hw), rng.standard_normal(d))
  yield "equal_s", 3 * q[:hw, :d]  # all singular values equal
  tie = np.zeros((hw, d))
  tie[:r, :r] = np.diag(np.r_[2.0, 2.0, 2.0 * (1 + 1e-9), np.ones(r - 3)])
  yield "near_ties", tie
  yield "dup_rows", np.repeat(rng.standard_normal((1, d)), hw, axis=0) * np.arange(1, hw + 1)[:, None]
  yield "relu_rank2", relu_like(rng, (hw, d), rank=2, noise=0.0)
  yield "tiny", 1e-30 * rng.standard_normal((hw, d))


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_degenerate_inputs_give_finite_values_and_gradients(dtype):
  rng = np.random.default_rng(7)
  with jax.enable_x64(dtype == "float64"):
    for hw, d in [(6, 9), (7, 7), (12, 5)]:
      names, xs = zip(*_degenerate_inputs(rng, hw, d))
      xs = jnp.asarray(np.stack(xs), dtype)  # [N, HW, D], every guard acts per sample
      cases = [(mode, k) for mode in svd.GRAD_MODES for k in (1, 2, min(hw, d))]

      @jax.jit
      def run(x):
        results = []
        for mode, k in cases:
          out, vjp = jax.vjp(lambda x: svd.truncated_svd(x, k, grad_mode=mode), x)
          results.append((out, vjp(tuple(jnp.ones_like(o) for o in out))[0]))
        return results

      for (mode, k), (out, g) in zip(cases, run(xs)):
        for i, name in enumerate(names):
          assert all(np.all(np.isfinite(o[i])) for o in out), (name, hw, d, mode, k)
          assert np.all(np.isfinite(g[i])), (name, hw, d, mode, k)
      s_ref = np.linalg.svd(np.asarray(xs, np.float64), compute_uv=False)[:, :2]
      s = np.asarray(run(xs)[0][0][1][:, :1])  # k = 1 ("kept_triplets")
      assert np.all(np.abs(s - s_ref[:, :1]) <= 1e-4 * s_ref[:, :1]), (hw, d, s, s_ref)
      s2 = np.asarray(run(xs)[1][0][1])  # k = 2
      assert np.all(np.abs(s2 - s_ref) <= 1e-4 * s_ref + 1e-5 * s_ref[:, :1]), (hw, d, s2, s_ref)


def test_broken_formula_would_be_caught():
  """A sanity check of the references themselves: a gradient known to be incomplete fails the FD tolerance that
  "exact" passes. "kept_triplets" drops the coupling with the discarded triplets (docs/svd_gradient.md); its forward pass is
  the same as "exact"'s, so the finite differences are the true gradient of its loss."""
  rng = np.random.default_rng(8)
  with jax.enable_x64(True):
    x = rng.standard_normal((5, 7))
    exact, paper = (_sign_invariant_loss(2, mode, 0, (5, 7)) for mode in ("exact", "kept_triplets"))
    assert rel_err(jax.grad(exact)(x), fd_grad(exact, x)) < 1e-6
    assert rel_err(jax.grad(paper)(x), fd_grad(paper, x)) > 1e-2  # 0.37 here


# ---------------------------------------------------------------------------------------------------------------
# Alignment and argument checks.


def test_align_matches_numpy_reference_and_gradient_flow():
  rng = np.random.default_rng(9)
  b, d, k = 3, 6, 2
  sv = np.linalg.qr(rng.standard_normal((b, d, k + 1)))[0]
  tv = np.linalg.qr(rng.standard_normal((b, d, k)))[0]
  ts = np.abs(rng.standard_normal((b, k))) + 0.1
  tv[0, :, 1] = -sv[0, :, 0]  # an exact match with opposite sign
  student, teacher = svd.align(sv, tv, ts)
  for i in range(b):
    cos = sv[i].T @ tv[i]
    pick = np.argmax(np.abs(cos), axis=0)
    w = ts[i] / np.linalg.norm(ts[i])
    sign = np.where(np.sum(sv[i][:, pick] * tv[i], axis=0) < 0, -1, 1)
    np.testing.assert_allclose(student[i], sv[i][:, pick] * w, atol=1e-6)
    np.testing.assert_allclose(teacher[i], tv[i] * w * sign, atol=1e-6)
  np.testing.assert_allclose(student[0, :, 1], teacher[0, :, 1], atol=1e-6)  # teacher flipped onto student
  assert np.all(np.sum(np.asarray(student) * np.asarray(teacher), axis=1) >= 0)

  g_sv, g_ts = jax.grad(lambda a, s: jnp.sum(svd.align(a, tv, s)[0] ** 2), argnums=(0, 1))(sv, ts)
  assert np.all(np.asarray(g_ts) == 0)  # weights carry no gradient
  for i in range(b):
    picked = set(np.argmax(np.abs(sv[i].T @ tv[i]), axis=0))
    for j in range(k + 1):
      assert (np.abs(g_sv[i, :, j]).sum() > 0) == (j in picked)


def test_align_zero_teacher_s_is_finite():
  student, teacher = svd.align(np.eye(4, 2), np.eye(4, 1), np.zeros((1,)))
  assert np.all(np.isfinite(student)) and np.all(np.isfinite(teacher))


def test_bad_arguments_raise():
  x = np.zeros((2, 4, 6), np.float32)
  with pytest.raises(ValueError, match="min\\(HW, D\\) = 4"):
    svd.truncated_svd(x, 5)
  with pytest.raises(ValueError, match="1 <= k"):
    svd.truncated_svd(x, 0)
  with pytest.raises(ValueError, match="'kept_triplets', 'exact', 'released_code'"):
    svd.truncated_svd(x, 2, grad_mode="autodiff")
  with pytest.raises(ValueError, match="rank >= 2"):
    svd.truncated_svd(np.zeros(4), 1)
  with pytest.raises(ValueError, match="k must be a Python int"):
    svd.truncated_svd(x, 1.5)
  with pytest.raises(ValueError, match="equal channel counts"):
    svd.align(np.zeros((2, 8, 3)), np.zeros((2, 6, 2)), np.ones((2, 2)))
  with pytest.raises(ValueError, match="teacher_s must have shape"):
    svd.align(np.zeros((2, 6, 3)), np.zeros((2, 6, 2)), np.ones((2, 3)))


def test_lapack_blas_behind_eigh_is_single_threaded():
  # jaxlib's CPU eigh calls SciPy's OpenBLAS; its own threads slowed the batched eigh 2x to 250x (svd.py docstring).
  import scipy.linalg
  import threadpoolctl

  jax.block_until_ready(svd.truncated_svd(jnp.eye(30, 28) + 0.1, 2))
  scipy_dir = os.path.dirname(os.path.dirname(scipy.linalg.__file__))
  blas = threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
  limited = [c for c in blas if c.filepath.startswith(scipy_dir)] or blas
  assert limited and all(c.num_threads == 1 for c in limited), [(c.filepath, c.num_threads) for c in blas]
