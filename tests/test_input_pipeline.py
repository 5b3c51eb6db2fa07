"""Tests of svdkd_jax.input_pipeline and svdkd_jax.data: sources, batching order/resume/sharding, augmentation."""

import io
import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest

from svdkd_jax import config as config_lib
from svdkd_jax import input_pipeline
from svdkd_jax.data import augment
from svdkd_jax.data import sources



def data_config(**overrides) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(dict(
      source="digits", name="cifar10", data_dir="", path="", cache_dir="", train_split="train", eval_split="test",
      num_classes=10, image_size=32, class_subset=0, holdout=0, augment="flip_rotate_crop", normalization="dataset",
      num_workers=0))
  cfg.update(overrides)
  return cfg


def indexed_datasets(n=50, global_batch=8, eval_n=13, eval_batch=4, seed=0, **kw) -> input_pipeline.Datasets:
  """Datasets whose label is the example's index, so batches can be checked example by example."""
  images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 4, 4, 3)).copy()
  train = sources.ArraySource(images, np.arange(n))
  ev = sources.ArraySource(images[:eval_n], np.arange(eval_n))
  return input_pipeline.Datasets(train=train, eval=ev, num_classes=n, mean=np.zeros(3, np.float32),
                                 std=np.ones(3, np.float32), global_batch_size=global_batch,
                                 eval_batch_size=eval_batch, seed=seed, **kw)


def take(it, n):
  return [next(it)["label"] for _ in range(n)]


# --- batching: order, epochs, resume, multi-process shares, eval padding ---


def test_epoch_is_a_permutation_without_remainder():
  ds = indexed_datasets(n=50, global_batch=8)
  assert ds.steps_per_epoch == 6
  it = ds.train_iterator()
  epoch0 = np.concatenate(take(it, 6))
  epoch1 = np.concatenate(take(it, 6))
  for epoch in (epoch0, epoch1):
    assert len(set(epoch.tolist())) == 48  # 48 distinct examples, the remainder 2 dropped
  assert not np.array_equal(epoch0, epoch1)  # reshuffled every epoch
  # Order is grain's MapDataset.shuffle order (independent reference), cut to 48.
  import grain  # pylint: disable=g-import-not-at-top
  ref = grain.MapDataset.range(50).shuffle(seed=0)
  np.testing.assert_array_equal(epoch0, [ref[i] for i in range(48)])
  np.testing.assert_array_equal(epoch1, [ref[50 + i] for i in range(48)])  # (range sources wrap around)


def test_same_seed_same_batches_other_seed_other_batches():
  a = np.concatenate(take(indexed_datasets(seed=3).train_iterator(), 4))
  b = np.concatenate(take(indexed_datasets(seed=3).train_iterator(), 4))
  c = np.concatenate(take(indexed_datasets(seed=4).train_iterator(), 4))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_resume_mid_epoch_gives_the_rest_exactly_once():
  ds = indexed_datasets(n=50, global_batch=8)
  it = ds.train_iterator()
  first = take(it, 2)
  state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
  rest = take(it, 4 + 6)  # to the end of epoch 0 and all of epoch 1
  resumed = take(ds.train_iterator(epoch_start_state=state), 10)
  np.testing.assert_array_equal(np.concatenate(rest), np.concatenate(resumed))
  epoch0 = np.concatenate(first + resumed[:4])
  assert len(set(epoch0.tolist())) == 48
  it2 = ds.train_iterator()
  it2.set_state(state)
  np.testing.assert_array_equal(next(it2)["label"], rest[0])


def test_process_shares_assemble_the_single_process_batch():
  full = take(indexed_datasets(global_batch=8, process_index=0, process_count=1).train_iterator(), 7)
  shares = [take(indexed_datasets(global_batch=8, process_index=p, process_count=2).train_iterator(), 7)
            for p in range(2)]
  for step in range(7):
    assert shares[0][step].shape == (4,)
    np.testing.assert_array_equal(np.concatenate([shares[0][step], shares[1][step]]), full[step])
  with pytest.raises(ValueError, match="multiple of the process count"):
    indexed_datasets(global_batch=9, process_index=0, process_count=2)


def test_worker_processes_give_the_same_batches_and_resume():
  ds = indexed_datasets(num_workers=1)
  it = ds.train_iterator()
  first = take(it, 3)
  state = json.loads(json.dumps(it.get_state()))
  rest = take(it, 3)
  it2 = ds.train_iterator(epoch_start_state=state)
  resumed = take(it2, 3)
  it.close()
  it2.close()
  ref = take(indexed_datasets(num_workers=0).train_iterator(), 6)
  np.testing.assert_array_equal(np.concatenate(first + rest), np.concatenate(ref))
  np.testing.assert_array_equal(np.concatenate(resumed), np.concatenate(rest))


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_every_example_once_with_padding_mask(process_count):
  seen = []
  for p in range(process_count):
    ds = indexed_datasets(eval_n=13, eval_batch=4, process_index=p, process_count=process_count)
    batches = list(ds.eval_batches())
    assert len(batches) == 4  # ceil(13 / 4): the last batch is padded, not dropped
    for b in batches:
      assert b["image"].shape == (4 // process_count, 4, 4, 3) and b["mask"].dtype == bool
      assert b["label"].dtype == np.int32
      assert np.all(b["image"][~b["mask"]] == 0)
      seen += b["label"][b["mask"]].tolist()
  assert sorted(seen) == list(range(13))


def test_batch_dtypes_and_too_large_batch():
  b = next(indexed_datasets().train_iterator())
  assert b["image"].dtype == np.uint8 and b["image"].shape == (8, 4, 4, 3) and b["label"].dtype == np.int32
  with pytest.raises(ValueError, match="fewer than one global batch"):
    indexed_datasets(n=5, eval_n=5, global_batch=8)


def test_to_global_places_on_the_mesh():
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  batch = next(indexed_datasets(global_batch=2 * jax.device_count()).train_iterator())
  out = input_pipeline.to_global(batch, sharding)
  assert out["image"].sharding == sharding and out["image"].shape == batch["image"].shape
  np.testing.assert_array_equal(np.asarray(out["label"]), batch["label"])


# --- augmentation ---

MEAN, STD = np.array([10.0, 20.0, 30.0], np.float32), np.array([2.0, 4.0, 8.0], np.float32)
_transform = jax.jit(augment.transform, static_argnames="pad")
_preprocess = jax.jit(augment.preprocess, static_argnames=("train", "augment"))


@pytest.fixture(scope="module")
def image():
  return np.random.default_rng(0).uniform(-1, 1, (8, 8, 3)).astype(np.float32)


def test_flip_is_a_flip_and_rotation_zero_is_identity(image):
  same = _transform(image, False, 0.0, jnp.array([4, 4]))
  np.testing.assert_array_equal(same, image)
  np.testing.assert_array_equal(_transform(image, True, 0.0, jnp.array([4, 4])), image[:, ::-1])


def test_rotation_by_90_degrees_matches_rot90(image):
  # tf.contrib.image.rotate turns counter-clockwise, like np.rot90.
  out = _transform(image, False, np.pi / 2, jnp.array([4, 4]))
  np.testing.assert_allclose(out, np.rot90(image, 1, axes=(0, 1)))


@pytest.mark.parametrize("dy,dx", [(0, 0), (8, 8), (1, 7), (4, 0)])
def test_crop_is_a_window_of_the_zero_padded_image(image, dy, dx):
  padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
  out = _transform(image, False, 0.0, jnp.array([dy, dx]))
  np.testing.assert_array_equal(out, padded[dy:dy + 8, dx:dx + 8])


def test_flip_crop_outputs_are_in_bounds_windows():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
  out = np.asarray(_preprocess(images, jax.random.key(0), train=True, mean=MEAN, std=STD, augment="flip_crop"))
  norm = (images.astype(np.float32) - MEAN) / STD
  for x, y in zip(norm, out):
    windows = [np.pad(f, ((4, 4), (4, 4), (0, 0)))[dy:dy + 8, dx:dx + 8]
               for f in (x, x[:, ::-1]) for dy in range(9) for dx in range(9)]
    assert any(np.allclose(w, y) for w in windows)


def test_sskd_augmentation_reads_only_input_pixels_or_zeros():
  images = np.random.default_rng(2).integers(1, 256, (16, 8, 8, 3), dtype=np.uint8)
  images[1:] = images[0]  # identical images: per-example randomness must still differ
  out = np.asarray(_preprocess(images, jax.random.key(3), train=True, mean=MEAN, std=STD, augment="flip_rotate_crop"))
  norm = (images[0].astype(np.float32) - MEAN) / STD
  pixels = {tuple(p) for p in norm.reshape(-1, 3).tolist()}
  for y in out:
    for p in y.reshape(-1, 3).tolist():
      assert tuple(p) in pixels or p == [0.0, 0.0, 0.0]
  assert len({y.tobytes() for y in out}) > 8
  flips = [np.allclose(y, out[0]) for y in out]
  assert not all(flips)


def test_eval_is_deterministic_normalisation():
  images = np.random.default_rng(4).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
  a = _preprocess(images, jax.random.key(0), train=False, mean=MEAN, std=STD, augment="flip_rotate_crop")
  b = _preprocess(images, jax.random.key(1), train=False, mean=MEAN, std=STD, augment="flip_rotate_crop")
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(a, (images - MEAN) / STD, rtol=1e-6)
  with pytest.raises(ValueError, match="augment must be one of"):
    augment.preprocess(images, jax.random.key(0), train=True, mean=MEAN, std=STD, augment="mixup")


# --- digits ---


def test_digits_counts_shapes_and_split():
  ds = input_pipeline.create_datasets(data_config(), global_batch_size=64, eval_batch_size=100, seed=0)
  assert (ds.train_size, ds.eval_size, ds.num_classes, ds.image_shape) == (1437, 360, 10, (32, 32, 3))
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  ref = datasets.load_digits()
  # Stratified: every class is in the eval split in its proportion (+-1).
  counts = np.bincount(sources.source_labels(ds.eval), minlength=10)
  np.testing.assert_allclose(counts, np.bincount(ref.target) * 0.2, atol=1)
  native = sources.load_digits("test", image_size=0)
  assert native.images.shape[1:] == (8, 8, 3) and native.images.max() == 255
  # Each native eval image is one of sklearn's images, scaled 16 -> 255.
  ref_u8 = np.round(ref.images * 255 / 16).astype(np.uint8)
  i = 5
  match = np.flatnonzero((ref_u8 == native.images[i, ..., 0]).all(axis=(1, 2)))
  assert match.size and ref.target[match[0]] == native.labels[i]
  with pytest.raises(ValueError, match="splits"):
    sources.load_digits("validation")


def test_holdout_and_class_subset():
  ds = input_pipeline.create_datasets(data_config(holdout=200, class_subset=5, num_classes=5),
                                      global_batch_size=64, eval_batch_size=100, seed=0)
  assert ds.num_classes == 5 and ds.eval_size == 200
  digits = sources.load_digits("train", 0)
  assert ds.train_size + ds.eval_size == int((digits.labels < 5).sum())
  assert sources.source_labels(ds.train).max() == 4 and sources.source_labels(ds.eval).max() == 4
  # Held-out examples are not in the training split.
  train_bytes = {x.tobytes() for x in ds.train.images}
  assert sum(x.tobytes() in train_bytes for x in ds.eval.images) < 10  # (digits has a few exact duplicates)


def test_data_errors_and_the_authors_statistics():
  """The data's own errors; config values are checked by config.validate (tests/test_configs.py), and a data config
  that was not validated still fails on an unknown source or normalization rather than guessing."""
  kw = dict(global_batch_size=64, eval_batch_size=100, seed=0)
  with pytest.raises(ValueError, match="num_classes=10"):
    input_pipeline.create_datasets(data_config(num_classes=5), **kw)
  with pytest.raises(ValueError, match="unknown data source 'kaggle'"):
    input_pipeline.create_datasets(data_config(source="kaggle"), **kw)
  with pytest.raises(ValueError, match="unknown normalization 'imagenet'"):
    input_pipeline.create_datasets(data_config(normalization="imagenet"), **kw)
  ds = input_pipeline.create_datasets(data_config(normalization="cifar100_bgr"), **kw)
  np.testing.assert_allclose(ds.mean, [112.4776, 124.1058, 129.3773], rtol=1e-6)


def test_tfds_feature_keys_come_from_the_config(monkeypatch):
  """data.image_key / data.label_key name a tfds dataset's features (for datasets whose features are not named
  "image" and "label")."""
  calls = []

  def load_tfds(name, split, data_dir, image_size, image_key, label_key):
    calls.append((name, split, image_key, label_key))
    return sources.load_digits(split, image_size), 10

  monkeypatch.setattr(sources, "load_tfds", load_tfds)
  input_pipeline.create_datasets(data_config(source="tfds", name="my_faces", image_key="img", label_key="identity"),
                                 global_batch_size=64, eval_batch_size=100, seed=0)
  assert calls == [("my_faces", "train", "img", "identity"), ("my_faces", "test", "img", "identity")]
  assert config_lib.default().data.image_key == "image" and config_lib.default().data.label_key == "label"


# --- archive (written by the test) ---


def write_archive(folder: Path, n=12, size=16, num_classes=3, sha=None) -> np.ndarray:
  """Writes meta.json + train.npz/test.npz of random JPEGs; returns the Pillow-decoded train images."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  meta = {"name": "tiny", "classes": [f"c{i}" for i in range(num_classes)]}
  decoded = {}
  for split, count in (("train", n), ("test", n // 2)):
    blobs, imgs = [], []
    for _ in range(count):
      buf = io.BytesIO()
      Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=75)
      blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
      imgs.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    labels = (np.arange(count) % num_classes).astype(np.int16)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(folder / f"{split}.npz", jpeg=np.concatenate(blobs), offsets=offsets, labels=labels)
    decoded[split] = np.stack(imgs)
    meta[split] = {"n": count, "image_shape": [size, size, 3], "file": f"{split}.npz",
                   "sha256_decoded_images_pil": sha or sources._sha256(decoded[split]),
                   "sha256_labels_int16": sources._sha256(labels)}
  (folder / "meta.json").write_text(json.dumps(meta))
  return decoded["train"]


def test_archive_decodes_caches_and_resizes(tmp_path, monkeypatch, caplog):
  expected = write_archive(tmp_path / "arch")
  cache = tmp_path / "cache"
  with caplog.at_level(logging.WARNING):
    src = sources.load_archive(tmp_path / "arch", "train", 0, str(cache))
  assert "differ" not in caplog.text  # the sha256 in meta.json was verified
  np.testing.assert_array_equal(src.images, expected)
  np.testing.assert_array_equal(src.labels, np.arange(12) % 3)
  small = sources.load_archive(tmp_path / "arch", "train", 8, str(cache))
  ref = np.asarray(Image.fromarray(expected[3]).resize((8, 8), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(small.images[3], ref)
  assert {p.name for p in cache.iterdir()} >= {"tiny_train_native.npz", "tiny_train_8.npz", "tiny_train_8.json"}

  # Second start: served from the cache without decoding.
  monkeypatch.setattr(sources, "_decode_archive", lambda *a: pytest.fail("decoded again"))
  again = sources.load_archive(tmp_path / "arch", "train", 8, str(cache))
  np.testing.assert_array_equal(again.images, small.images)
  # A corrupt cache is detected by its checksum and rebuilt.
  monkeypatch.undo()
  with np.load(cache / "tiny_train_native.npz") as z:
    bad = z["images"].copy()
  bad[0, 0, 0, 0] ^= 1
  np.savez(cache / "tiny_train_native.npz", images=bad, labels=np.arange(12) % 3)
  with caplog.at_level(logging.WARNING):
    fixed = sources.load_archive(tmp_path / "arch", "train", 0, str(cache))
  assert "corrupt" in caplog.text
  np.testing.assert_array_equal(fixed.images, expected)


def test_archive_checksum_mismatch_warns_but_loads(tmp_path, caplog):
  expected = write_archive(tmp_path / "arch", sha="0" * 64)
  with caplog.at_level(logging.WARNING):
    src = sources.load_archive(tmp_path / "arch", "train", 0, str(tmp_path / "c"))
  assert "differ from the sha256" in caplog.text
  np.testing.assert_array_equal(src.images, expected)


def test_archive_errors(tmp_path):
  write_archive(tmp_path / "arch", num_classes=3)
  kw = dict(global_batch_size=4, eval_batch_size=4, seed=0)
  cfg = data_config(source="archive", path=str(tmp_path / "arch"), cache_dir=str(tmp_path / "c"), image_size=0)
  with pytest.raises(ValueError, match="num_classes=3"):
    input_pipeline.create_datasets(_with(cfg, num_classes=2), **kw)
  with pytest.raises(ValueError, match="has splits"):
    input_pipeline.create_datasets(_with(cfg, eval_split="val"), **kw)
  with pytest.raises(FileNotFoundError, match="meta.json"):
    input_pipeline.create_datasets(_with(cfg, path=str(tmp_path / "nowhere")), **kw)
  ds = input_pipeline.create_datasets(_with(cfg, num_classes=3), **kw)
  assert (ds.train_size, ds.eval_size, ds.image_shape, ds.num_classes) == (12, 6, (16, 16, 3), 3)


def _with(cfg, **overrides):
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.update(overrides)
  return cfg


# --- tfds (mock data) ---


def test_tfds_source_under_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=24):
    ds = input_pipeline.create_datasets(data_config(source="tfds", name="cifar10", image_size=16),
                                        global_batch_size=8, eval_batch_size=10, seed=0)
    assert (ds.train_size, ds.eval_size, ds.num_classes, ds.image_shape) == (24, 24, 10, (16, 16, 3))
    b = next(ds.train_iterator())
    assert b["image"].dtype == np.uint8 and b["image"].shape == (8, 16, 16, 3)
    assert b["label"].dtype == np.int32 and b["label"].min() >= 0 and b["label"].max() < 10
    assert sum(int(e["mask"].sum()) for e in ds.eval_batches()) == 24
    assert ds.mean.shape == (3,) and np.all(ds.std > 0)
    sub = input_pipeline.create_datasets(data_config(source="tfds", name="cifar10", class_subset=3, num_classes=3),
                                         global_batch_size=2, eval_batch_size=10, seed=0)
    assert sources.source_labels(sub.train).max() < 3 and sub.num_classes == 3


def test_tfds_missing_dataset_says_how_to_build_it(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(FileNotFoundError, match="tfds build cifar100"):
    input_pipeline.create_datasets(data_config(source="tfds", name="cifar100", data_dir=str(tmp_path)),
                                   global_batch_size=8, eval_batch_size=8, seed=0)


# --- the real archives, in the data root ($SVDKD_DATA, else ~/svdkd_data; docs/data.md) ---


def shared(name: str) -> Path:
  try:
    return sources.archives.archive_path(name)
  except FileNotFoundError as e:
    pytest.skip(f"REAL DATA MISSING, these real-data checks did not run: {e}")


@pytest.mark.real_data
@pytest.mark.parametrize("name,split,n,classes,size", [("cifar10_jpeg", "test", 10_000, 10, 32),
                                                      ("tiny_imagenet_100", "val", 5_000, 100, 64)])
def test_shared_archive_eval_split(tmp_path, caplog, name, split, n, classes, size):
  path = shared(name)
  with caplog.at_level(logging.WARNING):
    src = sources.load_archive(path, split, 0, str(tmp_path))  # fresh decode: the sha256 check runs
  assert "differ from the sha256" not in caplog.text, caplog.text
  assert src.images.shape == (n, size, size, 3)
  counts = np.bincount(src.labels, minlength=classes)
  assert len(counts) == classes and counts.min() == counts.max() == n // classes
  meta = json.loads((path / "meta.json").read_text())
  np.testing.assert_allclose(src.images.mean(axis=(0, 1, 2)) / 255, meta[split]["mean"], atol=1e-3)


@pytest.mark.real_data
def test_shared_archive_train_counts_and_resize(tmp_path):
  path = shared("tiny_imagenet_100")
  with np.load(path / "train.npz") as z:
    labels, offsets = z["labels"], z["offsets"]
  assert len(labels) == 50_000 and len(offsets) == 50_001
  assert np.bincount(labels).tolist() == [500] * 100
  small = sources.load_archive(path, "val", 32, str(tmp_path))
  assert small.images.shape == (5000, 32, 32, 3) and small.labels.max() == 99
