"""Tests for svdkd_jax.distill against independent references: float64 NumPy written from docs/method.md (sections
3, 4, 9), and the published PyTorch code of attention transfer and DKD (tests/fixtures/reference_losses.npz, made by
tests/fixtures/make_reference_fixtures.py from mdistiller's and RepDistiller's own files; no torch needed here)."""

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from svdkd_jax import distill
from svdkd_jax import svd

REFERENCES = pathlib.Path(__file__).resolve().parent / "fixtures" / "reference_losses.npz"
# Tiny taps covering HW > D, HW < D (the SVD's null-space case) and min(HW, D) = k + 1 for k = 2.
SHAPES = [(2, 3, 3, 4), (2, 2, 2, 6), (2, 2, 2, 3)]


@functools.cache
def _loss_fn(name, **options):
  """Jitted `distill.get(name, **options)` returning the loss and aux (eager dispatch is several times slower)."""
  return jax.jit(distill.get(name, **options))


@functools.cache
def _grad_fn(name, argnums=0, **options):
  """Jitted gradient of the loss with respect to (student_taps, teacher_taps, student_logits, teacher_logits)."""
  fn = distill.get(name, **options)
  return jax.jit(jax.grad(lambda *a, **k: fn(*a, **k)[0], argnums=argnums))


def _taps(seed, shapes=SHAPES):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal(s) for s in shapes]


# ---------------------------------------------------------------------------------------------------------------
# NumPy references, written from docs/method.md, not from distill.py.


def np_kd_svd(student_taps, teacher_taps, k, beta=8.0, loss_scale="sum", sign_refs=None):
  """KD-SVD loss (docs/method.md sections 3-4), per pair, in float64 with explicit loops.

  The loss depends on the sign convention of the student's SVD (section 3: the teacher is flipped to the student,
  and the DFV is not invariant to flipping one tap alone), so the student's vectors take the sign of `sign_refs[l]`
  (`[B, D, k+1]`, the implementation's vectors) when given; everything else is computed independently.
  """
  feats = []
  for l, (s_tap, t_tap) in enumerate(zip(student_taps, teacher_taps)):
    bsz, h, w, d = s_tap.shape
    xs, ys = np.zeros((bsz, d, k)), np.zeros((bsz, d, k))
    for b in range(bsz):
      _, _, vt_s = np.linalg.svd(s_tap[b].reshape(h * w, d), full_matrices=False)
      _, sig_t, vt_t = np.linalg.svd(t_tap[b].reshape(-1, d), full_matrices=False)
      v_s = vt_s[:k + 1].T  # [D, k+1] candidates
      if sign_refs is not None:
        v_s = v_s * np.sign(np.sum(v_s * sign_refs[l][b], axis=0))
      v_t, sig_t = vt_t[:k].T, sig_t[:k]
      weights = sig_t / np.linalg.norm(sig_t)
      for i in range(k):
        j = np.argmax([abs(v_s[:, c] @ v_t[:, i]) for c in range(k + 1)])
        x, y = v_s[:, j] * weights[i], v_t[:, i] * weights[i]
        if x @ y < 0:
          y = -y
        xs[b, :, i], ys[b, :, i] = x, y
    feats.append((xs, ys))
  pair_losses = []
  for l in range(len(feats) - 1):
    total = 0.0
    bsz = feats[l][0].shape[0]
    for b in range(bsz):
      for i in range(k):
        front_s, back_s = feats[l][0][b, :, i], feats[l + 1][0][b, :, i]
        front_t, back_t = feats[l][1][b, :, i], feats[l + 1][1][b, :, i]
        g_s = np.exp(-(front_s[:, None] - back_s[None, :]) ** 2 / beta)
        g_t = np.exp(-(front_t[:, None] - back_t[None, :]) ** 2 / beta)
        total += 0.5 * np.sum((g_s - g_t) ** 2) * np.sqrt(k)
    pair_losses.append(total if loss_scale == "sum" else total / bsz)
  return pair_losses


def _sign_refs(student_taps, k):
  """The implementation's student singular vectors (only their signs are used by the reference)."""
  refs = []
  for x in student_taps:
    bsz, h, w, d = x.shape
    _, _, v = svd.truncated_svd(jnp.asarray(x).reshape(bsz, h * w, d), k + 1, grad_mode="exact")
    refs.append(np.asarray(v))
  return refs


def np_fsp(student_taps, teacher_taps):
  def pool(x, f):
    bsz, h, w, d = x.shape
    out = np.zeros((bsz, h // f, w // f, d))
    for i in range(h // f):
      for j in range(w // f):
        out[:, i, j] = x[:, i * f:(i + 1) * f, j * f:(j + 1) * f].max(axis=(1, 2))
    return out

  def gram(top, bot):
    if top.shape[1] > bot.shape[1]:
      top = pool(top, top.shape[1] // bot.shape[1])
    bsz, h, w, _ = bot.shape
    return np.stack([top[b].reshape(h * w, -1).T @ bot[b].reshape(h * w, -1) / (h * w) for b in range(bsz)])

  n = sum(student_taps[l].shape[-1] * student_taps[l + 1].shape[-1] for l in range(len(student_taps) - 1))
  return [np.mean(np.sum((gram(teacher_taps[l], teacher_taps[l + 1]) - gram(student_taps[l], student_taps[l + 1]))
                         ** 2, axis=(1, 2)) / 2) / n for l in range(len(student_taps) - 1)]


def np_soft_target(zs, zt, temperature):
  def log_softmax(z):
    z = z / temperature
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

  lt, ls = log_softmax(zt), log_softmax(zs)
  return temperature**2 * np.mean(np.sum(np.exp(lt) * (lt - ls), axis=-1))


# ---------------------------------------------------------------------------------------------------------------
# kd_svd


# Every SVD gradient mode has the same forward value: each is checked once against the reference.
@pytest.mark.parametrize("k,loss_scale,svd_grad", [(1, "sum", "kept_triplets"), (2, "sum", "released_code"),
                                                    (2, "mean", "exact")])
def test_kd_svd_matches_numpy(k, loss_scale, svd_grad):
  with jax.enable_x64(True):
    s_np, t_np = _taps(0), _taps(1)
    fn = _loss_fn("kd_svd", k=k, beta=8.0, svd_grad=svd_grad, loss_scale=loss_scale)
    loss, aux = fn([jnp.asarray(x) for x in s_np], [jnp.asarray(x) for x in t_np], None, None)
    expected = np_kd_svd(s_np, t_np, k, loss_scale=loss_scale, sign_refs=_sign_refs(s_np, k))
    assert loss.dtype == jnp.float64
    np.testing.assert_allclose(float(loss), sum(expected), rtol=1e-9)
    np.testing.assert_allclose([float(aux[f"pair_{l}"]) for l in range(2)], expected, rtol=1e-9)
    assert float(loss) > 1e-4  # the test would notice a loss stuck at zero


def test_kd_svd_gradient_matches_finite_differences():
  k = 2
  with jax.enable_x64(True):
    s_np, t_np = _taps(4), _taps(5)
    refs = _sign_refs(s_np, k)
    t = [jnp.asarray(x) for x in t_np]
    grads = _grad_fn("kd_svd", k=k, svd_grad="exact", loss_scale="sum")([jnp.asarray(x) for x in s_np], t, None,
                                                                          None)

    eps = 1e-6
    for l, x in enumerate(s_np):
      fd = np.zeros_like(x)
      for idx in np.ndindex(x.shape):
        plus = [y.copy() for y in s_np]
        minus = [y.copy() for y in s_np]
        plus[l][idx] += eps
        minus[l][idx] -= eps
        fd[idx] = (sum(np_kd_svd(plus, t_np, k, sign_refs=refs)) - sum(np_kd_svd(minus, t_np, k, sign_refs=refs))) / (
            2 * eps)
      assert np.abs(fd).max() > 1e-4, f"tap {l}: finite differences vanish, the test would be vacuous"
      np.testing.assert_allclose(np.asarray(grads[l]), fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max(),
                                 err_msg=f"tap {l}")


def test_kd_svd_teacher_sign_flip_leaves_loss_unchanged(monkeypatch):
  # Taps 0, 1, 2 flip the teacher's first, second, and both singular vectors: every vector is flipped somewhere.
  flip_columns = [(0,), (1,), (0, 1)]
  with jax.enable_x64(True):
    s, t = [jnp.asarray(x) for x in _taps(6)], [jnp.asarray(x) for x in _taps(7)]
    base = float(_loss_fn("kd_svd", k=2, beta=8.0, svd_grad="released_code", loss_scale="sum")(s, t, None, None)[0])
    original = svd.truncated_svd
    teacher_calls = []

    def flipped(x, k, *, grad_mode="kept_triplets", solver="auto"):
      u, sig, v = original(x, k, grad_mode=grad_mode, solver=solver)
      if k == 2:  # the teacher's call (the student asks for k + 1 = 3)
        sign = jnp.ones(k).at[jnp.array(flip_columns[len(teacher_calls)])].set(-1.0)
        teacher_calls.append(x.shape)
        u, v = u * sign, v * sign
      return u, sig, v

    monkeypatch.setattr(svd, "truncated_svd", flipped)
    fn = jax.jit(distill.get("kd_svd", k=2, svd_grad="released_code", loss_scale="sum"))  # a fresh trace, so it sees the patch
    np.testing.assert_allclose(float(fn(s, t, None, None)[0]), base, rtol=1e-12)
    assert len(teacher_calls) == 3  # the patch did reach the teacher at every tap


@pytest.mark.parametrize("name", ["kd_svd", "fsp", "soft_target", "attention_transfer", "dkd"])
def test_teacher_receives_no_gradient(name):
  shapes = [(2, 4, 4, 3), (2, 2, 2, 5), (2, 2, 2, 4)]  # valid for every method (FSP pools 4x4 -> 2x2)
  s = [jnp.asarray(x, jnp.float32) for x in _taps(8, shapes)]
  t = [jnp.asarray(x, jnp.float32) for x in _taps(9, shapes)]
  zs, zt = jax.random.normal(jax.random.key(0), (2, 5)), jax.random.normal(jax.random.key(1), (2, 5))
  g_s, g_t, g_zs, g_zt = _grad_fn(name, argnums=(0, 1, 2, 3))(s, t, zs, zt, labels=jnp.array([1, 3]), epoch=30)
  for g in g_t + [g_zt]:
    assert np.all(np.asarray(g) == 0.0)
  # ... while the student does receive one.
  assert max(float(jnp.abs(g).max()) for g in g_s + [g_zs]) > 0


def test_kd_svd_drops_a_non_finite_sample():
  s, t = [jnp.asarray(x, jnp.float32) for x in _taps(10)], [jnp.asarray(x, jnp.float32) for x in _taps(11)]
  bad = [s[0].at[1].set(jnp.nan)] + s[1:]
  fn = _loss_fn("kd_svd", k=1)
  loss, _ = fn(bad, t, None, None)
  # A student equal to the teacher has zero loss, so this is the loss of the first sample alone:
  good_only, _ = fn([jnp.stack([x[0], y[1]]) for x, y in zip(s, t)], t, None, None)
  both, _ = fn(s, t, None, None)
  np.testing.assert_allclose(float(loss), float(good_only), rtol=1e-5)
  assert float(both) > 1.01 * float(good_only) > 0  # the second sample did count while it was finite
  grads = _grad_fn("kd_svd", k=1)(bad, t, None, None)
  assert all(bool(jnp.isfinite(g).all()) for g in grads)
  assert all(float(jnp.abs(g[0]).max()) > 0 for g in grads)


def test_kd_svd_errors_name_taps_and_shapes():
  s = [jnp.zeros(x) for x in SHAPES]
  fn = distill.get("kd_svd", k=1)
  wrong_d = [s[0], jnp.zeros((2, 2, 2, 7)), s[2]]
  with pytest.raises(ValueError, match=r"tap 1 channel counts differ.*\(2, 2, 2, 6\).*\(2, 2, 2, 7\)"):
    fn(s, wrong_d, None, None)
  with pytest.raises(ValueError, match="3 taps but the teacher has 2"):
    fn(s, s[:2], None, None)
  with pytest.raises(ValueError, match=r"tap 2 student map \(2, 1, 1, 3\).*k \+ 1 = 2"):
    fn(s[:2] + [jnp.zeros((2, 1, 1, 3))], s[:2] + [jnp.zeros((2, 1, 1, 3))], None, None)
  with pytest.raises(ValueError, match="svd_grad"):
    distill.get("kd_svd", svd_grad="autodiff")
  with pytest.raises(ValueError, match="loss_scale"):
    distill.get("kd_svd", loss_scale="batch")
  with pytest.raises(ValueError, match="k must be"):
    distill.get("kd_svd", k=0)


# ---------------------------------------------------------------------------------------------------------------
# fsp, soft_target, none, registry


def test_fsp_matches_numpy():
  shapes = [(3, 8, 8, 3), (3, 4, 4, 5), (3, 4, 4, 2), (3, 2, 2, 4)]  # pooled and unpooled pairs
  with jax.enable_x64(True):
    s_np, t_np = _taps(12, shapes), _taps(13, shapes)
    loss, aux = _loss_fn("fsp")([jnp.asarray(x) for x in s_np], [jnp.asarray(x) for x in t_np], None, None)
    expected = np_fsp(s_np, t_np)
    np.testing.assert_allclose(float(loss), sum(expected), rtol=1e-10)
    np.testing.assert_allclose([float(aux[f"pair_{l}"]) for l in range(3)], expected, rtol=1e-10)
  with pytest.raises(ValueError, match="tap 0 channel counts differ"):
    distill.get("fsp")([jnp.zeros((1, 4, 4, 2))] * 2, [jnp.zeros((1, 4, 4, 3))] * 2, None, None)


def test_soft_target_matches_numpy_and_vanishes_on_equal_logits():
  with jax.enable_x64(True):
    rng = np.random.default_rng(14)
    zs, zt = rng.standard_normal((4, 7)) * 3, rng.standard_normal((4, 7)) * 3
    fn = distill.get("soft_target", temperature=3.0)
    loss, aux = fn(None, None, jnp.asarray(zs), jnp.asarray(zt))
    np.testing.assert_allclose(float(loss), np_soft_target(zs, zt, 3.0), rtol=1e-10)
    assert float(loss) > 0 and float(aux["kl"]) == float(loss)
    same, _ = fn(None, None, jnp.asarray(zt), jnp.asarray(zt))
    assert abs(float(same)) < 1e-12
  with pytest.raises(ValueError, match="temperature"):
    distill.get("soft_target", temperature=0.0)


# ---------------------------------------------------------------------------------------------------------------
# attention_transfer and dkd against their published code (the fixture's float64 torch results)


def _references():
  return dict(np.load(REFERENCES))


@pytest.mark.parametrize("dtype,rtol", [(jnp.float32, 1e-5), (jnp.float64, 1e-10)])
def test_attention_transfer_matches_mdistiller_and_repdistiller(dtype, rtol):
  ref = _references()
  with jax.enable_x64(dtype == jnp.float64):
    s = [jnp.asarray(ref[f"at_student_{l}"], dtype) for l in range(3)]
    t = [jnp.asarray(ref[f"at_teacher_{l}"], dtype) for l in range(3)]  # pooled at tap 0, equal 1, student's 2
    (loss, aux), grads = jax.jit(jax.value_and_grad(lambda s, t: distill.get("attention_transfer")(s, t, None, None),
                                                    has_aux=True))(s, t)
    assert loss.dtype == dtype
    for source in ("mdistiller", "repdistiller"):
      np.testing.assert_allclose(float(loss), float(ref[f"at_{source}_loss"]), rtol=rtol, err_msg=source)
      for l, g in enumerate(grads):
        want = ref[f"at_{source}_grad_{l}"]
        np.testing.assert_allclose(np.asarray(g), want, rtol=rtol, atol=0.1 * rtol * np.abs(want).max(),
                                   err_msg=f"{source} tap {l}")
    np.testing.assert_allclose([float(aux[f"tap_{l}"]) for l in range(3)], ref["at_repdistiller_per_tap"], rtol=rtol)
  assert float(loss) > 1.0  # at_beta = 1000 reached the loss


@pytest.mark.parametrize("case", [0, 1, 2])
@pytest.mark.parametrize("dtype,rtol", [(jnp.float32, 1e-5), (jnp.float64, 1e-10)])
def test_dkd_matches_mdistiller(case, dtype, rtol):
  """Warm-up under way (mdistiller epoch 5 of 20), done (25), and other options; their epochs count from 1."""
  ref = _references()
  alpha, beta, temperature, warmup, epoch = ref["dkd_cases"][case]
  fn = distill.get("dkd", dkd_alpha=alpha, dkd_beta=beta, temperature=temperature, dkd_warmup=int(warmup))
  with jax.enable_x64(dtype == jnp.float64):
    z_s, z_t = (jnp.asarray(ref[f"dkd_{who}_logits"], dtype) for who in ("student", "teacher"))
    (loss, aux), grad = jax.value_and_grad(
        lambda z: fn(None, None, z, z_t, labels=jnp.asarray(ref["dkd_labels"]), epoch=int(epoch) - 1),
        has_aux=True)(z_s)
    want = ref[f"dkd_grad_{case}"]
    np.testing.assert_allclose(float(loss), float(ref[f"dkd_loss_{case}"]), rtol=rtol)
    np.testing.assert_allclose(np.asarray(grad), want, rtol=rtol, atol=0.1 * rtol * np.abs(want).max())
    np.testing.assert_allclose(float(aux["tckd"] + aux["nckd"]), float(loss), rtol=rtol)
    np.testing.assert_allclose(float(aux["warmup"]), min(epoch / warmup, 1.0), rtol=1e-6)


def test_dkd_unlabelled_images_count_with_zero_loss():
  ref = _references()
  z_s, z_t, labels = (jnp.asarray(ref[k]) for k in ("dkd_student_logits", "dkd_teacher_logits", "dkd_labels"))
  fn = distill.get("dkd", dkd_warmup=0)
  masked = labels.at[::2].set(-1)
  loss, _ = fn(None, None, z_s, z_t, labels=masked)
  labelled, _ = fn(None, None, z_s[1::2], z_t[1::2], labels=labels[1::2])
  np.testing.assert_allclose(float(loss), float(labelled) / 2, rtol=1e-6)  # the same sum over a batch twice as large
  grad = jax.grad(lambda z: fn(None, None, z, z_t, labels=masked)[0])(z_s)
  assert np.all(np.asarray(grad[::2]) == 0) and float(jnp.abs(grad[1::2]).max()) > 0


def test_baselines_errors():
  z = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match=r"^dkd: needs the labels .* and the epoch"):
    distill.get("dkd")(None, None, z, z)
  distill.get("dkd", dkd_warmup=0)(None, None, z, z, labels=jnp.array([0, 1]))  # no warm-up: no epoch needed
  with pytest.raises(ValueError, match="dkd_warmup must be an integer"):
    distill.get("dkd", dkd_warmup=2.5)
  with pytest.raises(ValueError, match="dkd_beta must be >= 0"):
    distill.get("dkd", dkd_beta=-1.0)
  with pytest.raises(ValueError, match="at_beta must be positive"):
    distill.get("attention_transfer", at_beta=0.0)
  fn = distill.get("attention_transfer")
  with pytest.raises(ValueError, match=r"^attention_transfer: tap 0 \(student \(2, 6, 6, 3\), teacher \(2, 4, 4, 3\)\): "
                                       r"cannot pool a \(2, 6, 6, 3\) map to 4x4"):
    fn([jnp.zeros((2, 6, 6, 3))], [jnp.zeros((2, 4, 4, 3))], None, None)
  with pytest.raises(ValueError, match="needs at least 1 taps, got 0; a network that returns logits only"):
    fn([], [], None, None)


def test_none_is_zero():
  loss, aux = distill.get("none")(None, None, jnp.ones((2, 3)), jnp.ones((2, 3)))
  assert float(loss) == 0.0 and aux == {}


def test_registry_errors_list_valid_choices():
  assert set(distill.NAMES) == {"none", "kd_svd", "fsp", "soft_target", "attention_transfer", "dkd"}
  with pytest.raises(ValueError, match="valid methods: none, kd_svd, fsp, soft_target, attention_transfer, dkd"):
    distill.get("fitnet")
  with pytest.raises(ValueError, match="unknown option.*temperature.*valid options for 'kd_svd': k, beta"):
    distill.get("kd_svd", temperature=4.0)
  with pytest.raises(ValueError, match=r"\(none\)"):
    distill.get("fsp", k=1)


def test_from_config_picks_the_method_options():
  cfg = ml_collections.ConfigDict(dict(method="soft_target", k=1, beta=8.0, svd_grad="exact", loss_scale="sum",
                                       svd_solver="auto", temperature=2.0, mechanism="1stage", init_epochs=0))
  zs, zt = jnp.array([[0.0, 1.0]]), jnp.array([[1.0, 0.0]])
  np.testing.assert_allclose(float(distill.from_config(cfg)(None, None, zs, zt)[0]),
                             float(distill.get("soft_target", temperature=2.0)(None, None, zs, zt)[0]))
  cfg.method = "kd_svd"
  cfg.loss_scale = "bogus"
  with pytest.raises(ValueError, match="loss_scale"):
    distill.from_config(cfg)


def test_dfv_layout_matches_the_definition():
  rng = np.random.default_rng(5)
  front, back = rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 4, 2))
  out = np.asarray(distill.dfv(jnp.asarray(front, jnp.float32), jnp.asarray(back, jnp.float32), 8.0))
  expected = np.exp(-np.square(front[:, :, None, :] - back[:, None, :, :]) / 8.0)  # [B, D_l, D_l+1, k]
  assert out.shape == (2, 3, 4, 2)
  np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_methods_joined_by_plus_sum_their_losses_with_their_own_options():
  rng = np.random.default_rng(21)
  s_taps = [jnp.asarray(rng.standard_normal((3, 4, 4, 4)), jnp.float32),
            jnp.asarray(rng.standard_normal((3, 2, 2, 8)), jnp.float32)]
  t_taps = [jnp.asarray(rng.standard_normal(x.shape), jnp.float32) for x in s_taps]
  zs, zt = (jnp.asarray(rng.standard_normal((3, 5)), jnp.float32) for _ in range(2))
  kd, kd_aux = distill.get("kd_svd", loss_scale="mean")(s_taps, t_taps, zs, zt)
  st, _ = distill.get("soft_target", temperature=2.0)(s_taps, t_taps, zs, zt)
  both, aux = distill.get("kd_svd+soft_target", loss_scale="mean", temperature=2.0)(s_taps, t_taps, zs, zt)
  np.testing.assert_allclose(float(both), float(kd) + float(st), rtol=1e-6)
  assert float(kd) > 0 and float(st) > 0
  assert set(aux) == {"kd_svd/pair_0", "soft_target/kl"}
  np.testing.assert_allclose(float(aux["kd_svd/pair_0"]), float(kd_aux["pair_0"]), rtol=1e-6)
  assert distill.option_names("kd_svd+soft_target") == ("k", "beta", "svd_grad", "loss_scale", "svd_solver",
                                                       "temperature")
  assert distill.is_method("fsp+soft_target") and not distill.is_method("fsp+fsp")
  assert not distill.is_method("fsp+bogus")
  with pytest.raises(ValueError, match="unknown distillation method 'fsp\\+bogus'"):
    distill.get("fsp+bogus")
  with pytest.raises(ValueError, match="unknown option.*k"):
    distill.get("fsp+soft_target", k=1)


def test_registry_declares_what_each_method_takes():
  """Each method's declared options are exactly the keyword parameters of its builder (the registry is read, never
  the signatures, when a config is checked or a function built)."""
  import inspect  # pylint: disable=g-import-not-at-top
  for name in distill.NAMES:
    method = distill._REGISTRY[name]
    assert distill.option_names(name) == tuple(inspect.signature(method.build).parameters), name
  assert distill.all_option_names() == ("k", "beta", "svd_grad", "loss_scale", "svd_solver", "temperature", "at_beta",
                                        "dkd_alpha", "dkd_beta", "dkd_warmup")


def test_svd_grad_names_are_the_svd_modes_they_name(monkeypatch):
  """`svd_grad` is the grad_mode of svd.truncated_svd it names, for every mode; another name is a one-line error."""
  modes, original = [], svd.truncated_svd

  def recorded(x, k, *, grad_mode, **options):
    modes.append(grad_mode)
    return original(x, k, grad_mode=grad_mode, **options)

  monkeypatch.setattr(svd, "truncated_svd", recorded)
  taps = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in ((2, 3, 3, 4), (2, 1, 2, 4))]
  for mode in svd.GRAD_MODES:
    modes.clear()
    jax.eval_shape(distill.get("kd_svd", svd_grad=mode), taps, taps, None, None)
    assert modes == [mode] * 4, (mode, modes)
  with pytest.raises(ValueError, match=r"^kd_svd: unknown svd_grad 'poster'; valid: kept_triplets, exact, "
                                       r"released_code\.$"):
    distill.get("kd_svd", svd_grad="poster")
