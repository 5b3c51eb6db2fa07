"""JPEG `.npz` archives: where they are found (the data root) and how one is written. The format is in docs/data.md.

An archive is a folder holding `meta.json` and one `<split>.npz` per split. `config.data.path` names one either by
its folder name alone (`cifar10_jpeg`: looked up in the data root, so configs and run records hold no machine path)
or by a path (`./my_archive`, `/data/cifar10_jpeg`: used as given). The data root is `$SVDKD_DATA`, else
`~/svdkd_data`. Reading an archive is `svdkd_jax.data.sources.load_archive`; building one from image folders is
`python -m svdkd_jax.data.convert`.
"""

from collections.abc import Callable, Iterable, Sequence
import concurrent.futures
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DATA_ENV = "SVDKD_DATA"
DEFAULT_DATA_ROOT = "~/svdkd_data"
CONVERT_HINT = "build one with `python -m svdkd_jax.data.convert` (docs/data.md)"


class ArchiveNotFoundError(FileNotFoundError):
  """An archive name that is not in the data root; the message names both places a root is taken from."""


def data_root() -> Path:
  """`$SVDKD_DATA`, else `~/svdkd_data` (expanded; it need not exist)."""
  return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_ROOT).expanduser()


def is_name(path: str | os.PathLike) -> bool:
  """True for a bare archive name (no folder separator, not `.`/`..`/`~...`): it is looked up in the data root."""
  path = os.fspath(path)
  return bool(path) and "/" not in path and os.sep not in path and path not in (".", "..") and path[0] != "~"


def archive_path(path: str | os.PathLike) -> Path:
  """The folder of the archive `path`: a bare name is looked up in the data root, a path is used as given.

  Raises ArchiveNotFoundError (one line, naming `$SVDKD_DATA` and `~/svdkd_data`) when a name is not there; a path
  that holds no archive is reported by the reader (`sources.read_archive_meta`).
  """
  if not is_name(path):
    return Path(path).expanduser()
  folder = data_root() / os.fspath(path)
  if not (folder / "meta.json").is_file():
    raise ArchiveNotFoundError(
        f"No archive {os.fspath(path)!r} in {data_root()} (the data root: ${DATA_ENV}, else {DEFAULT_DATA_ROOT}): "
        f"put its folder there or point ${DATA_ENV} at the folder holding it, {CONVERT_HINT}, or set "
        "config.data.path to the archive's folder.")
  return folder


def output_path(path: str | os.PathLike) -> Path:
  """Where a new archive `path` goes: a bare name in the data root, a path as given (like `archive_path`)."""
  return data_root() / os.fspath(path) if is_name(path) else Path(path).expanduser()


# --- writing: one split at a time, images streamed (never all decoded in memory at once) ---


def _sha256_hex(chunks: Iterable[bytes]) -> str:
  digest = hashlib.sha256()
  for chunk in chunks:
    digest.update(chunk)
  return digest.hexdigest()


def decode_rgb(data: bytes, where: str, error: Callable[[str], Exception]) -> np.ndarray:
  """uint8 [H, W, 3] of JPEG bytes `data` (grey and CMYK converted to RGB, as the reader does); `error(message)`
  is raised, naming `where`, for bytes that are not a decodable JPEG."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      kind = image.format
      pixels = np.asarray(image.convert("RGB")) if kind == "JPEG" else None
  except (OSError, ValueError, Image.DecompressionBombError) as e:  # PIL.UnidentifiedImageError is an OSError
    raise error(f"{where} does not decode as an image ({type(e).__name__}: {e}).") from None
  if pixels is None:
    raise error(f"{where} is {kind}, not JPEG: archives hold JPEG files as they are.")
  return pixels


def write_split(folder: Path, split: str, files: Sequence[Path], labels: Sequence[int], num_classes: int, *,
                error: Callable[[str], Exception] = ValueError,
                progress: Callable[[Iterable, int, str], Iterable] = lambda it, total, desc: it) -> dict[str, Any]:
  """Writes `folder/<split>.npz` from the JPEG `files` (bytes copied as they are) and `labels` (class indices);
  returns the split's meta.json entry.

  Every file is decoded once (in threads; Pillow releases the GIL) to check it and to record the decoded images'
  sha256, per-channel mean and std. All images must have one size (the reader serves one array per split).
  `error(message)` is what a bad input raises; `progress(iterable, total, description)` wraps the decoding loop.
  """
  if not len(files):
    raise error(f"split {split!r} has no images.")
  blobs = [Path(f).read_bytes() for f in progress(files, len(files), f"{split}: reading")]
  return write_blobs(folder, split, blobs, [str(f) for f in files], labels, num_classes, error=error,
                     progress=progress)


def write_blobs(folder: Path, split: str, blobs: Sequence[bytes], names: Sequence[str], labels: Sequence[int],
                num_classes: int, *, error: Callable[[str], Exception] = ValueError,
                progress: Callable[[Iterable, int, str], Iterable] = lambda it, total, desc: it) -> dict[str, Any]:
  """`write_split` from the JPEG files' bytes `blobs` (named `names` in errors): the same checks, file and entry."""
  labels = np.asarray(labels, np.int16)
  if not len(blobs):
    raise error(f"split {split!r} has no images.")
  digest = hashlib.sha256()
  total, squares, shape = np.zeros(3, np.int64), np.zeros(3, np.int64), None

  def decode(i: int) -> np.ndarray:
    return decode_rgb(blobs[i], names[i], error)

  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    for i, image in enumerate(progress(pool.map(decode, range(len(blobs))), len(blobs), f"{split}: checking")):
      if shape is None:
        shape = image.shape
      elif image.shape != shape:
        raise error(f"{names[i]} is {image.shape[1]}x{image.shape[0]} but {names[0]} is {shape[1]}x{shape[0]}: an "
                    "archive split holds one image size.")
      digest.update(np.ascontiguousarray(image).data)  # the bytes of the stacked uint8 [n, H, W, 3] array, in order
      pixels = image.reshape(-1, 3).astype(np.int64)
      total += pixels.sum(0)
      squares += (pixels * pixels).sum(0)
  count = len(blobs) * shape[0] * shape[1]
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
  offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
  npz_path = folder / f"{split}.npz"
  tmp = folder / f"{split}.tmp{os.getpid()}.npz"
  np.savez(tmp, jpeg=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets, labels=labels)
  os.replace(tmp, npz_path)
  per_class = np.bincount(labels, minlength=num_classes)
  return {"n": len(blobs), "image_shape": list(shape), "per_class_min": int(per_class.min()),
          "per_class_max": int(per_class.max()), "mean": [round(float(m) / 255, 4) for m in mean],
          "std": [round(float(s) / 255, 4) for s in std], "sha256_decoded_images_pil": digest.hexdigest(),
          "sha256_labels_int16": _sha256_hex([labels.tobytes()]), "file": npz_path.name,
          "bytes": npz_path.stat().st_size}


def write_meta(folder: Path, meta: dict[str, Any]) -> Path:
  """Writes `folder/meta.json` atomically (written last, so a folder with a meta.json is a complete archive)."""
  path = folder / "meta.json"
  tmp = folder / f"meta.tmp{os.getpid()}.json"
  tmp.write_text(json.dumps(meta, indent=1) + "\n")
  os.replace(tmp, path)
  return path
