"""CIFAR-100, VGG teacher -> VGG_stride student: the paper's VGG_stride row (T 64.44, S-DNN 54.17,
proposed 61.15).

VGG_stride was never released; `vgg_stride_student` is the most plausible definition (see its docstring in
svdkd_jax.models). The teacher is the VGG row's teacher: a finished `cifar100_vgg.py:teacher` run can be reused as
`--config.teacher.workdir`.

Same recipe and variants as configs/cifar100_vgg.py (svdkd_jax.recipes documents them), e.g.
  python -m svdkd_jax.main --config configs/cifar100_vgg_stride.py:teacher --workdir runs/cifar100_vgg_stride/teacher
"""

import ml_collections

from svdkd_jax import recipes
from svdkd_jax.recipes import TABLE_SEEDS, TABLE_VARIANTS, VARIANTS  # pylint: disable=unused-import


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return recipes.apply_variant(recipes.paper_recipe(), recipes.parse_variant(arg), pair="vgg_stride", init_epochs=40)
