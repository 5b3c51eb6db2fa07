"""Shared building blocks: channel scaling, initialisers and layer factories.

Every conv and dense weight is an `nnx.Param` named `kernel` (the trainer decays exactly those); biases, BatchNorm
`scale` / `bias` and running statistics are never named `kernel`.
"""

from collections.abc import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

# The authors' `variance_scaling_initializer()`: truncated normal, fan-in, scale 2 (docs/method.md 7.1).
KERNEL_INIT = nnx.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")

# PyTorch's `padding=1` for 3x3 convs (the CRD benchmark code); differs from "SAME" only for stride 2.
TORCH_PAD = ((1, 1), (1, 1))


def channels(c: int, width: float) -> int:
  """Scales a channel count by `width`, rounded to an integer >= 1 (the same for teacher and student)."""
  return max(1, int(c * width + 0.5))


def conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, *, rngs: nnx.Rngs, use_bias: bool = False,
         groups: int = 1, padding: str | Sequence[tuple[int, int]] = "SAME") -> nnx.Conv:
  """A 2-D convolution on NHWC inputs with the authors' initialiser (zero bias when `use_bias`).

  `padding`: as `nnx.Conv`'s, "SAME", "VALID" or (low, high) pairs per spatial axis (`TORCH_PAD`).
  """
  return nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding=padding, use_bias=use_bias,
                  feature_group_count=groups, kernel_init=KERNEL_INIT, rngs=rngs)


def dense(din: int, dout: int, *, rngs: nnx.Rngs) -> nnx.Linear:
  """A dense layer `[..., din] -> [..., dout]` with the authors' initialiser and a zero-initialised bias."""
  return nnx.Linear(din, dout, kernel_init=KERNEL_INIT, rngs=rngs)


def batch_norm(c: int, *, rngs: nnx.Rngs, framework: str) -> nnx.BatchNorm:
  """BatchNorm with the statistics constants of the code a network comes from.

  framework: "slim" (the authors' TF1 code: decay 0.9, epsilon 1e-3) or "torch" (the CRD benchmark: momentum 0.1,
  i.e. decay 0.9, epsilon 1e-5).
  """
  epsilon = {"slim": 1e-3, "torch": 1e-5}[framework]
  return nnx.BatchNorm(c, momentum=0.9, epsilon=epsilon, rngs=rngs)


def max_pool(x: jax.Array) -> jax.Array:
  """2x2 max-pool, stride 2: [B, H, W, C] -> [B, H/2, W/2, C]."""
  return nnx.max_pool(x, (2, 2), strides=(2, 2))


def global_avg_pool(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, C]; equals the authors' fixed-size average pool at 32x32 and works at any input size."""
  return jnp.mean(x, axis=(1, 2))
