"""CIFAR-100, VGG teacher -> VGG student: the paper's main row, with its recipe (docs/method.md 7, 8, 10).

  python -m svdkd_jax.main --config configs/cifar100_vgg.py:teacher --workdir runs/vgg/teacher
  python -m svdkd_jax.main --config configs/cifar100_vgg.py:kd_svd_exact_mean --workdir runs/vgg/kd_svd_exact_mean \
      --config.teacher.workdir=runs/vgg/teacher

Recipe (`svdkd_jax.recipes.paper_recipe`): Nesterov 0.9, lr 1e-2 -> 1e-3 at epoch 100 -> 1e-4 at 150, 200 epochs,
batch 128, coupled L2 1e-4 on kernels, per-tensor clipping of the distillation gradient to sigmoid(epoch) *
||g_main|| (combine.rule = "clip_per_tensor"), the authors' augmentation (flip, rotate +-15 deg, pad 4 + crop) and their
BGR-ordered channel statistics.

Variants (`:ARG`): those of svdkd_jax.recipes.VARIANTS (its docstring says what each trains), kd_svd_exact_mean
the default; here kd_svd_2stage and fsp_2stage take 40 distillation-only epochs, then the whole 200-epoch recipe.
The `smoke` modifier runs digits for a few steps. Students need `--config.teacher.workdir=DIR` (a finished teacher
run).
"""

import ml_collections

from svdkd_jax import recipes
from svdkd_jax.recipes import TABLE_SEEDS, TABLE_VARIANTS, VARIANTS  # pylint: disable=unused-import


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return recipes.apply_variant(recipes.paper_recipe(), recipes.parse_variant(arg), pair="vgg", init_epochs=40)
