"""Quickstart: the VGG pair at width 0.25 on the bundled `digits` data (scikit-learn, no download), a few minutes
on 2 CPU cores for teacher, student alone and KD-SVD student together.

  python -m svdkd_jax.quickstart --workdir /tmp/svdkd_quickstart      # all three runs, prints the accuracies
  python -m svdkd_jax.main --config configs/quickstart.py:teacher --workdir /tmp/qs/teacher
  python -m svdkd_jax.main --config configs/quickstart.py:kd_svd --workdir /tmp/qs/kd_svd \
      --config.teacher.workdir=/tmp/qs/teacher

Variants: teacher | student | kd_svd (default) | fsp | soft_target. Data: 1,437 train / 360 test 8x8 digits
upsampled to 32x32 (so the paper's VGG taps keep their 16/8/4/2 spatial sizes). A toy: it shows the program working
end to end, not the paper's result.
"""

import ml_collections

from svdkd_jax import config_files

VARIANTS = ("teacher", "student", "kd_svd", "fsp", "soft_target")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = config_files.sibling("default", __file__).get_config()

  variant = arg or "kd_svd"
  if variant not in VARIANTS:
    raise ValueError(f"Unknown quickstart variant {variant!r}; valid: {', '.join(VARIANTS)}.")
  config.model.name = "vgg_teacher" if variant == "teacher" else "vgg_student"
  config.model.width = 0.25
  config.teacher.name = "vgg_teacher"
  config.teacher.width = 0.25
  config.distill.method = "none" if variant in ("teacher", "student") else variant

  config.data.source = "digits"
  config.data.name = "digits"
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.num_classes = 10
  config.data.image_size = 32
  config.data.augment = "none"

  config.optim.learning_rate = 0.02
  config.optim.boundaries = (6,)
  config.optim.weight_decay = 1e-4
  config.train.epochs = 8
  config.train.batch_size = 64
  config.train.eval_batch_size = 120
  config.train.log_every_steps = 10
  config.train.checkpoint_every_steps = 200
  config.train.keep_checkpoints = 1
  return config
