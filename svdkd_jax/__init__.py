"""svdkd_jax: KD-SVD (Lee, Kim, Song, ECCV 2018) in JAX and Flax NNX.

The SVD and its gradient are in `svd.py` (the top-k eigensolver in `eig.py`), the distillation methods in
`distill.py`, the train step in `steps.py` and the loop in `train.py`; the README's "Where things are" maps every
module.
"""

__version__ = "0.1.0"
