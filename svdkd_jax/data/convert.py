"""Builds a JPEG `.npz` archive (docs/data.md) from the public image folders the offline archives are made from.

  python -m svdkd_jax.data.convert cifar10_folders SRC DST   # SRC/<split>/<class>/*.jpg, e.g. train/ and test/
  python -m svdkd_jax.data.convert tiny_imagenet SRC DST --num_classes 100   # SRC = the tiny-imagenet-200 folder

DST is an archive name (written into the data root, `$SVDKD_DATA` else `~/svdkd_data`) or a folder path. The JPEG
files are stored byte for byte; every one is decoded once to check it and to record the checksums and statistics
that the reader verifies.

`cifar10_folders` reads any `<split>/<class>/<image>` tree (the layout of the CIFAR-10 JPEG release with
`train/<class>/NNNN.jpg` and `test/<class>/NNNN.jpg`): classes are the sorted class folders of the first split, and
every split must hold the same ones; examples are ordered by class, then file name.

`tiny_imagenet` reads Tiny-ImageNet-200's layout: `wnids.txt`, `train/<wnid>/images/*.JPEG`, `val/images/*.JPEG`
with `val/val_annotations.txt` (and class names from `words.txt` when present). Classes are the sorted wnids,
optionally only the first `--num_classes` (the `tiny_imagenet_100` archive: the first 100 of 200). `train` is
ordered by class, then file name; `val` (the labelled validation set) follows `val_annotations.txt`.
"""

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path
import sys
from typing import Any

from svdkd_jax.data import archives

IMAGE_SUFFIXES = (".jpg", ".jpeg")


class ConvertError(ValueError):
  """Input that cannot be converted; the message names the file or folder and what is wrong (one line)."""


def _progress(iterable: Iterable, total: int, desc: str) -> Iterable:
  """A tqdm bar on stderr when it is a terminal (long splits take minutes), the bare iterable otherwise."""
  import tqdm  # pylint: disable=g-import-not-at-top

  return tqdm.tqdm(iterable, total=total, desc=desc, unit="img", disable=None, leave=False)


def _dirs(folder: Path) -> list[Path]:
  return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
  return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _require_dir(path: Path, what: str) -> None:
  if not path.is_dir():
    raise ConvertError(f"{path} is not a folder: expected {what}.")


# --- layouts: each returns (classes, {split: (files, labels)}, extra meta.json fields) ---

Splits = dict[str, tuple[list[Path], list[int]]]


def read_class_folders(src: Path, splits: Sequence[str] = ()) -> tuple[list[str], Splits, dict[str, Any]]:
  """`src/<split>/<class>/<image>`: every split folder of `src` (or `splits`), classes from the first one."""
  _require_dir(src, "a folder holding <split>/<class>/<image>.jpg (e.g. train/airplane/0001.jpg)")
  split_dirs = [src / s for s in splits] if splits else sorted(
      (d for d in _dirs(src) if _dirs(d)), key=lambda d: (d.name != "train", d.name))  # train first
  if not split_dirs:
    raise ConvertError(f"{src} holds no <split>/<class>/ folders (e.g. train/airplane/).")
  classes = [d.name for d in _dirs(split_dirs[0])]
  out = {}
  for split_dir in split_dirs:
    _require_dir(split_dir, f"the split {split_dir.name!r} holding <class>/<image>.jpg")
    found = [d.name for d in _dirs(split_dir)]
    if found != classes:
      diff = sorted(set(found) ^ set(classes))
      raise ConvertError(f"{split_dir} holds other class folders than {split_dirs[0]} (differing: "
                         f"{', '.join(diff[:5]) or 'order'}): every split needs the same classes.")
    files, labels = [], []
    for label, name in enumerate(classes):
      images = _images(split_dir / name)
      if not images:
        raise ConvertError(f"{split_dir / name} holds no .jpg/.jpeg images.")
      files += images
      labels += [label] * len(images)
    out[split_dir.name] = (files, labels)
  return classes, out, {}


def _read_lines(path: Path) -> list[str]:
  if not path.is_file():
    raise ConvertError(f"{path} is missing: expected the Tiny-ImageNet-200 folder (wnids.txt, train/, val/).")
  return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_tiny_imagenet(src: Path, num_classes: int = 0) -> tuple[list[str], Splits, dict[str, Any]]:
  """Tiny-ImageNet-200's folder (`wnids.txt`, `train/`, `val/`), restricted to the first `num_classes` sorted wnids."""
  wnids = sorted(_read_lines(src / "wnids.txt"))
  if num_classes:
    if not 0 < num_classes <= len(wnids):
      raise ConvertError(f"--num_classes={num_classes} must be in [1, {len(wnids)}] ({src / 'wnids.txt'}).")
    wnids = wnids[:num_classes]
  index = {w: i for i, w in enumerate(wnids)}
  files, labels = [], []
  for wnid in wnids:
    images = _images(src / "train" / wnid / "images") if (src / "train" / wnid / "images").is_dir() else []
    if not images:
      raise ConvertError(f"{src / 'train' / wnid / 'images'} holds no .JPEG images (wnid listed in wnids.txt).")
    files += images
    labels += [index[wnid]] * len(images)
  out = {"train": (files, labels)}
  val_files, val_labels = [], []
  annotations = src / "val" / "val_annotations.txt"
  for n, line in enumerate(_read_lines(annotations), 1):
    fields = line.split("\t")
    if len(fields) < 2:
      raise ConvertError(f"{annotations} line {n} is not <file> TAB <wnid> ...: {line[:80]!r}.")
    if fields[1] in index:
      path = src / "val" / "images" / fields[0]
      if not path.is_file():
        raise ConvertError(f"{path} is missing ({annotations} line {n} lists it).")
      val_files.append(path)
      val_labels.append(index[fields[1]])
  out["val"] = (val_files, val_labels)
  extra = {}
  if (src / "words.txt").is_file():
    words = dict(line.split("\t", 1) for line in _read_lines(src / "words.txt") if "\t" in line)
    extra["class_names"] = [words.get(w, w) for w in wnids]
  return wnids, out, extra


# --- the archive ---


def convert(layout: str, src: str, dst: str, *, num_classes: int = 0, splits: Sequence[str] = (),
            source: str = "", note: str = "", overwrite: bool = False) -> Path:
  """Builds the archive `dst` (a name in the data root, or a folder) from the image folder `src`; returns its path.

  `layout`: "cifar10_folders" or "tiny_imagenet". Refuses an existing archive unless `overwrite`.
  """
  src_path = Path(src).expanduser()
  if not src_path.is_dir():
    raise ConvertError(f"{src} is not a folder: give the image folder to convert.")
  flag = "--num_classes" if layout == "cifar10_folders" and num_classes else (
      "--splits" if layout == "tiny_imagenet" and splits else "")
  if flag:
    raise ConvertError(f"{flag} does not apply to the {layout} layout.")
  if layout == "cifar10_folders":
    classes, data, extra = read_class_folders(src_path, splits)
  elif layout == "tiny_imagenet":
    classes, data, extra = read_tiny_imagenet(src_path, num_classes)
  else:
    raise ConvertError(f"Unknown layout {layout!r}: use cifar10_folders or tiny_imagenet.")
  out = archives.output_path(dst)
  if (out / "meta.json").exists() and not overwrite:
    raise ConvertError(f"{out} already holds an archive: pass --overwrite to replace it, or choose another DST.")
  out.mkdir(parents=True, exist_ok=True)
  # The source is named by its folder only: an archive records no machine path.
  meta = {"name": out.name, "classes": classes, **extra, "source": source or f"{layout} folder {src_path.name}"}
  if note:
    meta["note"] = note
  if (out / "meta.json").exists():
    (out / "meta.json").unlink()  # --overwrite: the folder is not an archive again until the new meta.json lands
  for split, (files, labels) in data.items():
    meta[split] = archives.write_split(out, split, files, labels, len(classes), error=ConvertError,
                                       progress=_progress)
    print(f"{split}: {meta[split]['n']:,} images of {len(classes)} classes, "
          f"{meta[split]['image_shape'][1]}x{meta[split]['image_shape'][0]}, {meta[split]['bytes'] / 1e6:.1f} MB",
          file=sys.stderr, flush=True)
  archives.write_meta(out, meta)
  return out


def main(argv: Sequence[str] | None = None) -> int:
  """Converts SRC to an archive at DST from the command line `argv` (default `sys.argv[1:]`); returns the exit status.

  Prints the archive's path and returns 0, or prints one `error: ...` line and returns 1.
  """
  parser = argparse.ArgumentParser(prog="python -m svdkd_jax.data.convert", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("layout", choices=("cifar10_folders", "tiny_imagenet"), help="the layout of SRC")
  parser.add_argument("src", metavar="SRC", help="the image folder to convert")
  parser.add_argument("dst", metavar="DST", help="archive name (in $SVDKD_DATA, else ~/svdkd_data) or folder")
  parser.add_argument("--num_classes", type=int, default=0, help="tiny_imagenet: keep the first N sorted wnids")
  parser.add_argument("--splits", default="", help="cifar10_folders: comma-separated split folders (default: all)")
  parser.add_argument("--source", default="", help="provenance recorded in meta.json (e.g. the release's URL)")
  parser.add_argument("--note", default="", help="a note recorded in meta.json")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing archive at DST")
  args = parser.parse_args(argv)
  try:
    out = convert(args.layout, args.src, args.dst, num_classes=args.num_classes, source=args.source, note=args.note,
                  splits=[s for s in args.splits.split(",") if s], overwrite=args.overwrite)
  except (ConvertError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(out)
  return 0


def run() -> None:
  """The `svdkd-convert` console script."""
  sys.exit(main())


if __name__ == "__main__":
  run()
