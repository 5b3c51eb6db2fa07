"""Quickstart: the VGG pair at width 0.25 on the bundled `digits` data (scikit-learn, no download), a few minutes
on 2 CPU cores for teacher, student alone and KD-SVD student together.

  python -m svdkd_jax.quickstart --workdir /tmp/svdkd_quickstart      # all three runs, prints the accuracies
  python -m svdkd_jax.main --config configs/quickstart.py:teacher --workdir /tmp/qs/teacher
  python -m svdkd_jax.main --config configs/quickstart.py:kd_svd_exact_mean --workdir /tmp/qs/kd_svd_exact_mean \
      --config.teacher.workdir=/tmp/qs/teacher

Variants: those of every config file (svdkd_jax.recipes), with kd_svd_exact_mean the default. Data: 1,437 train / 360
test 8x8 digits upsampled to 32x32 (so the paper's VGG taps keep their 16/8/4/2 spatial sizes). A toy: it shows the
program working end to end, not the paper's result. The config itself is `svdkd_jax.recipes.quickstart` (the
package's quickstart runs without this file).
"""

import ml_collections

from svdkd_jax import recipes
from svdkd_jax.recipes import VARIANTS  # pylint: disable=unused-import


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return recipes.quickstart(arg)
