"""CIFAR-100, VGG teacher -> VGG_stride student: the paper's VGG_stride row (T 64.44, S-DNN 54.17,
proposed 61.15).

VGG_stride was never released; `vgg_stride_student` is the most plausible definition (see its docstring in
svdkd_jax.models). The teacher is the VGG row's teacher: a finished `cifar100_vgg.py:teacher` run can be reused as
`--config.teacher.workdir`.

Same recipe and variants as configs/cifar100_vgg.py (read its docstring), e.g.
  python -m svdkd_jax.main --config configs/cifar100_vgg_stride.py:teacher --workdir runs/cifar100_vgg_stride/teacher
"""

import ml_collections

from svdkd_jax import config_files


_vgg = config_files.sibling("cifar100_vgg", __file__)
VARIANTS, TABLE_VARIANTS, TABLE_SEEDS = _vgg.VARIANTS, _vgg.TABLE_VARIANTS, _vgg.TABLE_SEEDS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return _vgg.apply_variant(_vgg.paper_recipe(), arg, teacher="vgg_teacher", student="vgg_stride_student",
                            init_epochs=40)
