"""A small CIFAR ResNet, written as a Flax NNX user writes one: it knows nothing of svdkd_jax, and its call returns
the logits alone. docs/examples/my_resnet_config.py distils it (docs/your_network.md).

Stem conv 3x3 + BatchNorm + ReLU; three stages of basic blocks at `channels`, 2x and 4x channels, strides 1, 2, 2;
global average pool; linear head.
"""

from flax import nnx
import jax
import jax.numpy as jnp


class Block(nnx.Module):
  """Two 3x3 convs with BatchNorm, a 1x1 conv on the shortcut when the shape changes, ReLU after the sum."""

  def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(cout, rngs=rngs)
    self.conv2 = nnx.Conv(cout, cout, (3, 3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(cout, rngs=rngs)
    reshape = stride != 1 or cin != cout
    self.shortcut = nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs) if reshape else None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.bn2(self.conv2(nnx.relu(self.bn1(self.conv1(x)))))
    return nnx.relu(y + (x if self.shortcut is None else self.shortcut(x)))


def _stage(cin: int, cout: int, stride: int, blocks: int, rngs: nnx.Rngs) -> nnx.Sequential:
  return nnx.Sequential(*[Block(cin if i == 0 else cout, cout, stride if i == 0 else 1, rngs=rngs)
                          for i in range(blocks)])


class ResNet(nnx.Module):
  """x [B, H, W, 3] -> logits [B, num_classes]."""

  def __init__(self, num_classes: int, *, channels: int = 16, blocks: int = 2, rngs: nnx.Rngs):
    self.stem = nnx.Conv(3, channels, (3, 3), use_bias=False, rngs=rngs)
    self.stem_bn = nnx.BatchNorm(channels, rngs=rngs)
    self.stage1 = _stage(channels, channels, 1, blocks, rngs)
    self.stage2 = _stage(channels, 2 * channels, 2, blocks, rngs)
    self.stage3 = _stage(2 * channels, 4 * channels, 2, blocks, rngs)
    self.head = nnx.Linear(4 * channels, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.stem_bn(self.stem(x)))
    x = self.stage3(self.stage2(self.stage1(x)))
    return self.head(jnp.mean(x, axis=(1, 2)))
