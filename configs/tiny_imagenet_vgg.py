"""Tiny-ImageNet, VGG teacher -> VGG student at 64x64: the paper's Tiny-ImageNet row (T 53.37, S 47.32, FSP 48.77,
proposed 51.82; docs/method.md section 10: no architecture or recipe was published for it).

Our reading: the CIFAR VGG pair run at the native 64x64 resolution (taps 32x32x64, 16x16x128, 8x8x256, 4x4x512; the
flattened FC input grows 4x) with the paper's CIFAR recipe (configs/cifar100_vgg.py, whose variants apply here).
Data: a JPEG archive (docs/data.md), by default `tiny_imagenet_100` in the data root (the first 100 classes, eval =
its labelled val split). The paper used all 200 classes: build them with
`python -m svdkd_jax.data.convert tiny_imagenet SRC tiny_imagenet_200` and pass
`--config.data.path=tiny_imagenet_200 --config.data.num_classes=200`.

  python -m svdkd_jax.main --config configs/tiny_imagenet_vgg.py:teacher --workdir runs/tiny_imagenet/teacher
"""

import ml_collections

from svdkd_jax import recipes
from svdkd_jax.recipes import TABLE_SEEDS, TABLE_VARIANTS, VARIANTS  # pylint: disable=unused-import


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = recipes.paper_recipe()
  config.data.source = "archive"
  config.data.name = "tiny_imagenet"
  config.data.path = "tiny_imagenet_100"  # an archive in the data root (docs/data.md)
  config.data.image_size = 64
  config.data.normalization = "dataset"  # the authors' statistics are CIFAR-100's
  config.data.eval_split = "val"
  return recipes.apply_variant(config, recipes.parse_variant(arg), pair="vgg", init_epochs=40)
