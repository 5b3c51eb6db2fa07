"""CIFAR-100, MobileNet pair: the paper's MobileNet row (T 57.85, S 56.15, FSP 56.53, proposed 58.15).

The released code does not reproduce the paper's FLOPs/params for these networks; `mobilenet_teacher` and
`mobilenet_student` are the closest definitions (residual gaps documented in svdkd_jax.models).

Same recipe and variants as configs/cifar100_vgg.py (read its docstring), e.g.
  python -m svdkd_jax.main --config configs/cifar100_mobilenet.py:teacher --workdir runs/cifar100_mobilenet/teacher
"""

import ml_collections

from svdkd_jax import config_files


_vgg = config_files.sibling("cifar100_vgg", __file__)
VARIANTS, TABLE_VARIANTS, TABLE_SEEDS = _vgg.VARIANTS, _vgg.TABLE_VARIANTS, _vgg.TABLE_SEEDS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return _vgg.apply_variant(_vgg.paper_recipe(), arg, teacher="mobilenet_teacher", student="mobilenet_student",
                            init_epochs=40)
