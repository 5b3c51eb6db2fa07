"""CIFAR-100, the CRD distillation benchmark pairs with the CRD recipe (Tian et al. 2020, RepDistiller; the recipe
of mdistiller's configs/cifar100/kdsvd.yaml, docs/method.md 7.3), so results compare with published tables.

Pairs (teacher -> student): resnet32x4 -> resnet8x4 (the default), vgg13 -> vgg8, wrn_40_2 -> wrn_16_2,
resnet56 -> resnet20. Select one with a token next to the variant:
  python -m svdkd_jax.main --config configs/crd_benchmark.py:wrn_40_2,teacher --workdir runs/crd/wrn_40_2/teacher
  python -m svdkd_jax.main --config configs/crd_benchmark.py:wrn_40_2,kd_svd --workdir runs/crd/wrn_40_2/kd_svd \
      --config.teacher.workdir=runs/crd/wrn_40_2/teacher
Recipe: SGD momentum 0.9 (not Nesterov), lr 0.05 x0.1 at epochs 150/180/210, 240 epochs, batch 64, weight decay
5e-4 (on kernels; CRD's decays every parameter), flip + pad 4 + crop, dataset statistics. The distillation gradient
still joins through the KD-SVD clipping rule (combine.rule = "clip_per_tensor"); mdistiller's port adds the two
losses instead:
`--config.combine.rule=sum --config.distill.loss_scale=mean`.
"""

import ml_collections

from svdkd_jax import recipes
from svdkd_jax.recipes import VARIANTS  # pylint: disable=unused-import

CRD_PAIRS = ("resnet32x4", "vgg13", "wrn_40_2", "resnet56")  # svdkd_jax.models.PAIRS, each named by its teacher
TABLE_VARIANTS = ("student", "soft_target", "fsp", "kd_svd", "kd_svd_exact_mean")
TABLE_SEEDS = (0, 1, 2)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = recipes.parse_variant(arg, pair=recipes.OneOf(CRD_PAIRS, "resnet32x4"))
  config = recipes.paper_recipe()
  config.data.augment = "flip_crop"
  config.data.normalization = "dataset"
  config.optim.learning_rate = 0.05
  config.optim.nesterov = False
  config.optim.boundaries = (150, 180, 210)
  config.optim.weight_decay = 5e-4
  config.train.epochs = 240
  config.train.batch_size = 64
  return recipes.apply_variant(config, arg, pair=arg.pair, init_epochs=40)
