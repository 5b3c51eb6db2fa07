"""Normalisation and the authors' training augmentation, jittable, meant to run inside the jitted step.

SSKD `preprocessing/cifar100_preprocessing.py` (docs/method.md section 7.2), in this order and *after*
normalisation: random horizontal flip; random rotation uniform in +-15 degrees (nearest neighbour, zeros outside,
`tf.contrib.image.rotate`'s geometry); zero-pad 4 and random crop back to size. Zeros are in normalised space, as in
their code. The three steps are composed into one coordinate map per example, so the whole augmentation is a single
gather (no intermediate padded or rotated copies).

Why inside the step: uint8 batches are 4x smaller to move, and the 2-core host is the bottleneck; measured in
`experiments/bench_input.py`.
"""

import math

import jax
import jax.numpy as jnp

AUGMENTS = ("flip_rotate_crop", "flip_crop", "none")
# The authors' statistics: CIFAR-100 per-channel values in BGR order, applied to RGB images (docs/method.md 7.2).
SSKD_BGR_MEAN = (112.4776, 124.1058, 129.3773)
SSKD_BGR_STD = (70.4587, 65.4312, 68.2094)


def source_coordinates(height: int, width: int, flip: jax.Array, angle: jax.Array, offset: jax.Array,
                       pad: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Where each output pixel of flip -> rotate -> pad -> crop reads the input image, for one example.

  Args:
    height, width: image size (the output has the same size).
    flip: bool [], horizontal flip (applied first).
    angle: float [], counter-clockwise rotation in radians about the image centre.
    offset: int [2], (row, col) of the crop window in the image zero-padded by `pad`, each in [0, 2 * pad].
    pad: zero padding before the crop.

  Returns:
    rows, cols: int32 [H, W] input coordinates (clipped into range), valid: bool [H, W] (False reads a zero).
  """
  i, j = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
  # Crop of the padded image: output (i, j) is pixel (y, x) of the rotated image.
  y = (i + offset[0] - pad).astype(jnp.float32)
  x = (j + offset[1] - pad).astype(jnp.float32)
  valid = (y >= 0) & (y < height) & (x >= 0) & (x < width)
  # tf.contrib.image.rotate: output point (x, y) reads input (c x - s y + x0, s x + c y + y0), rounded.
  c, s = jnp.cos(angle), jnp.sin(angle)
  x0 = ((width - 1) - (c * (width - 1) - s * (height - 1))) / 2
  y0 = ((height - 1) - (s * (width - 1) + c * (height - 1))) / 2
  xr = jnp.floor(c * x - s * y + x0 + 0.5).astype(jnp.int32)
  yr = jnp.floor(s * x + c * y + y0 + 0.5).astype(jnp.int32)
  valid &= (yr >= 0) & (yr < height) & (xr >= 0) & (xr < width)
  # The rotated image is the flipped one: flipped column x reads column W - 1 - x.
  xr = jnp.where(flip, width - 1 - xr, xr)
  return jnp.clip(yr, 0, height - 1), jnp.clip(xr, 0, width - 1), valid


def transform(image: jax.Array, flip: jax.Array, angle: jax.Array, offset: jax.Array, pad: int = 4) -> jax.Array:
  """Applies flip, rotation and pad + crop with explicit parameters to one image [H, W, C] (zeros outside)."""
  rows, cols, valid = source_coordinates(image.shape[0], image.shape[1], flip, angle, offset, pad)
  return jnp.where(valid[..., None], image[rows, cols], jnp.zeros((), image.dtype))


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 [B, H, W, C] -> float32 (images - mean) / std, with mean, std [C] in [0, 255] units."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def preprocess(images: jax.Array, rng: jax.Array, *, train: bool, mean, std, augment: str = "flip_rotate_crop",
               pad: int = 4, max_angle_deg: float = 15.0) -> jax.Array:
  """Normalises uint8 [B, H, W, 3] to float32 [B, H, W, 3]; with `train`, also augments (per-example randomness).

  Args:
    images: uint8 [B, H, W, 3].
    rng: a jax PRNG key (unused when `train` is False or `augment` is "none").
    train: augment (True) or normalise only (evaluation: deterministic).
    mean, std: per-channel statistics [3] in [0, 255] units.
    augment: "flip_rotate_crop" (flip, rotate +-`max_angle_deg`, pad + crop), "flip_crop" (no rotation) or "none".
    pad: zero padding before the random crop.
    max_angle_deg: rotation range of "flip_rotate_crop".
  """
  if augment not in AUGMENTS:
    raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
  x = normalize(images, mean, std)
  if not train or augment == "none":
    return x
  batch = x.shape[0]
  k_flip, k_angle, k_crop = jax.random.split(rng, 3)
  flip = jax.random.bernoulli(k_flip, 0.5, (batch,))
  if augment == "flip_rotate_crop":
    limit = math.radians(max_angle_deg)
    angle = jax.random.uniform(k_angle, (batch,), minval=-limit, maxval=limit)
  else:
    angle = jnp.zeros((batch,))
  offset = jax.random.randint(k_crop, (batch, 2), 0, 2 * pad + 1)
  return jax.vmap(lambda im, f, a, o: transform(im, f, a, o, pad))(x, flip, angle, offset)
