"""Every key a run can set, with its default (the paper's recipe): `svdkd_jax.config.default()`, documented there.

Experiment configs start from it through `svdkd_jax.recipes`; this file lets `--config configs/default.py` name it.
"""

import ml_collections

from svdkd_jax import config


def get_config() -> ml_collections.ConfigDict:
  return config.default()
