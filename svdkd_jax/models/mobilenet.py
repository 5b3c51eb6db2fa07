"""The paper's MobileNet pair (SSKD `nets/MobileNet.py`, extended to match the paper's table), for 32x32 inputs.

Stem conv 3x3 32 (no bias) + BN + ReLU; depthwise-separable blocks DSC(c, s) = depthwise 3x3 (stride s) + BN + ReLU
+ 1x1 conv -> c + BN + ReLU; global average pool; FC with bias.
  code student: DSC64 [tap 0], DSC128 s2 [tap 1], DSC256 s2 [tap 2], DSC512 s2 [tap 3]
  code teacher: DSC64 [tap 0]; DSC128 s2, DSC128 [tap 1]; DSC256 s2, DSC256 [tap 2]; DSC512 s2, DSC512 [tap 3]
The code's networks give 19.8M / 0.234M (student) and 46.0M / 0.589M (teacher), far from the paper's 37.8M / 0.82M
and 98.4M / 2.3M. `variant="paper"` (the default) is the most plausible definition we found: the code's networks
followed by a 1024-channel DSC (stride 1) before the pool, as MobileNet v1 ends, and for the teacher v1's run of
five stride-1 DSC512 (four more than the code):
  mobilenet_student (paper): 36.78M / 816,676 (paper 37.8M / 0.82M: FLOPs -2.7%, params equal at printed precision)
  mobilenet_teacher (paper): 97.12M / 2,247,588 (paper 98.4M / 2.3M: FLOPs -1.3%, params -2.3%)
(FLOPs = 2 x conv/dense multiply-accumulates at 32x32; params = trainable, BN scale/bias included.) Found by searching
stems 32/64, 0-5 extra DSC512 and 1024-channel tails; the poster's "CONV 64" stem fits worse (103.7M teacher).
The taps are the code's in both variants: [B,32,32,64], [B,16,16,128], [B,8,8,256], [B,4,4,512] at 32x32 (the
teacher's tap 3 is the last DSC512); at 64x64 each tap's height and width double (the pool is global).

BatchNorm: the authors' code calls slim's batch_norm without `is_training`, so it normalises with batch statistics at
train AND test time, for student and teacher. We do the standard thing by default (`model.eval()` uses running
averages); `batch_stats_always=True` reproduces the code (running averages are still updated, even in eval mode).
"""

from collections.abc import Sequence

from flax import nnx
import jax

from svdkd_jax.models import layers

_STUDENT = ((64, 1), (128, 2), (256, 2), (512, 2))
_TEACHER = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1))
_TAPS_STUDENT = (0, 1, 2, 3)
_TAPS_TEACHER = (0, 2, 4, 6)


class MobileNet(nnx.Module):
  """Call: x [B, H, W, 3] -> (logits [B, classes], taps at the block indices `taps`).

  `blocks`: (channels, stride) of each depthwise-separable block, before `width` scales the channels.
  """

  def __init__(self, blocks: Sequence[tuple[int, int]], taps: Sequence[int], num_classes: int, *, rngs: nnx.Rngs,
               width: float = 1.0, batch_stats_always: bool = False):
    # Batch statistics in eval mode too (the authors' code); None = follow model.train() / model.eval().
    self.force_batch_stats = False if batch_stats_always else None
    self.taps = tuple(taps)
    cin = layers.channels(32, width)
    self.stem = layers.conv(3, cin, 3, rngs=rngs)
    self.stem_bn = layers.batch_norm(cin, framework="slim", rngs=rngs)
    dsc = []
    for c, stride in blocks:
      cout = layers.channels(c, width)
      dsc.append(nnx.List([layers.conv(cin, cin, 3, stride, groups=cin, rngs=rngs),
                           layers.batch_norm(cin, framework="slim", rngs=rngs),
                           layers.conv(cin, cout, 1, rngs=rngs),
                           layers.batch_norm(cout, framework="slim", rngs=rngs)]))
      cin = cout
    self.blocks = nnx.List(dsc)
    self.head = layers.dense(cin, num_classes, rngs=rngs)

  def _bn(self, bn: nnx.BatchNorm, x: jax.Array) -> jax.Array:
    return nnx.relu(bn(x, use_running_average=self.force_batch_stats))

  def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    x = self._bn(self.stem_bn, self.stem(x))
    taps = []
    for i, (depthwise, bn1, pointwise, bn2) in enumerate(self.blocks):
      x = self._bn(bn2, pointwise(self._bn(bn1, depthwise(x))))
      if i in self.taps:
        taps.append(x)
    return self.head(layers.global_avg_pool(x)), taps


def _check_variant(variant: str) -> None:
  if variant not in ("paper", "code"):
    raise ValueError(f"MobileNet variant must be 'paper' (matches the paper's table) or 'code' (SSKD's file), "
                     f"got {variant!r}")


def mobilenet_student(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0, variant: str = "paper",
                      batch_stats_always: bool = False) -> MobileNet:
  """The paper's MobileNet student (see the module docstring for `variant` and `batch_stats_always`)."""
  _check_variant(variant)
  blocks = _STUDENT + (((1024, 1),) if variant == "paper" else ())
  return MobileNet(blocks, _TAPS_STUDENT, num_classes, rngs=rngs, width=width, batch_stats_always=batch_stats_always)


def mobilenet_teacher(num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0, variant: str = "paper",
                      batch_stats_always: bool = False) -> MobileNet:
  """The paper's MobileNet teacher (see the module docstring for `variant` and `batch_stats_always`)."""
  _check_variant(variant)
  blocks, taps = _TEACHER, _TAPS_TEACHER
  if variant == "paper":
    blocks = blocks + ((512, 1),) * 4 + ((1024, 1),)
    taps = (0, 2, 4, 10)
  return MobileNet(blocks, taps, num_classes, rngs=rngs, width=width, batch_stats_always=batch_stats_always)
