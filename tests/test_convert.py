"""svdkd_jax.data.convert and the data root: image folders -> archive -> sources, byte for byte, and a run on it.

The image trees are generated here (a few random JPEGs per class), so nothing depends on downloaded data. The
reference for what an archive holds is the files themselves: their bytes, and their pixels as Pillow decodes them.
"""

import io
import json
from pathlib import Path
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from svdkd_jax.data import archives
from svdkd_jax.data import convert
from svdkd_jax.data import sources


def jpeg(rng: np.random.Generator, size: tuple[int, int] = (32, 32), grey: bool = False) -> bytes:
  pixels = rng.integers(0, 256, (size[1], size[0]) if grey else (size[1], size[0], 3), dtype=np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format="JPEG", quality=75)
  return out.getvalue()


def class_tree(root: Path, splits: dict[str, int], classes=("cat", "airplane", "dog"), seed: int = 0) -> Path:
  """root/<split>/<class>/NNNN.jpg with `splits[split]` images per class; one greyscale JPEG among them."""
  rng = np.random.default_rng(seed)
  for split, n in splits.items():
    for c in classes:
      (root / split / c).mkdir(parents=True)
      for i in range(n):
        (root / split / c / f"{i:04d}.jpg").write_bytes(jpeg(rng, grey=(split, c, i) == ("train", "dog", 1)))
  return root


def expected(root: Path, split: str) -> tuple[list[Path], np.ndarray]:
  """The files of `split` in the converter's documented order (class folders sorted, then file names) and labels."""
  files, labels = [], []
  for label, c in enumerate(sorted(p.name for p in (root / split).iterdir())):
    names = sorted((root / split / c).iterdir())
    files += names
    labels += [label] * len(names)
  return files, np.array(labels)


def decoded(files: list[Path]) -> np.ndarray:
  return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def test_class_folders_round_trip_through_sources(tmp_path):
  src = class_tree(tmp_path / "src", {"train": 4, "test": 2})
  out = convert.convert("cifar10_folders", str(src), str(tmp_path / "arch"))
  meta = json.loads((out / "meta.json").read_text())
  assert meta["classes"] == ["airplane", "cat", "dog"] and meta["name"] == "arch"
  assert str(tmp_path) not in json.dumps(meta)  # no machine path in the archive
  for split in ("train", "test"):
    files, labels = expected(src, split)
    with np.load(out / f"{split}.npz") as z:
      assert z["jpeg"].tobytes() == b"".join(f.read_bytes() for f in files)  # the files, byte for byte
      assert z["labels"].dtype == np.int16
    got = sources.load_archive(out, split, 0, str(tmp_path / "cache"))
    np.testing.assert_array_equal(got.labels, labels)
    np.testing.assert_array_equal(got.images, decoded(files))
    assert meta[split]["n"] == len(files) and meta[split]["image_shape"] == [32, 32, 3]
    assert meta[split]["per_class_min"] == meta[split]["per_class_max"] == len(files) // 3
    np.testing.assert_allclose(meta[split]["mean"], decoded(files).mean((0, 1, 2)) / 255, atol=1e-4)
    np.testing.assert_allclose(meta[split]["std"], decoded(files).std((0, 1, 2)) / 255, atol=1e-4)
  # Resized through the cache, and the class count the pipeline reads.
  assert sources.load_archive(out, "test", 16, str(tmp_path / "cache")).images.shape == (6, 16, 16, 3)
  assert sources.archive_num_classes(out) == 3


def test_archive_names_resolve_in_the_data_root(tmp_path, monkeypatch):
  monkeypatch.setenv("SVDKD_DATA", str(tmp_path / "root"))
  src = class_tree(tmp_path / "src", {"train": 2, "test": 1}, classes=("a", "b"))
  assert convert.main(["cifar10_folders", str(src), "mini"]) == 0  # a bare name is written into the data root
  assert (tmp_path / "root" / "mini" / "meta.json").is_file()
  assert archives.archive_path("mini") == tmp_path / "root" / "mini"
  assert len(sources.load_archive("mini", "train", 0, str(tmp_path / "cache"))) == 4
  assert archives.archive_path(str(tmp_path / "root" / "mini")) == tmp_path / "root" / "mini"  # a path: as given
  with pytest.raises(archives.ArchiveNotFoundError) as e:
    sources.load_archive("cifar10_jpeg", "train")
  message = str(e.value)
  assert "\n" not in message and str(tmp_path / "root") in message
  assert all(s in message for s in ("$SVDKD_DATA", "~/svdkd_data", "python -m svdkd_jax.data.convert")), message
  monkeypatch.delenv("SVDKD_DATA")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert archives.data_root() == tmp_path / "home" / "svdkd_data"


def tiny_imagenet_tree(root: Path, wnids: list[str], per_class: int, val: list[tuple[str, str]]) -> Path:
  rng = np.random.default_rng(1)
  (root / "val" / "images").mkdir(parents=True)
  (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
  (root / "words.txt").write_text("".join(f"{w}\tname of {w}, another name\n" for w in wnids))
  for w in wnids:
    (root / "train" / w / "images").mkdir(parents=True)
    (root / "train" / w / f"{w}_boxes.txt").write_text("")
    for i in range(per_class):
      (root / "train" / w / "images" / f"{w}_{i}.JPEG").write_bytes(jpeg(rng, (64, 64)))
  for name, _ in val:
    (root / "val" / "images" / name).write_bytes(jpeg(rng, (64, 64)))
  (root / "val" / "val_annotations.txt").write_text("".join(f"{n}\t{w}\t0\t0\t63\t63\n" for n, w in val))
  return root


def test_tiny_imagenet_keeps_the_first_sorted_wnids_and_the_annotation_order(tmp_path):
  wnids = ["n03", "n01", "n04", "n02"]  # wnids.txt is not sorted; classes are
  val = [("val_0.JPEG", "n04"), ("val_1.JPEG", "n02"), ("val_2.JPEG", "n01"), ("val_3.JPEG", "n03"),
         ("val_4.JPEG", "n01")]
  src = tiny_imagenet_tree(tmp_path / "tiny-imagenet-200", wnids, 3, val)
  out = convert.convert("tiny_imagenet", str(src), str(tmp_path / "tiny_3"), num_classes=3)
  meta = json.loads((out / "meta.json").read_text())
  assert meta["classes"] == ["n01", "n02", "n03"]
  assert meta["class_names"] == ["name of n01, another name", "name of n02, another name", "name of n03, another name"]
  train = sources.load_archive(out, "train", 0, str(tmp_path / "cache"))
  np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
  files = [src / "train" / w / "images" / f"{w}_{i}.JPEG" for w in ("n01", "n02", "n03") for i in range(3)]
  np.testing.assert_array_equal(train.images, decoded(files))
  held = sources.load_archive(out, "val", 0, str(tmp_path / "cache"))  # n04 (the 4th class) dropped, order kept
  np.testing.assert_array_equal(held.labels, [1, 0, 2, 0])
  np.testing.assert_array_equal(held.images, decoded([src / "val" / "images" / f"val_{i}.JPEG" for i in (1, 2, 3, 4)]))


@pytest.mark.parametrize("case,match", [
    ("missing_src", "is not a folder"),
    ("no_splits", "holds no <split>/<class>/ folders"),
    ("other_classes", "holds other class folders"),
    ("empty_class", "holds no .jpg/.jpeg images"),
    ("not_jpeg", "is PNG, not JPEG"),
    ("broken", "does not decode as an image"),
    ("two_sizes", "an archive split holds one image size"),
    ("exists", "already holds an archive: pass --overwrite"),
    ("no_wnids", "wnids.txt is missing"),
    ("bad_annotation", "line 1 is not <file> TAB <wnid>"),
    ("too_many_classes", "--num_classes=9 must be in"),
])
def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys, case, match):
  src = class_tree(tmp_path / "src", {"train": 2, "test": 1}, classes=("a", "b"))
  args = ["cifar10_folders", str(src), str(tmp_path / "arch")]
  if case == "missing_src":
    args[1] = str(tmp_path / "nothing")
  elif case == "no_splits":
    args[1] = str(src / "train" / "a")
  elif case == "other_classes":
    (src / "test" / "c").mkdir()
  elif case == "empty_class":
    for f in (src / "test" / "b").iterdir():
      f.unlink()
  elif case == "not_jpeg":
    Image.new("RGB", (32, 32)).save(src / "train" / "a" / "0000.jpg", format="PNG")
  elif case == "broken":
    (src / "train" / "a" / "0001.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
  elif case == "two_sizes":
    (src / "train" / "b" / "0001.jpg").write_bytes(jpeg(np.random.default_rng(0), (16, 32)))
  elif case == "exists":
    assert convert.main(args) == 0
  elif case in ("no_wnids", "bad_annotation", "too_many_classes"):
    src = tiny_imagenet_tree(tmp_path / "tiny", ["n01", "n02"], 1, [("val_0.JPEG", "n01")])
    args = ["tiny_imagenet", str(src), str(tmp_path / "arch")]
    if case == "no_wnids":
      (src / "wnids.txt").unlink()
    elif case == "bad_annotation":
      (src / "val" / "val_annotations.txt").write_text("val_0.JPEG n01\n")
    else:
      args += ["--num_classes", "9"]
  capsys.readouterr()
  assert convert.main(args) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err
  if case not in ("exists",):
    assert not (tmp_path / "arch" / "meta.json").exists()  # no archive is left that looks complete


def test_command_line_module_runs(tmp_path):
  src = class_tree(tmp_path / "src", {"train": 1}, classes=("a", "b"))
  proc = subprocess.run([sys.executable, "-m", "svdkd_jax.data.convert", "cifar10_folders", str(src),
                         str(tmp_path / "arch"), "--source", "generated"], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == str(tmp_path / "arch")
  assert json.loads((tmp_path / "arch" / "meta.json").read_text())["source"] == "generated"


@pytest.mark.slow  # compiles and runs a train step (~15 s on 2 cores)
def test_trains_on_a_converted_archive(tmp_path, tiny_config):
  from svdkd_jax import train  # pylint: disable=g-import-not-at-top

  src = class_tree(tmp_path / "src", {"train": 12, "test": 4}, classes=("a", "b"))
  out = convert.convert("cifar10_folders", str(src), str(tmp_path / "arch"))
  config = tiny_config("student")
  config.data.source = "archive"
  config.data.name = "arch"
  config.data.path = str(out)
  config.data.cache_dir = str(tmp_path / "cache")
  config.train.batch_size = 8
  config.train.eval_batch_size = 8
  config.train.max_steps = 2
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["step"] == 2 and 0.0 <= summary["last_eval_accuracy"] <= 1.0
  assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["path"] == str(out)  # as given
