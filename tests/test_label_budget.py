"""The label budget (data.train_per_class, data.labels_per_class, train.ce_reduction), against hand computations."""

import jax
import ml_collections
import numpy as np
import pytest

from svdkd_jax import config as config_lib
from svdkd_jax import distill
from svdkd_jax import input_pipeline
from svdkd_jax import networks
from svdkd_jax import parallel
from svdkd_jax import recipes
from svdkd_jax import steps
from svdkd_jax import train
from svdkd_jax.data import sources


def log_softmax(x: np.ndarray) -> np.ndarray:
  x = x.astype(np.float64)
  z = x - x.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_cross_entropy_counts_only_labelled_examples():
  logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 0.0, 3.0], [5.0, -5.0, 0.0]], np.float32)
  labels = np.array([0, -1, 1, -1], np.int32)
  lp = log_softmax(logits)
  ce0, ce2 = -lp[0, 0], -lp[2, 1]
  assert float(steps.cross_entropy(logits, labels, "batch")) == pytest.approx((ce0 + ce2) / 4, rel=1e-6)
  assert float(steps.cross_entropy(logits, labels, "labelled")) == pytest.approx((ce0 + ce2) / 2, rel=1e-6)
  none = np.full(4, -1, np.int32)
  assert float(steps.cross_entropy(logits, none, "batch")) == 0.0
  assert float(steps.cross_entropy(logits, none, "labelled")) == 0.0
  # With every label present both reductions are the plain mean.
  full = np.array([0, 2, 1, 0], np.int32)
  mean = -np.mean(lp[np.arange(4), full])
  for reduction in ("batch", "labelled"):
    assert float(steps.cross_entropy(logits, full, reduction)) == pytest.approx(mean, rel=1e-6)
  # Accuracy over the labelled ones: example 0 right (argmax 0), example 2 wrong (argmax 2, label 1).
  assert float(steps.accuracy(logits, labels)) == pytest.approx(0.5)


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["batch", "labelled"])
def test_train_step_cross_entropy_of_labelled_and_distillation_of_all(reduction):
  """One KD-SVD step on a batch of 8 with 3 labelled images: its CE is that of the 3 (by hand from the student's
  logits), its distillation loss that of all 8 (the same as with every label present)."""
  config = recipes.quickstart("kd_svd_exact")
  config.model.width = config.teacher.width = 0.125
  config.model.dropout = config.teacher.dropout = 0.0  # deterministic forward: logits can be recomputed
  config.data.augment = "none"
  config.train.ce_reduction = reduction
  mesh = parallel.create_mesh(jax.devices()[:1])
  student = networks.build(config.model.name, 0.125, 3, 0, mesh=mesh, dropout=0.0)
  teacher = train.random_teacher(config, 3, mesh=mesh, image_size=32)
  mean, std = np.full(3, 128.0, np.float32), np.full(3, 64.0, np.float32)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
  full = rng.integers(0, 3, 8).astype(np.int32)
  mixed = np.where(np.isin(np.arange(8), [1, 4, 6]), full, -1).astype(np.int32)

  def one_step(labels):
    state, tx = train.create_train_state(config, student, steps_per_epoch=2, mesh=mesh)
    step_fn = steps.make_train_step(config, student, tx, distill_fn=distill.from_config(config.distill),
                                    steps_per_epoch=2, mesh=mesh, mean=mean, std=std, teacher=teacher)
    batch = jax.device_put({"image": images, "label": labels}, parallel.data_sharding(mesh))
    return jax.tree.map(np.asarray, step_fn(state, teacher.variables, batch)[1])

  m_mixed, m_full = one_step(mixed), one_step(full)
  x = input_pipeline.preprocess(images, None, train=False, mean=mean, std=std, augment="none")
  logits = np.asarray(networks.apply(student, student.variables, x)[0])
  lp = log_softmax(logits)
  labelled_ce = -lp[[1, 4, 6], full[[1, 4, 6]]]
  want = labelled_ce.sum() / (8 if reduction == "batch" else 3)
  assert float(m_mixed["ce_loss"]) == pytest.approx(want, rel=1e-5)
  assert float(m_full["ce_loss"]) == pytest.approx(-lp[np.arange(8), full].mean(), rel=1e-5)
  assert float(m_mixed["dist_loss"]) == pytest.approx(float(m_full["dist_loss"]), rel=1e-6)
  assert float(m_mixed["dist_loss"]) > 0
  assert float(m_mixed["accuracy"]) == pytest.approx(np.mean(logits[[1, 4, 6]].argmax(-1) == full[[1, 4, 6]]))


def indexed_source(per_class: int, num_classes: int) -> sources.ArraySource:
  """Example i has label i % num_classes and its index written in its first pixels."""
  n = per_class * num_classes
  images = np.zeros((n, 8, 8, 3), np.uint8)
  images[:, 0, 0, 0], images[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
  return sources.ArraySource(images, np.arange(n) % num_classes)


def index_of(images: np.ndarray) -> np.ndarray:
  return images[:, 0, 0, 0].astype(np.int64) + 256 * images[:, 0, 0, 1].astype(np.int64)


def test_subset_holdout_and_label_budget(monkeypatch):
  full = indexed_source(per_class=40, num_classes=5)
  monkeypatch.setattr(input_pipeline, "_load_split", lambda cfg, split: (full, 5))
  cfg = ml_collections.ConfigDict(dict(source="digits", train_split="train", eval_split="test", num_classes=5,
                                       class_subset=0, holdout=30, train_per_class=20, labels_per_class=6,
                                       augment="none", normalization="dataset", num_workers=0))
  builds = [input_pipeline.create_datasets(cfg, global_batch_size=10, eval_batch_size=10, seed=s) for s in (0, 7)]
  ds = builds[0]
  assert ds.train_size == 100 and ds.eval_size == 30
  train_idx = index_of(ds.train.gather(np.arange(100))["image"])
  eval_idx = index_of(ds.eval.gather(np.arange(30))["image"])
  assert not set(train_idx) & set(eval_idx)  # the holdout comes from outside the subset
  labels = ds.train.gather(np.arange(100))["label"]
  assert np.array_equal(np.bincount(labels[labels >= 0]), [6] * 5) and (labels == -1).sum() == 70
  assert np.array_equal(labels[labels >= 0], train_idx[labels >= 0] % 5)  # the kept labels are the true ones
  assert np.array_equal(np.bincount(train_idx % 5), [20] * 5)
  assert np.array_equal(sources.source_labels(ds.eval), eval_idx % 5)  # eval keeps every label
  # The draw does not depend on the run's seed.
  other = builds[1].train.gather(np.arange(100))
  assert np.array_equal(index_of(other["image"]), train_idx) and np.array_equal(other["label"], labels)
  # Statistics use every training image, labelled or not.
  np.testing.assert_allclose(ds.mean, sources.channel_stats(sources.subset(full, np.sort(train_idx)))[0])


def test_label_budget_errors():
  labels = np.repeat(np.arange(3), 4)
  with pytest.raises(ValueError, match="Class 0 has 4 training examples, fewer than the 5 asked for"):
    sources.per_class_draw(labels, 5, 0)
  config = recipes.quickstart("student")
  config.data.train_per_class, config.data.labels_per_class = 10, 20
  with pytest.raises(ValueError, match="labels_per_class=20 must be at most data.train_per_class=10"):
    config_lib.validate(config)
  config.data.labels_per_class = -1
  with pytest.raises(ValueError, match="labels_per_class=-1 must be >= 0"):
    config_lib.validate(config)
  config.data.labels_per_class, config.train.ce_reduction = 5, "sum"
  with pytest.raises(ValueError, match="ce_reduction='sum'; valid: batch, labelled"):
    config_lib.validate(config)
