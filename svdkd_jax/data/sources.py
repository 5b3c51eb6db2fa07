"""Random-access image-classification sources: bundled digits, local `.npz` JPEG archives, tensorflow-datasets.

Every source has `len(source)`, `source[i] -> {"image": uint8 [H, W, 3], "label": int32 []}` and
`source.gather(indices [n]) -> {"image": uint8 [n, H, W, 3], "label": int32 [n]}`; the batching in
`svdkd_jax.input_pipeline` only uses `gather`, so in-memory sources are read with one fancy-indexing call per batch.
"""

from collections.abc import Callable
import concurrent.futures
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

Example = dict[str, np.ndarray]


class Source(Protocol):

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> Example: ...

  def gather(self, indices: np.ndarray) -> Example: ...


class ArraySource:
  """In-memory source over `images` uint8 [N, H, W, 3] and `labels` int32 [N]."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
      raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1]:
      raise ValueError(f"labels {labels.shape} do not match images {images.shape}")
    self.images = images
    self.labels = labels.astype(np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> Example:
    return {"image": self.images[index], "label": self.labels[index]}

  def gather(self, indices: np.ndarray) -> Example:
    return {"image": self.images[indices], "label": self.labels[indices]}


class Subset:
  """The records `indices` [n] of `parent`, in that order."""

  def __init__(self, parent: Source, indices: np.ndarray):
    self.parent = parent
    self.indices = np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> Example:
    return self.parent[int(self.indices[index])]

  def gather(self, indices: np.ndarray) -> Example:
    return self.parent.gather(self.indices[indices])


def subset(source: Source, indices: np.ndarray) -> Source:
  """A view of `source` restricted to `indices`; copies in-memory arrays (cheap, and keeps `gather` one call)."""
  if isinstance(source, ArraySource):
    return ArraySource(source.images[indices], source.labels[indices])
  return Subset(source, indices)


def source_labels(source: Source) -> np.ndarray:
  """All labels int32 [N] (reads every record of sources that do not hold them in memory)."""
  if isinstance(source, ArraySource):
    return source.labels
  if isinstance(source, Subset):
    return source_labels(source.parent)[source.indices]
  if isinstance(source, TfdsSource):
    return source.labels()
  if isinstance(source, Relabelled):
    return source.labels
  return np.array([source[i]["label"] for i in range(len(source))], np.int32)


def class_subset(source: Source, num_classes: int) -> Source:
  """Keeps the examples whose label is below `num_classes` (the first `num_classes` classes)."""
  return subset(source, np.flatnonzero(source_labels(source) < num_classes))


def holdout_split(source: Source, holdout: int, seed: int = 0) -> tuple[Source, Source]:
  """Splits off the last `holdout` examples of a `seed`ed permutation: returns (train, held-out eval)."""
  if not 0 < holdout < len(source):
    raise ValueError(f"holdout={holdout} must be in (0, {len(source)}) for a train split of {len(source)} examples")
  perm = np.random.default_rng(seed).permutation(len(source))
  return subset(source, np.sort(perm[:-holdout])), subset(source, np.sort(perm[-holdout:]))


def channel_stats(source: Source, max_examples: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std float32 [3] in [0, 255] units.

  Exact over every example of an in-memory source (via 256-bin histograms, no float copy of the data); over
  `max_examples` evenly spaced examples of a record source (tfds), which is deterministic and cheap.
  """
  if isinstance(source, ArraySource):
    images = source.images
  else:
    images = source.gather(np.unique(np.linspace(0, len(source) - 1, min(len(source), max_examples)).astype(int)))
    images = images["image"]
  values = np.arange(256, dtype=np.float64)
  mean, std = [], []
  for c in range(3):
    counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
    m = counts @ values / counts.sum()
    mean.append(m)
    std.append(np.sqrt(counts @ (values - m) ** 2 / counts.sum()))
  return np.array(mean, np.float32), np.array(std, np.float32)


def to_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W] / [H, W, 1] / [H, W, 3] / [H, W, 4] -> uint8 [H, W, 3] (grey replicated, alpha dropped)."""
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes uint8 [H, W, 3] to [size, size, 3] with Pillow's bilinear filter (antialiased when shrinking)."""
  if image.shape[:2] == (size, size):
    return image
  return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 [N, H, W, 3] -> uint8 [N, size, size, 3]."""
  if images.shape[1:3] == (size, size):
    return images
  return _parallel_map(lambda img: resize_image(img, size), images, (size, size, 3))


def _parallel_map(fn: Callable[[Any], np.ndarray], items, shape: tuple[int, ...]) -> np.ndarray:
  """Stacks `fn(item)` uint8 `shape` over `items`, in threads (Pillow releases the GIL while decoding/resizing)."""
  out = np.empty((len(items), *shape), np.uint8)

  def work(chunk: range) -> None:
    for i in chunk:
      out[i] = fn(items[i])

  workers = os.cpu_count() or 1
  step = max(1, -(-len(items) // (4 * workers)))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    list(pool.map(work, [range(i, min(i + step, len(items))) for i in range(0, len(items), step)]))
  return out


# --- digits (scikit-learn's bundled 8x8 handwritten digits: real data, no download) ---

DIGITS_SPLITS = ("train", "test")
DIGITS_TEST_FRACTION = 0.2


def load_digits(split: str, image_size: int = 32) -> ArraySource:
  """scikit-learn's 1,797 handwritten digits as uint8 RGB, 10 classes.

  Pixels 0..16 are scaled to 0..255 and replicated to three channels. Split: a stratified 80/20 split with the
  fixed seed 0 (`train`: 1,437 examples, `test`: 360), identical on every machine.
  """
  if split not in DIGITS_SPLITS:
    raise ValueError(f"digits has splits {DIGITS_SPLITS}, not {split!r}: set config.data.train_split/eval_split")
  from sklearn import datasets, model_selection  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  images = np.repeat(images[..., None], 3, axis=-1)
  train_idx, test_idx = model_selection.train_test_split(
      np.arange(len(images)), test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=0)
  idx = np.sort(train_idx if split == "train" else test_idx)
  images = images[idx]
  if image_size:
    images = resize_images(images, image_size)
  return ArraySource(images, digits.target[idx])


# --- archive: the JPEG-bytes .npz format of ../shared/data/README.md ---


def _sha256(array: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def read_archive_meta(path: str | os.PathLike) -> dict[str, Any]:
  meta_path = Path(path) / "meta.json"
  if not meta_path.is_file():
    raise FileNotFoundError(
        f"No archive at {path!r}: expected {meta_path} and <split>.npz (format in ../shared/data/README.md). "
        "Set config.data.path to such a folder, e.g. --config.data.path=../shared/data/cifar10_jpeg.")
  return json.loads(meta_path.read_text())


def default_cache_dir(path: str | os.PathLike) -> Path:
  """$XDG_CACHE_HOME (default ~/.cache)/svdkd_jax/<archive folder name>.

  Never next to the archive by default: shared data folders are read-only by intent, and a root user would
  otherwise write into them anyway. Set config.data.cache_dir to keep the cache elsewhere.
  """
  base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return Path(base) / "svdkd_jax" / Path(path).resolve().name


def _decode_archive(npz_path: Path, split_meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """Decodes every JPEG with Pillow and checks the sha256 recorded in meta.json."""
  with np.load(npz_path) as z:
    jpeg, offsets, labels = z["jpeg"], z["offsets"], z["labels"]
  if _sha256(labels.astype(np.int16)) != split_meta.get("sha256_labels_int16", _sha256(labels.astype(np.int16))):
    raise ValueError(f"{npz_path}: labels do not match the sha256 in meta.json; the archive is damaged, copy it again")
  shape = tuple(split_meta.get("image_shape") or ())
  if not shape:
    first = Image.open(io.BytesIO(jpeg[offsets[0]:offsets[1]].tobytes())).convert("RGB")
    shape = (first.height, first.width, 3)

  def decode(i: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))

  images = _parallel_map(decode, range(len(labels)), tuple(shape))
  expected = split_meta.get("sha256_decoded_images_pil")
  if expected and _sha256(images) != expected:
    logging.warning("%s: decoded images differ from the sha256 in meta.json (recorded with Pillow 13.0; another "
                    "Pillow/libjpeg may differ by one level in some pixels). Continuing.", npz_path)
  return images, labels.astype(np.int32)


def _cached(cache_path: Path, key: dict[str, Any], build: Callable[[], tuple[np.ndarray, np.ndarray]]
           ) -> tuple[np.ndarray, np.ndarray]:
  """Loads (images, labels) from `cache_path` (.npz + .json checksum) if its key and checksum match, else builds."""
  info_path = cache_path.with_suffix(".json")
  if cache_path.is_file() and info_path.is_file():
    info = json.loads(info_path.read_text())
    if info.get("key") == key:
      with np.load(cache_path) as z:
        images, labels = z["images"], z["labels"]
      if _sha256(images) == info["images_sha256"] and _sha256(labels) == info["labels_sha256"]:
        return images, labels
      logging.warning("Cache %s is corrupt (checksum mismatch); rebuilding it.", cache_path)
  images, labels = build()
  try:
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, images=images, labels=labels)
    os.replace(tmp, cache_path)  # atomic: concurrent runs never read a half-written cache
    info = {"key": key, "images_sha256": _sha256(images), "labels_sha256": _sha256(labels)}
    tmp_info = info_path.with_suffix(f".tmp{os.getpid()}.json")
    tmp_info.write_text(json.dumps(info, indent=1))
    os.replace(tmp_info, info_path)
  except OSError as e:
    logging.warning("Could not write the cache %s (%s); set config.data.cache_dir to a writable folder.", cache_path, e)
  return images, labels


def load_archive(path: str | os.PathLike, split: str, image_size: int = 0, cache_dir: str = "") -> ArraySource:
  """One split of a JPEG `.npz` archive, decoded once and cached as uint8 (resized copy cached too)."""
  meta = read_archive_meta(path)
  splits = [k for k, v in meta.items() if isinstance(v, dict) and "file" in v]
  if split not in splits:
    raise ValueError(f"Archive {path} has splits {splits}, not {split!r}: set config.data.train_split/eval_split")
  split_meta = meta[split]
  npz_path = Path(path) / split_meta["file"]
  if not npz_path.is_file():
    raise FileNotFoundError(f"{npz_path} is listed in meta.json but missing; copy the archive again")
  cache = Path(cache_dir) if cache_dir else default_cache_dir(path)
  name = meta.get("name", Path(path).name)
  key = {"archive": str(npz_path.resolve()), "bytes": npz_path.stat().st_size,
         "sha256_decoded_images_pil": split_meta.get("sha256_decoded_images_pil", "")}
  native = lambda: _decode_archive(npz_path, split_meta)  # pylint: disable=unnecessary-lambda-assignment
  images, labels = _cached(cache / f"{name}_{split}_native.npz", key, native)
  if image_size and images.shape[1:3] != (image_size, image_size):
    resized = lambda: (resize_images(images, image_size), labels)  # pylint: disable=unnecessary-lambda-assignment
    images, labels = _cached(cache / f"{name}_{split}_{image_size}.npz", {**key, "size": image_size}, resized)
  num_classes = len(meta.get("classes", ())) or int(labels.max()) + 1
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"{npz_path}: labels span [{labels.min()}, {labels.max()}] but meta.json lists {num_classes} "
                     "classes; the archive is inconsistent")
  return ArraySource(images, labels)


def archive_num_classes(path: str | os.PathLike) -> int:
  return len(read_archive_meta(path)["classes"])


# --- tfds: tensorflow-datasets through tfds.data_source (array_record, no TensorFlow at run time) ---


class TfdsSource:
  """A tfds random-access data source as uint8 RGB [size, size, 3] examples (resized with Pillow if needed)."""

  def __init__(self, data_source, image_size: int, image_key: str = "image", label_key: str = "label",
               labels_fn: Callable[[], np.ndarray] | None = None):
    self.data_source = data_source
    self.image_size = image_size
    self.image_key, self.label_key = image_key, label_key
    self._labels_fn = labels_fn
    self._labels = None

  def __len__(self) -> int:
    return len(self.data_source)

  def __getitem__(self, index: int) -> Example:
    ex = self.data_source[int(index)]
    image = to_rgb(np.asarray(ex[self.image_key]))
    if self.image_size:
      image = resize_image(image, self.image_size)
    return {"image": image, "label": np.int32(ex[self.label_key])}

  def gather(self, indices: np.ndarray) -> Example:
    examples = [self[i] for i in indices]
    return {"image": np.stack([e["image"] for e in examples]), "label": np.array([e["label"] for e in examples])}

  def labels(self) -> np.ndarray:
    """int32 [N], read once without decoding the images."""
    if self._labels is None:
      self._labels = self._labels_fn() if self._labels_fn else np.array(
          [self.data_source[i][self.label_key] for i in range(len(self))], np.int32)
    return self._labels


def _tfds_missing(name: str, data_dir: str, cause: Exception) -> FileNotFoundError:
  where = f"--data_dir {data_dir}" if data_dir else "(default ~/tensorflow_datasets)"
  return FileNotFoundError(
      f"tfds dataset {name!r} is not prepared in {data_dir or '~/tensorflow_datasets'} ({type(cause).__name__}: "
      f"{str(cause)[:200]}). On a machine with internet run once:\n"
      f"  pip install tensorflow && tfds build {name} {where} --file_format=array_record\n"
      f"then copy that folder here or point config.data.data_dir at it (a gs:// path works), or use "
      f"config.data.source='archive' / 'digits' offline.")


def load_tfds(name: str, split: str, data_dir: str = "", image_size: int = 0, image_key: str = "image",
              label_key: str = "label") -> tuple[TfdsSource, int]:
  """`tfds.data_source(name, split=split)` as a `TfdsSource`; returns it and the number of classes."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"Unknown tfds dataset {name!r}: check config.data.name (see `tfds.list_builders()`)") from e
  splits = list(builder.info.splits.keys())
  base = split.split("[")[0]
  if splits and base not in splits:  # (tfds.testing.mock_data reports no splits: nothing to check then)
    raise ValueError(f"tfds dataset {name!r} has splits {splits}, not {base!r}: set config.data.train_split/eval_split")
  try:
    data_source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
  except (ValueError, KeyError) as e:
    raise ValueError(f"tfds dataset {name!r}: bad split {split!r} ({e})") from e
  except Exception as e:  # tfds raises several unrelated types for "not there" (NotImplementedError, AssertionError)
    raise _tfds_missing(name, data_dir, e) from e

  def labels() -> np.ndarray:
    try:  # skipping the image decoding needs TensorFlow; without it, every record is read in full
      skip = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False,
                              decoders={image_key: tfds.decode.SkipDecoding()})
      return np.array([skip[i][label_key] for i in range(len(skip))], np.int32)
    except ImportError:
      return np.array([data_source[i][label_key] for i in range(len(data_source))], np.int32)

  shape = builder.info.features[image_key].shape
  if not image_size and (None in shape[:2]):
    raise ValueError(f"tfds dataset {name!r} has images of varying size {shape}: set config.data.image_size")
  num_classes = builder.info.features[label_key].num_classes
  return TfdsSource(data_source, image_size, image_key, label_key, labels), num_classes


UNLABELLED = -1  # label of a training image whose label is withheld (a label budget); it still feeds distillation


def per_class_draw(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  """Sorted indices [C * per_class] of a seeded draw of `per_class` examples of every class in `labels` [N].

  The draw depends on `seed` and the labels only (not on a run's seed), so every run of a table sees the same
  examples. A class with fewer than `per_class` examples raises a ValueError naming it.
  """
  rng = np.random.default_rng(seed)
  chosen = []
  for c in np.unique(labels[labels >= 0]):
    members = np.flatnonzero(labels == c)
    if len(members) < per_class:
      raise ValueError(f"Class {c} has {len(members)} training examples, fewer than the {per_class} asked for.")
    chosen.append(rng.choice(members, per_class, replace=False))
  return np.sort(np.concatenate(chosen))


def withhold_labels(source: Source, keep: np.ndarray) -> Source:
  """`source` with every label outside the indices `keep` replaced by UNLABELLED (images unchanged)."""
  labels = np.full(len(source), UNLABELLED, np.int32)
  labels[keep] = source_labels(source)[keep]
  return Relabelled(source, labels)


class Relabelled:
  """The images of `parent` with the labels `labels` [N] (a label budget)."""

  def __init__(self, parent: Source, labels: np.ndarray):
    if len(labels) != len(parent):
      raise ValueError(f"{len(labels)} labels for a source of {len(parent)} examples")
    self.parent, self.labels = parent, np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> Example:
    return {"image": self.parent[index]["image"], "label": self.labels[index]}

  def gather(self, indices: np.ndarray) -> Example:
    return {"image": self.parent.gather(indices)["image"], "label": self.labels[indices]}
