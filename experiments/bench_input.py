"""Input pipeline throughput against the VGG student's train step, in the same process.

    python experiments/bench_input.py [--data cifar10_jpeg] [--batch 128]

Measures, for CIFAR-10 from the JPEG archive at batch 128:
  startup        create_datasets (first run decodes and caches; later runs load the cache)
  iterator       uint8 batches from the grain iterator alone (host)
  delivered      iterator + jitted `preprocess` with the "flip_rotate_crop" training augmentation, result on device
  train_step     the VGG student's SGD + cross-entropy step on ready float32 batches
  train_step_aug the same step with `preprocess` inside it (where the trainer puts the augmentation)
The last line is one JSON object with the rates (images/s) and `ratio` = delivered / train_step (target >= 3).
"""

import argparse
import datetime
import json
import platform
import time

import flax
from flax import nnx
import grain
import jax
import ml_collections
import optax

from svdkd_jax import input_pipeline
from svdkd_jax import models


def data_config(path: str, cache_dir: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      source="archive", name="", data_dir="", path=path, cache_dir=cache_dir, train_split="train",
      eval_split="test", num_classes=10, image_size=32, class_subset=0, holdout=0, augment="flip_rotate_crop",
      normalization="dataset", num_workers=0))


def rate(fn, n: int, batch: int) -> float:
  fn()  # warm-up (compilation, prefetch threads)
  start = time.perf_counter()
  for _ in range(n):
    fn()
  return n * batch / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--data", default="cifar10_jpeg")
  parser.add_argument("--cache_dir", default="")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--pipeline_batches", type=int, default=100)
  parser.add_argument("--train_steps", type=int, default=10)
  args = parser.parse_args()
  print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}; python {platform.python_version()}, "
        f"jax {jax.__version__}, flax {flax.__version__}, grain {grain.__version__}, optax {optax.__version__}; "
        f"devices: {jax.devices()}")

  start = time.perf_counter()
  ds = input_pipeline.create_datasets(data_config(args.data, args.cache_dir), global_batch_size=args.batch,
                                      eval_batch_size=200, seed=0)
  startup = time.perf_counter() - start
  print(f"startup: {startup:.1f} s (train {ds.train_size}, eval {ds.eval_size}, {ds.image_shape})")

  it = ds.train_iterator()
  iterator = rate(lambda: next(it), args.pipeline_batches, args.batch)
  print(f"iterator: {iterator:.0f} images/s (uint8 batches, host)")

  mean, std = ds.mean, ds.std
  augment = jax.jit(lambda x, key: input_pipeline.preprocess(x, key, train=True, mean=mean, std=std,
                                                              augment="flip_rotate_crop"))
  key = jax.random.key(0)

  def deliver():
    augment(next(it)["image"], key).block_until_ready()
  delivered = rate(deliver, args.pipeline_batches, args.batch)
  print(f"delivered: {delivered:.0f} images/s (iterator + jitted sskd augmentation)")

  model = models.create("vgg_student", ds.num_classes, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.sgd(1e-2, momentum=0.9, nesterov=True), wrt=nnx.Param)

  def loss_fn(model, x, labels):
    logits, _ = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @nnx.jit
  def train_step(model, optimizer, x, labels):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, labels)
    optimizer.update(model, grads)
    return loss

  @nnx.jit
  def train_step_aug(model, optimizer, images, labels, key):
    x = input_pipeline.preprocess(images, key, train=True, mean=mean, std=std, augment="flip_rotate_crop")
    return train_step(model, optimizer, x, labels)

  batch = next(it)
  x = augment(batch["image"], key)
  step = rate(lambda: train_step(model, optimizer, x, batch["label"]).block_until_ready(), args.train_steps,
              args.batch)
  print(f"train_step: {step:.0f} images/s (VGG student, SGD + cross-entropy, float32 inputs ready)")
  step_aug = rate(lambda: train_step_aug(model, optimizer, batch["image"], batch["label"], key).block_until_ready(),
                  args.train_steps, args.batch)
  print(f"train_step_aug: {step_aug:.0f} images/s (same step with preprocess inside; "
        f"augmentation costs {100 * (step / step_aug - 1):.1f}% of the step)")
  print(json.dumps({"batch": args.batch, "startup_s": round(startup, 2), "iterator_img_s": round(iterator, 1),
                    "delivered_img_s": round(delivered, 1), "train_step_img_s": round(step, 1),
                    "train_step_aug_img_s": round(step_aug, 1), "ratio": round(delivered / step, 2)}))


if __name__ == "__main__":
  main()
