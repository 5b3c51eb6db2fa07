"""Bad data fails at load time with one clear line: damaged archives, stale caches, labels or images out of spec."""

import io
import json
import logging
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from svdkd_jax.data import sources
from test_input_pipeline import write_archive  # pylint: disable=g-bad-import-order

ROOT = Path(__file__).resolve().parents[1]


def _set_meta(folder: Path, **split_fields) -> None:
  meta = json.loads((folder / "meta.json").read_text())
  meta["train"].update(split_fields)
  (folder / "meta.json").write_text(json.dumps(meta))


def replace_image(arch, index: int, shape: tuple[int, int]) -> None:
  """Rewrites image `index` of the archive's train.npz as a black JPEG of `shape` (H, W)."""
  with np.load(arch / "train.npz") as z:
    jpeg, offsets, labels = z["jpeg"], z["offsets"], z["labels"]
  blobs = [jpeg[offsets[i]:offsets[i + 1]] for i in range(len(labels))]
  buf = io.BytesIO()
  Image.fromarray(np.zeros((*shape, 3), np.uint8)).save(buf, format="JPEG")
  blobs[index] = np.frombuffer(buf.getvalue(), np.uint8)
  offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
  np.savez(arch / "train.npz", jpeg=np.concatenate(blobs), offsets=offsets, labels=labels)


def test_truncated_archive_is_a_clear_error(tmp_path):
  arch = tmp_path / "arch"
  write_archive(arch)
  npz = arch / "train.npz"
  full = npz.read_bytes()
  npz.write_bytes(full[: len(full) // 2])  # a copy cut short
  cut = len(full) // 2
  # Without a recorded size: numpy's zipfile error becomes a DataError naming the file.
  with pytest.raises(sources.DataError) as e:
    sources.load_archive(arch, "train", 0, str(tmp_path / "cache"))
  assert str(e.value) == (
      f"{npz} is not a readable .npz (BadZipFile: File is not a zip file; {cut:,} bytes): the file is cut short or "
      f"damaged. {sources.ARCHIVE_FIX}")
  # With meta.json's size (as the converter records it): found by the size, before reading anything.
  _set_meta(arch, bytes=len(full))
  with pytest.raises(sources.DataError) as e:
    sources.load_archive(arch, "train", 0, str(tmp_path / "cache"))
  assert str(e.value) == (f"{npz} has {cut:,} bytes but meta.json records {len(full):,}: the file is cut short (an "
                          f"interrupted copy?). {sources.ARCHIVE_FIX}")
  # A good copy loads again.
  npz.write_bytes(full)
  assert len(sources.load_archive(arch, "train", 0, str(tmp_path / "cache"))) == 12


def test_truncated_archive_from_the_command_line(tmp_path):
  """The real entry point: one `error:` line, exit status 2, no traceback."""
  arch = tmp_path / "arch"
  write_archive(arch, n=12, size=32, num_classes=2)
  npz = arch / "train.npz"
  npz.write_bytes(npz.read_bytes()[:1000])
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTEST_CURRENT_TEST", "SVDKD_TRACEBACK")}
  proc = subprocess.run(
      [sys.executable, "-m", "svdkd_jax.main", "--config", "configs/quickstart.py:student", "--workdir",
       str(tmp_path / "run"), "--config.data.source=archive", f"--config.data.path={arch}",
       f"--config.data.cache_dir={tmp_path / 'cache'}", "--config.data.num_classes=2"],
      env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert errors == [f"error: {npz} is not a readable .npz (BadZipFile: File is not a zip file; 1,000 bytes): the "
                    f"file is cut short or damaged. {sources.ARCHIVE_FIX}"]


def _main_on_archive(tmp_path, arch):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTEST_CURRENT_TEST", "SVDKD_TRACEBACK")}
  return subprocess.run(
      [sys.executable, "-m", "svdkd_jax.main", "--config", "configs/quickstart.py:student", "--workdir",
       str(tmp_path / "run"), "--config.data.source=archive", f"--config.data.path={arch}",
       f"--config.data.cache_dir={tmp_path / 'cache'}", "--config.data.num_classes=2"],
      env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_labels_out_of_range_and_mixed_sizes_from_the_command_line(tmp_path):
  """The real entry point on an archive whose labels exceed its classes, then on one mixing image sizes: one
  `error:` line each (a DataError is a ValueError), exit status 2, no traceback, no training started."""
  arch = tmp_path / "labels"
  write_archive(arch, n=12, size=32, num_classes=3)  # labels 0, 1, 2 ...
  meta = json.loads((arch / "meta.json").read_text())
  meta["classes"] = ["c0", "c1"]  # ... but two classes listed
  (arch / "meta.json").write_text(json.dumps(meta))
  proc = _main_on_archive(tmp_path, arch)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
      f"error: {arch / 'train.npz'} (split 'train'; meta.json lists 2 classes): labels must be in [0, 2) (2 classes) "
      "but span [0, 2] (4 outside, first at index 2): the data and its class list disagree; fix or rebuild the data."]
  arch = tmp_path / "sizes"
  write_archive(arch, n=12, size=32, num_classes=2)
  replace_image(arch, 7, (32, 40))
  proc = _main_on_archive(tmp_path, arch)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
      f"error: {arch / 'train.npz'} image 7: image is [32, 40, 3] but the others are [32, 32, 3]: the split mixes "
      "image sizes; set config.data.image_size to resize them, or rebuild the data with one size."]
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_damaged_jpeg_names_the_image(tmp_path):
  arch = tmp_path / "arch"
  write_archive(arch)
  with np.load(arch / "train.npz") as z:
    jpeg, offsets, labels = z["jpeg"].copy(), z["offsets"], z["labels"]
  jpeg[offsets[5]:offsets[5] + 16] = 0  # overwrite image 5's JPEG header
  np.savez(arch / "train.npz", jpeg=jpeg, offsets=offsets, labels=labels)
  with pytest.raises(sources.DataError, match=r"train.npz: image 5 does not decode \(UnidentifiedImageError: .*"
                                              r"the archive is damaged. Copy the archive again"):
    sources.load_archive(arch, "train", 0, str(tmp_path / "cache"))


def test_cache_of_another_archive_version_is_rebuilt(tmp_path, caplog):
  arch, cache = tmp_path / "arch", tmp_path / "cache"
  write_archive(arch)
  first = sources.load_archive(arch, "train", 0, str(cache))
  # The archive is replaced by another version (other images); the cache of the first must not be served.
  rng = np.random.default_rng(1)
  blobs = []
  for _ in range(12):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=75)
    blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
  offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
  labels = (np.arange(12) % 3).astype(np.int16)
  np.savez(arch / "train.npz", jpeg=np.concatenate(blobs), offsets=offsets, labels=labels)
  expected = np.stack([np.asarray(Image.open(io.BytesIO(b.tobytes())).convert("RGB")) for b in blobs])
  _set_meta(arch, sha256_decoded_images_pil=sources._sha256(expected))
  second = sources.load_archive(arch, "train", 0, str(cache))
  np.testing.assert_array_equal(second.images, expected)
  assert not np.array_equal(first.images, second.images)
  # A cache whose own checksums hold but whose content disagrees with meta.json (here: 11 of 12 images) is rebuilt.
  info = json.loads((cache / "tiny_train_native.json").read_text())
  images, labels = second.images[:11], second.labels[:11]
  np.savez(cache / "tiny_train_native.npz", images=images, labels=labels)
  info.update(images_sha256=sources._sha256(images), labels_sha256=sources._sha256(labels))
  (cache / "tiny_train_native.json").write_text(json.dumps(info))
  with caplog.at_level(logging.WARNING):
    third = sources.load_archive(arch, "train", 0, str(cache))
  assert "tiny_train_native.npz is corrupt (checksum or shape mismatch); rebuilding it." in caplog.text
  np.testing.assert_array_equal(third.images, expected)
  # A cache file cut short is rebuilt too.
  (cache / "tiny_train_native.npz").write_bytes(b"PK\x03\x04 cut")
  np.testing.assert_array_equal(sources.load_archive(arch, "train", 0, str(cache)).images, expected)


def test_labels_out_of_range_name_the_split(tmp_path):
  arch = tmp_path / "arch"
  write_archive(arch, num_classes=3)  # labels 0, 1, 2, 0, ...
  meta = json.loads((arch / "meta.json").read_text())
  meta["classes"] = ["c0", "c1"]  # ... but only two classes listed
  (arch / "meta.json").write_text(json.dumps(meta))
  with pytest.raises(sources.DataError) as e:
    sources.load_archive(arch, "train", 0, str(tmp_path / "cache"))
  assert str(e.value) == (
      f"{arch / 'train.npz'} (split 'train'; meta.json lists 2 classes): labels must be in [0, 2) (2 classes) but "
      "span [0, 2] (4 outside, first at index 2): the data and its class list disagree; fix or rebuild the data.")
  with pytest.raises(sources.DataError, match=r"^split 'eval': labels must be in \[0, 5\) \(5 classes\) but span "
                                              r"\[-1, 3\]"):
    sources.check_split(sources.ArraySource(np.zeros((3, 4, 4, 3), np.uint8), np.array([0, -1, 3])), "eval", 5)


def test_image_of_another_size_names_the_image(tmp_path):
  arch = tmp_path / "arch"
  write_archive(arch, size=16)
  replace_image(arch, 7, (16, 20))
  with pytest.raises(sources.DataError) as e:
    sources.load_archive(arch, "train", 0, str(tmp_path / "cache"))
  assert str(e.value) == (f"{arch / 'train.npz'} image 7: image is [16, 20, 3] but the others are [16, 16, 3]: the "
                          "split mixes image sizes; set config.data.image_size to resize them, or rebuild the data "
                          "with one size.")


def test_tfds_records_are_checked_as_read():
  """A tfds-style record source: bad labels and non-uint8 images are named by split and record."""
  good = {"image": np.zeros((8, 8, 3), np.uint8), "label": np.int64(1)}
  records = [good, {**good, "label": np.int64(10)}, {**good, "image": np.zeros((8, 8, 3), np.float32)},
             {**good, "image": np.zeros((8, 9, 3), np.uint8)}]
  src = sources.TfdsSource(records, 0, split="train[:4]", num_classes=10)
  sources.check_split(src, "train[:4]", 10)  # the first record is fine
  assert src[0]["label"] == 1
  with pytest.raises(sources.DataError) as e:
    src.gather(np.array([0, 1]))
  assert str(e.value) == ("split 'train[:4]' record 1: labels must be in [0, 10) (10 classes) but span [10, 10]: the "
                          "data and its class list disagree; fix or rebuild the data.")
  with pytest.raises(sources.DataError, match=r"^split 'train\[:4\]' record 2: images must be uint8, got float32"):
    src[2]
  with pytest.raises(sources.DataError, match=r"^split 'train\[:4\]' record 3: image is \[8, 9, 3\] but the others "
                                              r"are \[8, 8, 3\]"):
    src[3]
  with pytest.raises(sources.DataError, match=r"^split 'train\[:4\]': labels must be in \[0, 10\)"):
    src.labels()


def test_tfds_not_prepared_is_one_line(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(FileNotFoundError) as e:
    sources.load_tfds("cifar100", "train", str(tmp_path), 32)
  assert "\n" not in str(e.value) and f"`pip install tensorflow && tfds build cifar100 --data_dir {tmp_path} " \
      "--file_format=array_record`, then copy that folder here" in str(e.value)
