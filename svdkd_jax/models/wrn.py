"""Wide ResNets of the CRD benchmark (RepDistiller `models/wrn.py`): wrn_40_2 (teacher) and wrn_16_2 (student).

Pre-activation basic blocks (BN - ReLU - conv 3x3 - BN - ReLU - conv 3x3, 1x1 conv shortcut on the activated input
when the width changes), stem conv 3x3 16, stages 16k/32k/64k with strides 1/2/2 (k = widen factor), final BN + ReLU,
global average pool, FC. No dropout (the benchmark's dropRate = 0). Taps: the output of each stage (the residual
stream before the next block's pre-activation, CRD's `is_feat` without `preact`), at 32x32 with k = 2
[B,32,32,32], [B,16,16,64], [B,8,8,128]. At 64x64 every tap's height and width double.
"""

from flax import nnx
import jax

from svdkd_jax.models import layers


class PreActBlock(nnx.Module):
  """[B, H, W, cin] -> [B, H/stride, W/stride, cout]."""

  def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
    self.bn1 = layers.batch_norm(cin, framework="torch", rngs=rngs)
    self.conv1 = layers.conv(cin, cout, 3, stride, padding=layers.TORCH_PAD, rngs=rngs)
    self.bn2 = layers.batch_norm(cout, framework="torch", rngs=rngs)
    self.conv2 = layers.conv(cout, cout, 3, padding=layers.TORCH_PAD, rngs=rngs)
    self.shortcut = None if cin == cout else layers.conv(cin, cout, 1, stride, padding="VALID", rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    a = nnx.relu(self.bn1(x))
    y = self.conv2(nnx.relu(self.bn2(self.conv1(a))))
    return y + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(nnx.Module):
  """WRN-depth-k. Call: x [B, H, W, 3] -> (logits [B, classes], 3 taps)."""

  def __init__(self, depth: int, widen: int, num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0):
    if (depth - 4) % 6:
      raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
    n = (depth - 4) // 6
    stem, *stages = [layers.channels(c, width) for c in (16, 16 * widen, 32 * widen, 64 * widen)]
    self.stem = layers.conv(3, stem, 3, padding=layers.TORCH_PAD, rngs=rngs)
    cin, all_stages = stem, []
    for i, cout in enumerate(stages):
      all_stages.append(nnx.List([PreActBlock(cin if not b else cout, cout, 2 if (i and not b) else 1, rngs=rngs)
                                  for b in range(n)]))
      cin = cout
    self.stages = nnx.List(all_stages)
    self.bn = layers.batch_norm(cin, framework="torch", rngs=rngs)
    self.head = layers.dense(cin, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    x = self.stem(x)
    taps = []
    for stage in self.stages:
      for block in stage:
        x = block(x)
      taps.append(x)
    return self.head(layers.global_avg_pool(nnx.relu(self.bn(x)))), taps


def wrn_40_2(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0) -> WideResNet:
  """CRD wrn_40_2: 2,255,156 params at 100 classes."""
  return WideResNet(40, 2, num_classes, rngs=rngs, width=width)


def wrn_16_2(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0) -> WideResNet:
  """CRD wrn_16_2: 703,284 params at 100 classes."""
  return WideResNet(16, 2, num_classes, rngs=rngs, width=width)
