"""CIFAR-100, the CRD distillation benchmark pairs with the CRD recipe (Tian et al. 2020, RepDistiller; the recipe
of mdistiller's configs/cifar100/kdsvd.yaml, docs/method.md 7.3), so results compare with published tables.

Pairs (teacher -> student): resnet32x4 -> resnet8x4 (the default), vgg13 -> vgg8, wrn_40_2 -> wrn_16_2,
resnet56 -> resnet20. Select one with a token next to the variant:
  python -m svdkd_jax.main --config configs/crd_benchmark.py:wrn_40_2,teacher --workdir runs/crd/wrn_40_2/teacher
  python -m svdkd_jax.main --config configs/crd_benchmark.py:wrn_40_2,kd_svd --workdir runs/crd/wrn_40_2/kd_svd \
      --config.teacher.workdir=runs/crd/wrn_40_2/teacher
Recipe: SGD momentum 0.9 (not Nesterov), lr 0.05 x0.1 at epochs 150/180/210, 240 epochs, batch 64, weight decay
5e-4 (on kernels; CRD's decays every parameter), flip + pad 4 + crop, dataset statistics. The distillation gradient
still joins through the KD-SVD clipping rule (combine.rule = "sskd"); mdistiller's port adds the two losses instead:
`--config.combine.rule=sum --config.distill.loss_scale=mean`.
"""

import ml_collections

from svdkd_jax import recipes
from svdkd_jax.recipes import VARIANTS  # pylint: disable=unused-import

PAIRS = {"resnet32x4": "resnet8x4", "vgg13": "vgg8", "wrn_40_2": "wrn_16_2", "resnet56": "resnet20"}
TABLE_VARIANTS = ("student", "soft_target", "fsp", "kd_svd")
TABLE_SEEDS = (0, 1, 2)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  _, _, pair = recipes.parse_arg(arg, extra=tuple(PAIRS))
  if len(pair) > 1:
    raise ValueError(f"Give one teacher of {', '.join(PAIRS)} in the variant, got {pair}.")
  teacher = pair[0] if pair else "resnet32x4"
  config = recipes.paper_recipe()
  config.data.augment = "flip_crop"
  config.data.normalization = "dataset"
  config.optim.learning_rate = 0.05
  config.optim.nesterov = False
  config.optim.boundaries = (150, 180, 210)
  config.optim.weight_decay = 5e-4
  config.train.epochs = 240
  config.train.batch_size = 64
  rest = ",".join(t for t in (arg or "").split(",") if t.strip() and t.strip() not in PAIRS)
  return recipes.apply_variant(config, rest, teacher=teacher, student=PAIRS[teacher], init_epochs=40)
