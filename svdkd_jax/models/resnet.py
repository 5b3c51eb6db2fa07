"""CIFAR ResNets with basic blocks: the CRD benchmark's resnet20 / resnet56 / resnet8x4 / resnet32x4 (RepDistiller
`models/resnet.py`) and the authors' 2019 pair resnet32 / resnet8 (KD_methods_with_TF `nets/ResNet.py`, docs/method.md
section 8).

Stem conv 3x3 (no bias) + BN + ReLU; three stages of basic blocks (conv 3x3 - BN - ReLU - conv 3x3 - BN, plus a
1x1 conv + BN projection when the shape changes, ReLU after the sum), strides 1/2/2; global average pool; FC.
Taps: the ReLU output of each stage's last block (`feats[1:]` in the CRD/mdistiller code), at 32x32 e.g.
resnet8x4 [B,32,32,64], [B,16,16,128], [B,8,8,256]. Other input sizes: taps scale with the input (64x64 doubles
every tap's height and width); the average pool is global, so the head is unchanged.

The KDM pair (stem 32, stages 64/128/256, 5 and 1 blocks per stage, "doubled depth") has the same layers as the CRD
resnet32x4 / resnet8x4: the names are kept separately so that configs read like the papers they reproduce.
"""

from collections.abc import Sequence

from flax import nnx
import jax

from svdkd_jax.models import layers


class BasicBlock(nnx.Module):
  """[B, H, W, cin] -> [B, H/stride, W/stride, cout]; ReLU after the residual sum."""

  def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = layers.conv(cin, cout, 3, stride, padding=layers.TORCH_PAD, rngs=rngs)
    self.bn1 = layers.batch_norm(cout, framework="torch", rngs=rngs)
    self.conv2 = layers.conv(cout, cout, 3, padding=layers.TORCH_PAD, rngs=rngs)
    self.bn2 = layers.batch_norm(cout, framework="torch", rngs=rngs)
    if stride != 1 or cin != cout:
      self.proj = nnx.List([layers.conv(cin, cout, 1, stride, padding="VALID", rngs=rngs),
                            layers.batch_norm(cout, framework="torch", rngs=rngs)])
    else:
      self.proj = None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.bn2(self.conv2(nnx.relu(self.bn1(self.conv1(x)))))
    shortcut = x if self.proj is None else self.proj[1](self.proj[0](x))
    return nnx.relu(y + shortcut)


class ResNet(nnx.Module):
  """CIFAR ResNet; `widths` = (stem, stage 1, stage 2, stage 3), `blocks` per stage.
  Call: x [B, H, W, 3] -> (logits [B, classes], 3 taps)."""

  def __init__(self, widths: Sequence[int], blocks: int, num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0):
    stem, *stages = [layers.channels(c, width) for c in widths]
    self.stem = layers.conv(3, stem, 3, padding=layers.TORCH_PAD, rngs=rngs)
    self.stem_bn = layers.batch_norm(stem, framework="torch", rngs=rngs)
    cin, all_stages = stem, []
    for i, cout in enumerate(stages):
      stage = []
      for b in range(blocks):
        stage.append(BasicBlock(cin, cout, 2 if (i and not b) else 1, rngs=rngs))
        cin = cout
      all_stages.append(nnx.List(stage))
    self.stages = nnx.List(all_stages)
    self.head = layers.dense(cin, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    x = nnx.relu(self.stem_bn(self.stem(x)))
    taps = []
    for stage in self.stages:
      for block in stage:
        x = block(x)
      taps.append(x)
    return self.head(layers.global_avg_pool(x)), taps


def _depth_to_blocks(depth: int) -> int:
  return (depth - 2) // 6


def resnet20(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0) -> ResNet:
  """CRD resnet20 (16/16/32/64, 3 blocks per stage): 278,324 params at 100 classes."""
  return ResNet((16, 16, 32, 64), _depth_to_blocks(20), num_classes, rngs=rngs, width=width)


def resnet56(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0) -> ResNet:
  """CRD resnet56 (16/16/32/64, 9 blocks per stage): 861,620 params at 100 classes."""
  return ResNet((16, 16, 32, 64), _depth_to_blocks(56), num_classes, rngs=rngs, width=width)


def resnet8x4(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0) -> ResNet:
  """CRD resnet8x4 (32/64/128/256, 1 block per stage): 1,233,540 params at 100 classes."""
  return ResNet((32, 64, 128, 256), _depth_to_blocks(8), num_classes, rngs=rngs, width=width)


def resnet32x4(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0) -> ResNet:
  """CRD resnet32x4 (32/64/128/256, 5 blocks per stage): 7,433,860 params at 100 classes."""
  return ResNet((32, 64, 128, 256), _depth_to_blocks(32), num_classes, rngs=rngs, width=width)


def resnet32(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0) -> ResNet:
  """The authors' 2019 teacher "ResNet32" (stem 32, stages 64/128/256, 5 blocks each); = resnet32x4's layers."""
  return ResNet((32, 64, 128, 256), 5, num_classes, rngs=rngs, width=width)


def resnet8(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0) -> ResNet:
  """The authors' 2019 student "ResNet8" (stem 32, stages 64/128/256, 1 block each); = resnet8x4's layers."""
  return ResNet((32, 64, 128, 256), 1, num_classes, rngs=rngs, width=width)
