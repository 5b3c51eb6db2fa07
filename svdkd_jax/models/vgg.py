"""VGG networks: the paper's teacher/student (SSKD `nets/VGG_teacher.py`, `nets/VGG.py`), the paper's VGG_stride
student (no released code), and the CRD benchmark's vgg8 / vgg13 (BatchNorm).

Paper VGG (docs/method.md section 8): conv 3x3 stride 1 "SAME" + bias + ReLU, no BatchNorm, 2x2/2 max-pool after
each of 4 blocks; flatten ((input/16)^2 * 512 = 2048 at 32x32) -> FC 1024 + ReLU + dropout 0.5 (x2 teacher, x1
student) -> FC classes. Teacher blocks 64,64 / 128,128 / 256x3 / 512x3, student 64 / 128 / 256 / 512. Taps: the
pooled output of each block, [B,16,16,64], [B,8,8,128], [B,4,4,256], [B,2,2,512] at 32x32. At 32x32, batch 1: teacher
576.26M FLOPs (2 x MACs) / 10,885,540 params (paper 576.3M / 10.9M), student 121.18M / 3,751,652 (paper 121.3M /
3.8M). `width` scales every conv channel count AND the FC hidden width (1024 -> round(1024 * width)).

VGG_stride (paper row: 15.6M FLOPs, 3.8M params): the student with every max-pool replaced by stride 2 in the
block's (last) conv, as the poster's "VGG w/ pool" vs "VGG w/ stride" legend suggests. Params are the student's
exactly (3,751,652 = 3.8M), taps have the same shapes, FLOPs are 33.59M, not 15.6M. The paper's figure cannot be met
by any network with these layers: keeping the 2x2x512 flatten that 3.8M params requires, every stride/pool
placement of the four 3x3 convs costs at least 16.8M FLOPs (brute force over stride 1/2/4 and pool 1/2 per block);
15.6M is closest to our count taken as MACs (16.8M), so the paper may have printed MACs for this row.

Other input sizes: the paper VGGs flatten the last map, so pass `input_size` (a multiple of 16); at 64x64 every tap's
height and width double ([B,32,32,64] ... [B,4,4,512]) and the first FC grows to 8192 inputs. CRD VGG: as in its
code, at 64x64 a 4th max-pool runs before block 4, so taps are [B,32,32,128], [B,16,16,256], [B,8,8,512],
[B,4,4,512].

Dropout draws from the `rngs` passed to the call (`model(x, rngs=nnx.Rngs(dropout=key))`, as the trainer does), else
from the `dropout` stream the network was built with (`nnx.Rngs(params=..., dropout=...)` or `nnx.Rngs(seed)`).
"""

from collections.abc import Sequence

from flax import nnx
import jax

from svdkd_jax.models import layers

TEACHER_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512))
STUDENT_BLOCKS = ((64,), (128,), (256,), (512,))


class VGG(nnx.Module):
  """The paper's VGG (no BatchNorm). `downsample="pool"` (max-pool after each block) or `"stride"` (stride 2 in
  each block's last conv, VGG_stride). Call: x [B, H, W, 3] -> (logits [B, classes], 4 taps)."""

  def __init__(self, blocks: Sequence[Sequence[int]], hidden: Sequence[int], num_classes: int, *, rngs: nnx.Rngs,
               width: float = 1.0, input_size: int = 32, downsample: str = "pool", dropout: float = 0.5):
    if downsample not in ("pool", "stride"):
      raise ValueError(f"downsample must be 'pool' or 'stride', got {downsample!r}")
    if input_size % 16:
      raise ValueError(f"input_size must be a multiple of 16 (4 halvings before the flatten), got {input_size}")
    self.downsample = downsample
    self.input_size = input_size
    cin, stages = 3, []
    for block in blocks:
      convs = []
      for i, c in enumerate(block):
        stride = 2 if downsample == "stride" and i == len(block) - 1 else 1
        cout = layers.channels(c, width)
        convs.append(layers.conv(cin, cout, 3, stride, use_bias=True, rngs=rngs))
        cin = cout
      stages.append(nnx.List(convs))
    self.blocks = nnx.List(stages)
    dims = [(input_size // 16) ** 2 * cin] + [layers.channels(h, width) for h in hidden]
    self.hidden = nnx.List([layers.dense(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
    try:
      self.dropout = nnx.Dropout(dropout, rngs=rngs)
    except KeyError as e:
      raise ValueError("the paper VGGs use dropout and need a 'dropout' rng stream: build them with "
                       "nnx.Rngs(params=..., dropout=...) or nnx.Rngs(seed)") from e
    self.head = layers.dense(dims[-1], num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> tuple[jax.Array, list[jax.Array]]:
    """`rngs`: the dropout masks' stream (train mode); None draws from the stream the network was built with."""
    if x.shape[1:3] != (self.input_size, self.input_size):
      raise ValueError(f"this VGG was built for {self.input_size}x{self.input_size} inputs (it flattens the last "
                       f"map), got {x.shape[1]}x{x.shape[2]}: pass input_size={x.shape[1]} to models.create")
    taps = []
    for block in self.blocks:
      for c in block:
        x = nnx.relu(c(x))
      if self.downsample == "pool":
        x = layers.max_pool(x)
      taps.append(x)
    x = x.reshape(x.shape[0], -1)
    for fc in self.hidden:
      x = self.dropout(nnx.relu(fc(x)), rngs=rngs)
    return self.head(x), taps


def vgg_teacher(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0, input_size: int = 32,
                dropout: float = 0.5) -> VGG:
  """The paper's VGG teacher: 10 convs (2,2,3,3), FC 1024 x2 (scaled by width); 576.3M FLOPs, 10.9M params."""
  return VGG(TEACHER_BLOCKS, (1024, 1024), num_classes, rngs=rngs, width=width, input_size=input_size,
             dropout=dropout)


def vgg_student(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0, input_size: int = 32,
                dropout: float = 0.5) -> VGG:
  """The paper's VGG student: 4 convs, FC 1024 (scaled by width); 121.3M FLOPs, 3.8M params."""
  return VGG(STUDENT_BLOCKS, (1024,), num_classes, rngs=rngs, width=width, input_size=input_size, dropout=dropout)


def vgg_stride_student(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0, input_size: int = 32,
                       dropout: float = 0.5) -> VGG:
  """The paper's VGG_stride student (reconstructed, see the module docstring): stride-2 convs instead of pools."""
  return VGG(STUDENT_BLOCKS, (1024,), num_classes, rngs=rngs, width=width, input_size=input_size,
             downsample="stride", dropout=dropout)


class CifarVGG(nnx.Module):
  """The CRD benchmark's VGG with BatchNorm (RepDistiller `models/vgg.py`): 5 blocks of conv 3x3 (bias) + BN + ReLU,
  max-pool after blocks 0-2 (and 3 for 64x64 inputs), global average pool, FC 512 -> classes.
  Taps: the ReLU outputs of blocks 1-4 (`feats[1:]`, as the KD-SVD port in mdistiller), at 32x32
  [B,16,16,128], [B,8,8,256], [B,4,4,512], [B,4,4,512]."""

  def __init__(self, blocks: Sequence[Sequence[int]], num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0):
    cin, stages = 3, []
    for block in blocks:
      units = []
      for c in block:
        cout = layers.channels(c, width)
        units.append(nnx.List([layers.conv(cin, cout, 3, use_bias=True, padding=layers.TORCH_PAD, rngs=rngs),
                               layers.batch_norm(cout, framework="torch", rngs=rngs)]))
        cin = cout
      stages.append(nnx.List(units))
    self.blocks = nnx.List(stages)
    self.head = layers.dense(cin, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    pool_before_last = x.shape[1] == 64  # as the CRD code: an extra pool for Tiny-ImageNet-size inputs
    taps = []
    for i, block in enumerate(self.blocks):
      for c, bn in block:
        x = nnx.relu(bn(c(x)))
      if i:
        taps.append(x)
      if i < 3 or (i == 3 and pool_before_last):
        x = layers.max_pool(x)
    return self.head(layers.global_avg_pool(x)), taps


def vgg8(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0) -> CifarVGG:
  """CRD `vgg8_bn`: one conv per block (64, 128, 256, 512, 512); 3,965,028 params at 100 classes."""
  return CifarVGG(((64,), (128,), (256,), (512,), (512,)), num_classes, rngs=rngs, width=width)


def vgg13(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0) -> CifarVGG:
  """CRD `vgg13_bn`: two convs per block; 9,462,180 params at 100 classes."""
  return CifarVGG(((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)), num_classes, rngs=rngs, width=width)
