"""CIFAR-100, ResNeXt pair: the paper's ResNeXt row (T 66.58, S 64.00, FSP 63.60, proposed 65.43).

`resnext_teacher` has 4 branches (the only choice matching the paper's 0.66M parameters), `resnext_student` 2;
remaining FLOP gaps are documented in svdkd_jax.models.

Same recipe and variants as configs/cifar100_vgg.py (svdkd_jax.recipes documents them), e.g.
  python -m svdkd_jax.main --config configs/cifar100_resnext.py:teacher --workdir runs/cifar100_resnext/teacher
"""

import ml_collections

from svdkd_jax import recipes
from svdkd_jax.recipes import TABLE_SEEDS, TABLE_VARIANTS, VARIANTS  # pylint: disable=unused-import


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return recipes.apply_variant(recipes.paper_recipe(), recipes.parse_variant(arg), pair="resnext", init_epochs=40)
