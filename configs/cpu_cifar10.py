"""CPU-scale reproduction, second table: CIFAR-10 (the offline JPEG-75 copy), VGG pair at reduced width.

Same networks, width, compressed schedule and table as configs/cpu_tiny_imagenet.py (read its docstring); only
the data differ: 10 classes, 50,000 train / 10,000 test images at 32x32, JPEG-compressed (expect slightly lower
accuracy than on the original pickles).

  python experiments/run_table.py --config configs/cpu_cifar10.py --root runs
"""

import ml_collections

from svdkd_jax import recipes
from svdkd_jax.recipes import VARIANTS  # pylint: disable=unused-import

TABLE_VARIANTS = recipes.CPU_TABLE_VARIANTS
TABLE_SEEDS = recipes.CPU_TABLE_SEEDS
# Shorter than the main table so both fit in three hours of a 2-core CPU (10 classes learn faster).
EPOCHS = 3
TEACHER_EPOCHS = 8


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return recipes.archive_config(arg, name="cifar10_jpeg", eval_split="test", num_classes=10, epochs=EPOCHS,
                                teacher_epochs=TEACHER_EPOCHS)
