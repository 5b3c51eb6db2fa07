r"""The GPU campaign's data: a CIFAR-10 archive small enough to travel with the working tree to an accelerator.

  python experiments/gpu_campaign_data.py [--src cifar10_jpeg] [--per_class 2500] [--out .gpu_campaign/cifar10_25k]

Writes an archive (docs/data.md) holding the training images that `data.train_per_class = PER_CLASS` draws from
`--src` (the fixed seeded draw every run of `configs/regime_cifar10.py:...,per_class=PER_CLASS` trains on) and the
whole test split, JPEG bytes copied as they are. With the defaults: 25,000 training images and 10,000 test images,
32.6 MB (23.3 + 9.3), into `.gpu_campaign/` (ignored by git; `experiments/gpu_campaign.py` carries it). A run
pointing `data.path` at it with the same `per_class` token trains on the same 25,000 images as one on the full
archive. `--src` is an archive name in the data root (`$SVDKD_DATA`, else `~/svdkd_data`) or a folder.
"""

import argparse
import json
import os
import pathlib
import shutil
import sys

import numpy as np

from svdkd_jax import input_pipeline
from svdkd_jax.data import archives
from svdkd_jax.data import sources

ROOT = pathlib.Path(__file__).resolve().parents[1]


def build(src: str, per_class: int, out: pathlib.Path, *, train_split: str = "train") -> dict:
  """Writes the subset archive at `out` (replacing one there); returns its meta.json."""
  path = archives.archive_path(src)
  meta = sources.read_archive_meta(path)
  with np.load(path / meta[train_split]["file"]) as z:
    jpeg, offsets, labels = z["jpeg"], z["offsets"], z["labels"]
  kept = sources.per_class_draw(labels.astype(np.int32), per_class, input_pipeline.SUBSET_SEED)
  if out.exists():
    shutil.rmtree(out)
  out.mkdir(parents=True)
  blobs = [jpeg[offsets[i]:offsets[i + 1]].tobytes() for i in kept]
  subset = {"name": out.name, "classes": meta["classes"],
            "source": f"{meta.get('name', path.name)}: its {train_split} images drawn by data.train_per_class="
                      f"{per_class} (seed {input_pipeline.SUBSET_SEED}) and its other splits, JPEG bytes as they were",
            "note": meta.get("note", "")}
  subset[train_split] = archives.write_blobs(out, train_split, blobs, [f"{train_split} image {i}" for i in kept],
                                             labels[kept], len(meta["classes"]))
  for split, entry in meta.items():
    if isinstance(entry, dict) and "file" in entry and split != train_split:
      shutil.copyfile(path / entry["file"], out / entry["file"])
      subset[split] = entry
  archives.write_meta(out, subset)
  return subset


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--src", default="cifar10_jpeg", help="archive name in the data root, or folder")
  parser.add_argument("--per_class", type=int, default=2500, help="training images per class (data.train_per_class)")
  parser.add_argument("--out", default=str(ROOT / ".gpu_campaign" / "cifar10_25k"))
  args = parser.parse_args(argv)
  try:
    meta = build(args.src, args.per_class, pathlib.Path(args.out))
  except (sources.DataError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  size = sum(os.path.getsize(p) for p in pathlib.Path(args.out).iterdir())
  print(json.dumps({"out": args.out, "mib": round(size / 2**20, 1),
                    **{s: e["n"] for s, e in meta.items() if isinstance(e, dict)}}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
