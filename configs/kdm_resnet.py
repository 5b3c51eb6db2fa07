"""CIFAR-100, ResNet32 -> ResNet8 with the authors' 2019 recipe (KD_methods_with_TF; docs/method.md 7.3, 10).

Their README reports (last / best accuracy, mean of five trials): student 71.76 / 71.92, teacher 78.96 / 79.08,
soft-logits 71.79 / 72.08, FSP 72.65 / 72.91, KD-SVD 73.68 / 73.78.
Recipe: Nesterov 0.9, lr 0.1 x0.1 at epochs 30/60/80, 100 epochs, batch 128, weight decay 5e-4, flip + pad 4 + crop,
their BGR-ordered statistics; distillation gradient clipped to sigmoid(epoch) * ||g_CE|| with the weight decay
OUTSIDE the threshold, which is what `decoupled_weight_decay = True` gives (optax.add_decayed_weights ahead of SGD is
the same update as a coupled L2 term, but its gradient is not part of g_main). Differences from their code: weight
decay on kernels only (theirs also decays BatchNorm scale/offset and the FC bias); zero padding (theirs reflects).
Their FSP was a 2-stage run with 40 initialisation epochs in front of the 100-epoch schedule: `fsp_2stage` here.

Variants as in configs/cifar100_vgg.py (svdkd_jax.recipes), e.g.
  python -m svdkd_jax.main --config configs/kdm_resnet.py:teacher --workdir runs/kdm/teacher
"""

import ml_collections

from svdkd_jax import recipes
from svdkd_jax.recipes import VARIANTS  # pylint: disable=unused-import

TABLE_VARIANTS = ("student", "soft_target", "fsp_2stage", "kd_svd", "kd_svd_exact_mean")
TABLE_SEEDS = (0, 1, 2, 3, 4)  # their table averages five trials


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = recipes.paper_recipe()
  config.data.augment = "flip_crop"
  config.optim.learning_rate = 0.1
  config.optim.boundaries = (30, 60, 80)
  config.optim.weight_decay = 5e-4
  config.optim.decoupled_weight_decay = True
  config.train.epochs = 100
  return recipes.apply_variant(config, recipes.parse_variant(arg), pair="resnet32", init_epochs=40)
