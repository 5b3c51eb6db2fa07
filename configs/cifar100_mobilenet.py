"""CIFAR-100, MobileNet pair: the paper's MobileNet row (T 57.85, S 56.15, FSP 56.53, proposed 58.15).

The released code does not reproduce the paper's FLOPs/params for these networks; `mobilenet_teacher` and
`mobilenet_student` are the closest definitions (residual gaps documented in svdkd_jax.models).

Same recipe and variants as configs/cifar100_vgg.py (svdkd_jax.recipes documents them), e.g.
  python -m svdkd_jax.main --config configs/cifar100_mobilenet.py:teacher --workdir runs/cifar100_mobilenet/teacher
"""

import ml_collections

from svdkd_jax import recipes
from svdkd_jax.recipes import TABLE_SEEDS, TABLE_VARIANTS, VARIANTS  # pylint: disable=unused-import


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return recipes.apply_variant(recipes.paper_recipe(), recipes.parse_variant(arg), pair="mobilenet", init_epochs=40)
