"""Random-access image-classification sources: bundled digits, local `.npz` JPEG archives, tensorflow-datasets.

Every source has `len(source)`, `source[i] -> {"image": uint8 [H, W, 3], "label": int32 []}` and
`source.gather(indices [n]) -> {"image": uint8 [n, H, W, 3], "label": int32 [n]}`; the batching in
`svdkd_jax.input_pipeline` only uses `gather`, so in-memory sources are read with one fancy-indexing call per batch.

Bad data fails at load time with a `DataError` (a ValueError) naming the file or split, what is wrong and how to
fix it: a damaged archive, labels outside [0, num_classes), images that are not uint8 [H, W, 3] of one size.
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
import zipfile
import zlib

import numpy as np
from PIL import Image

from svdkd_jax.data import archives

Example = dict[str, np.ndarray]


class DataError(ValueError):
  """Data that cannot be used as it is; the message names the file or split, the problem and the fix."""


class Source(Protocol):
  """A random-access source of examples (module docstring)."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> Example: ...

  def gather(self, indices: np.ndarray) -> Example:
    """The records `indices` [n] as one batch: `{"image": uint8 [n, H, W, 3], "label": int32 [n]}`."""


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
    """`indices` [n] -> `{"image": uint8 [n, H, W, 3], "label": int32 [n]}`, one fancy-indexing call per array."""
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
    """`indices` [n] into the subset -> the parent's `gather`: `{"image": uint8 [n, H, W, 3], "label": int32 [n]}`."""
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


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
  """Raises DataError unless `labels` are integers in [0, num_classes); `where` names the split or file."""
  labels = np.asarray(labels)
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{where}: labels must be integers, got {labels.dtype}.")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    count = f" ({len(bad)} outside, first at index {bad[0]})" if labels.size > 1 else ""
    raise DataError(f"{where}: labels must be in [0, {num_classes}) ({num_classes} classes) but span "
                    f"[{labels.min()}, {labels.max()}]{count}: the data and its class list disagree; fix or rebuild "
                    "the data.")


def check_image(image: np.ndarray, shape: tuple[int, ...] | None, where: str) -> None:
  """Raises DataError unless `image` is uint8 [H, W, 3] (and of `shape`, when given)."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise DataError(f"{where}: images must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}.")
  if shape is not None and tuple(image.shape) != tuple(shape):
    raise DataError(f"{where}: image is {list(image.shape)} but the others are {list(shape)}: the split mixes image "
                    "sizes; set config.data.image_size to resize them, or rebuild the data with one size.")


def check_split(source: Source, split: str, num_classes: int) -> None:
  """Raises DataError naming `split` unless its labels are in [0, num_classes) and its images uint8 [H, W, 3] of
  one size. Complete for in-memory sources; a record source (tfds) is checked on its first record and on the
  labels if already read (each record it reads later is checked as it is read, see `TfdsSource`)."""
  where = f"split {split!r}"
  if isinstance(source, ArraySource):  # (its constructor already requires uint8 [N, H, W, 3] images)
    check_labels(source.labels, num_classes, where)
    return
  if len(source):
    first = source[0]
    check_image(first["image"], None, where)
    check_labels(np.asarray([first["label"]]), num_classes, where)
  if isinstance(source, TfdsSource) and source._labels is not None:  # pylint: disable=protected-access
    check_labels(source._labels, num_classes, where)  # pylint: disable=protected-access


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


# --- archive: the JPEG-bytes .npz format of docs/data.md, found through `archives.archive_path` ---

ARCHIVE_FIX = (f"Copy the archive again, or {archives.CONVERT_HINT}, or set config.data.path to a good copy.")


def _sha256(array: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def read_archive_meta(path: str | os.PathLike) -> dict[str, Any]:
  """meta.json of the archive `path` (a name in the data root or a folder, see `archives.archive_path`)."""
  meta_path = archives.archive_path(path) / "meta.json"
  if not meta_path.is_file():
    raise FileNotFoundError(
        f"No archive at {os.fspath(path)!r}: expected {meta_path} and <split>.npz (docs/data.md). Set "
        "config.data.path to an archive name in the data root (e.g. cifar10_jpeg) or to such a folder, or "
        f"{archives.CONVERT_HINT}.")
  try:
    meta = json.loads(meta_path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{meta_path} is not valid JSON ({e}): the archive's index is damaged. {ARCHIVE_FIX}") from None
  if not isinstance(meta, dict):
    raise DataError(f"{meta_path} is not a JSON object: the archive's index is damaged. {ARCHIVE_FIX}")
  return meta


def default_cache_dir(path: str | os.PathLike) -> Path:
  """$XDG_CACHE_HOME (default ~/.cache)/svdkd_jax/<archive folder name>.

  Never next to the archive by default: shared data folders are read-only by intent, and a root user would
  otherwise write into them anyway. Set config.data.cache_dir to keep the cache elsewhere.
  """
  base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return Path(base) / "svdkd_jax" / Path(path).resolve().name


def _check_size(npz_path: Path, split_meta: dict[str, Any]) -> int:
  """The file's size; DataError if meta.json records another (a cut-short copy, found without reading it)."""
  size, expected = npz_path.stat().st_size, split_meta.get("bytes")
  if expected is not None and size != expected:
    raise DataError(f"{npz_path} has {size:,} bytes but meta.json records {expected:,}: the file is "
                    f"{'cut short' if size < expected else 'damaged'} (an interrupted copy?). {ARCHIVE_FIX}")
  return size


def _read_npz(npz_path: Path, split_meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(jpeg, offsets, labels) of one split, checked against meta.json; DataError naming the file if damaged."""
  size = _check_size(npz_path, split_meta)
  try:
    with np.load(npz_path) as z:
      missing = sorted({"jpeg", "offsets", "labels"} - set(z.files))
      if not missing:
        jpeg, offsets, labels = z["jpeg"], z["offsets"], z["labels"]
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
    # numpy reports a cut-short or overwritten zip as any of these, from deep inside zipfile.
    raise DataError(f"{npz_path} is not a readable .npz ({type(e).__name__}: {e}; {size:,} bytes): the file is cut "
                    f"short or damaged. {ARCHIVE_FIX}") from None
  if missing:
    raise DataError(f"{npz_path} lacks the arrays {missing} of the archive format. {ARCHIVE_FIX}")
  n = len(labels)
  if split_meta.get("n", n) != n or offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != len(jpeg) \
      or np.any(np.diff(offsets) <= 0):
    raise DataError(f"{npz_path}: {n} labels, {len(offsets)} offsets and {len(jpeg):,} JPEG bytes do not agree "
                    f"(meta.json: n={split_meta.get('n')}): the file is damaged. {ARCHIVE_FIX}")
  if "sha256_labels_int16" in split_meta and _sha256(labels.astype(np.int16)) != split_meta["sha256_labels_int16"]:
    raise DataError(f"{npz_path}: labels do not match the sha256 in meta.json: the archive is damaged. {ARCHIVE_FIX}")
  return jpeg, offsets, labels


def _decode_archive(npz_path: Path, split_meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """Decodes every JPEG with Pillow and checks the sha256 recorded in meta.json."""
  jpeg, offsets, labels = _read_npz(npz_path, split_meta)

  def decode(i: int) -> np.ndarray:
    try:
      return np.asarray(Image.open(io.BytesIO(jpeg[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # PIL.UnidentifiedImageError is an OSError
      raise DataError(f"{npz_path}: image {i} does not decode ({type(e).__name__}: {e}): the archive is damaged. "
                      f"{ARCHIVE_FIX}") from None

  shape = tuple(split_meta.get("image_shape") or ()) or decode(0).shape

  def decode_checked(i: int) -> np.ndarray:
    image = decode(i)
    check_image(image, shape, f"{npz_path} image {i}")
    return image

  images = _parallel_map(decode_checked, range(len(labels)), tuple(shape))
  expected = split_meta.get("sha256_decoded_images_pil")
  if expected and _sha256(images) != expected:
    logging.warning("%s: decoded images differ from the sha256 in meta.json (recorded with Pillow 13.0; another "
                    "Pillow/libjpeg may differ by one level in some pixels). Continuing.", npz_path)
  return images, labels.astype(np.int32)


def _load_cache(cache_path: Path, key: dict[str, Any], expect: Callable[[np.ndarray, np.ndarray], bool]
               ) -> tuple[np.ndarray, np.ndarray] | None:
  """The cached (images, labels) if its key matches, its checksums hold and `expect` accepts them; else None."""
  info_path = cache_path.with_suffix(".json")
  if not (cache_path.is_file() and info_path.is_file()):
    return None
  try:
    info = json.loads(info_path.read_text())
    if info.get("key") != key:
      return None  # Built from another version of the archive (or another resize): rebuild.
    with np.load(cache_path) as z:
      images, labels = z["images"], z["labels"]
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    logging.warning("Cache %s is unreadable (%s: %s); rebuilding it.", cache_path, type(e).__name__, e)
    return None
  if _sha256(images) != info.get("images_sha256") or _sha256(labels) != info.get("labels_sha256") \
      or not expect(images, labels):
    logging.warning("Cache %s is corrupt (checksum or shape mismatch); rebuilding it.", cache_path)
    return None
  return images, labels


def _cached(cache_path: Path, key: dict[str, Any], build: Callable[[], tuple[np.ndarray, np.ndarray]],
            expect: Callable[[np.ndarray, np.ndarray], bool] = lambda images, labels: True
           ) -> tuple[np.ndarray, np.ndarray]:
  """Loads (images, labels) from `cache_path` (.npz + .json checksum) if valid (see `_load_cache`), else builds."""
  cached = _load_cache(cache_path, key, expect)
  if cached is not None:
    return cached
  images, labels = build()
  info_path = cache_path.with_suffix(".json")
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
  """One split of the JPEG `.npz` archive `path` (a name in the data root or a folder, see
  `archives.archive_path`), decoded once and cached as uint8 (resized copy cached too).

  The cache is keyed by the archive file's path, size and modification time and the checksums in meta.json, and
  checked against meta.json's counts and label checksum when read: a cache of another version of the archive is
  rebuilt, never used. Raises DataError naming the file for a damaged archive or labels outside its class list.
  """
  path = archives.archive_path(path)
  meta = read_archive_meta(path)
  splits = [k for k, v in meta.items() if isinstance(v, dict) and "file" in v]
  if split not in splits:
    raise ValueError(f"Archive {path} has splits {splits}, not {split!r}: set config.data.train_split/eval_split")
  split_meta = meta[split]
  npz_path = Path(path) / split_meta["file"]
  if not npz_path.is_file():
    raise FileNotFoundError(f"{npz_path} is listed in meta.json but missing. {ARCHIVE_FIX}")
  _check_size(npz_path, split_meta)  # Before the cache: a damaged archive is reported even when a cache exists.
  stat = npz_path.stat()
  cache = Path(cache_dir) if cache_dir else default_cache_dir(path)
  name = meta.get("name", Path(path).name)
  key = {"archive": str(npz_path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
         "sha256_decoded_images_pil": split_meta.get("sha256_decoded_images_pil", ""),
         "sha256_labels_int16": split_meta.get("sha256_labels_int16", "")}
  n, shape = split_meta.get("n"), tuple(split_meta.get("image_shape") or ())

  def expect(size: int) -> Callable[[np.ndarray, np.ndarray], bool]:
    def ok(images: np.ndarray, labels: np.ndarray) -> bool:
      want = (size, size, 3) if size else shape
      return (images.dtype == np.uint8 and images.ndim == 4 and (n is None or len(images) == len(labels) == n)
              and (not want or images.shape[1:] == want)
              and (not key["sha256_labels_int16"] or _sha256(labels.astype(np.int16)) == key["sha256_labels_int16"]))
    return ok

  native = lambda: _decode_archive(npz_path, split_meta)  # pylint: disable=unnecessary-lambda-assignment
  images, labels = _cached(cache / f"{name}_{split}_native.npz", key, native, expect(0))
  if image_size and images.shape[1:3] != (image_size, image_size):
    resized = lambda: (resize_images(images, image_size), labels)  # pylint: disable=unnecessary-lambda-assignment
    images, labels = _cached(cache / f"{name}_{split}_{image_size}.npz", {**key, "size": image_size}, resized,
                             expect(image_size))
  num_classes = len(meta.get("classes", ())) or (int(labels.max()) + 1 if len(labels) else 0)
  check_labels(labels, num_classes, f"{npz_path} (split {split!r}; meta.json lists {num_classes} classes)")
  return ArraySource(images, labels)


def archive_num_classes(path: str | os.PathLike) -> int:
  """The number of classes the archive `path` lists in its meta.json (`read_archive_meta`)."""
  return len(read_archive_meta(path)["classes"])


# --- tfds: tensorflow-datasets through tfds.data_source (array_record, no TensorFlow at run time) ---


class TfdsSource:
  """A tfds random-access data source as uint8 RGB [size, size, 3] examples (resized with Pillow if needed).

  With `num_classes`, every record read is checked (uint8 image, label in [0, num_classes), one image size when
  not resized) and a bad one raises DataError naming `split` and the record index.
  """

  def __init__(self, data_source, image_size: int, image_key: str = "image", label_key: str = "label",
               labels_fn: Callable[[], np.ndarray] | None = None, *, split: str = "", num_classes: int = 0):
    self.data_source = data_source
    self.image_size = image_size
    self.image_key, self.label_key = image_key, label_key
    self.split, self.num_classes = split, num_classes
    self._labels_fn = labels_fn
    self._labels = None
    self._shape = None  # of the first record read, when images are not resized

  def __len__(self) -> int:
    return len(self.data_source)

  def __getitem__(self, index: int) -> Example:
    ex = self.data_source[int(index)]
    raw = np.asarray(ex[self.image_key])
    where = f"split {self.split!r} record {int(index)}"
    if raw.dtype != np.uint8:  # to_rgb would cast, e.g. floats in [0, 1] to zeros
      raise DataError(f"{where}: images must be uint8, got {raw.dtype} (check config.data.image_key).")
    image = to_rgb(raw)
    if self.image_size:
      image = resize_image(image, self.image_size)
    elif self.num_classes:
      self._shape = self._shape or image.shape
      check_image(image, self._shape, where)
    label = np.asarray(ex[self.label_key])
    if self.num_classes:
      check_labels(label.reshape(-1), self.num_classes, where)
    return {"image": image, "label": np.int32(label)}

  def gather(self, indices: np.ndarray) -> Example:
    """`indices` [n] -> `{"image": uint8 [n, H, W, 3], "label": int32 [n]}`, reading one record at a time."""
    examples = [self[i] for i in indices]
    return {"image": np.stack([e["image"] for e in examples]), "label": np.array([e["label"] for e in examples])}

  def labels(self) -> np.ndarray:
    """int32 [N], read once without decoding the images."""
    if self._labels is None:
      labels = self._labels_fn() if self._labels_fn else np.array(
          [self.data_source[i][self.label_key] for i in range(len(self))], np.int32)
      if self.num_classes:
        check_labels(labels, self.num_classes, f"split {self.split!r}")
      self._labels = labels
    return self._labels


def _tfds_missing(name: str, data_dir: str, cause: Exception) -> FileNotFoundError:
  where = f"--data_dir {data_dir}" if data_dir else "(default ~/tensorflow_datasets)"
  return FileNotFoundError(
      f"tfds dataset {name!r} is not prepared in {data_dir or '~/tensorflow_datasets'} ({type(cause).__name__}: "
      f"{' '.join(str(cause).split())[:200]}). On a machine with internet run once "
      f"`pip install tensorflow && tfds build {name} {where} --file_format=array_record`, "
      f"then copy that folder here or point config.data.data_dir at it (a gs:// path works), or use "
      f"config.data.source='archive' / 'digits' offline.")  # One line: main.py prints it as `error: ...`.


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
  source = TfdsSource(data_source, image_size, image_key, label_key, labels, split=split, num_classes=num_classes)
  check_split(source, split, num_classes)
  return source, num_classes


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
    """`indices` [n] -> `{"image": uint8 [n, H, W, 3], "label": int32 [n]}`: the parent's images, these labels."""
    return {"image": self.parent.gather(indices)["image"], "label": self.labels[indices]}
