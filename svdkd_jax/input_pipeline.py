"""Input pipeline: `config.data` -> shuffled, sharded, checkpointable uint8 batches, plus the jitted augmentation.

    ds = create_datasets(config.data, global_batch_size=128, eval_batch_size=200, seed=0)
    it = ds.train_iterator()               # endless; it.get_state() is a JSON-able dict, it.set_state(state)
    batch = to_global(next(it), sharding)  # {"image": uint8 [B, H, W, 3], "label": int32 [B]} on the mesh
    x = preprocess(batch["image"], rng, train=True, mean=ds.mean, std=ds.std, augment="flip_rotate_crop")  # in the step
    # With data.labels_per_class, training labels outside the budget are -1 (sources.UNLABELLED).
    for batch in ds.eval_batches(): ...    # every eval example once; "mask" marks the padding of the last batch

Order: epoch `e` visits the training examples in grain's `index_shuffle` permutation seeded by `seed + e` (the one
`grain.MapDataset.shuffle` uses), drops the last `train_size % global_batch_size`, and cuts it into global batches;
process `p` of `P` takes rows `[p b, (p + 1) b)` of each global batch, `b = global_batch_size / P`. So the global
batches do not depend on the number of processes, and an epoch never spills into the next one. grain runs the
batch reads ahead in threads (or `num_workers` processes) and records the iterator position.

`config.data` is checked by `svdkd_jax.config.validate`; this module reads it as given.
"""

import dataclasses
import logging
import math
from collections.abc import Iterator
from typing import Any

from absl import flags
import grain
import jax
import numpy as np

from svdkd_jax.data import augment as augment_lib
from svdkd_jax.data import sources

HOLDOUT_SEED = 0  # fixed: the held-out examples do not change with config.seed
SUBSET_SEED = 0  # fixed: data.train_per_class draws the same subset for every run
LABEL_SEED = 1  # fixed: data.labels_per_class keeps the same labels for every run


def preprocess(images: jax.Array, rng: jax.Array | None, *, train: bool, mean, std,
               augment: str = "flip_rotate_crop") -> jax.Array:
  """Normalises uint8 `[B, H, W, 3]` to float32 `[B, H, W, 3]` and, with `train`, augments it (see
  `svdkd_jax.data.augment.preprocess`). `augment`: a `config.data.augment` value (`augment.AUGMENTS`)."""
  return augment_lib.preprocess(images, rng, train=train, mean=mean, std=std, augment=augment)


def _epoch_indices(positions: np.ndarray, num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """Record indices at `positions` of epoch `epoch`'s permutation (grain.MapDataset.shuffle's per-epoch order)."""
  epoch_seed = (seed + epoch) % 2**32
  return np.array([grain.experimental.index_shuffle(int(p), max_index=num_examples - 1, seed=epoch_seed, rounds=4)
                   for p in positions], np.int64)


class _TrainBatch:
  """Global step -> this process's rows of that global batch (a picklable callable for grain workers)."""

  def __init__(self, source: sources.Source, *, seed: int, global_batch: int, local_batch: int, offset: int,
               steps_per_epoch: int):
    self.source, self.seed = source, seed
    self.global_batch, self.local_batch, self.offset = global_batch, local_batch, offset
    self.steps_per_epoch = steps_per_epoch

  def __call__(self, step: int, _: Any) -> dict[str, np.ndarray]:
    epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
    start = step_in_epoch * self.global_batch + self.offset
    idx = _epoch_indices(np.arange(start, start + self.local_batch), len(self.source), self.seed, epoch)
    return self.source.gather(idx)


class _EvalBatch:
  """Eval batch number -> this process's rows, zero-padded past the end, with "mask" marking real examples."""

  def __init__(self, source: sources.Source, *, global_batch: int, local_batch: int, offset: int):
    self.source = source
    self.global_batch, self.local_batch, self.offset = global_batch, local_batch, offset

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    pos = k * self.global_batch + self.offset + np.arange(self.local_batch)
    mask = pos < len(self.source)
    batch = self.source.gather(pos[mask]) if mask.any() else self.source.gather(np.zeros(1, np.int64))
    pad = self.local_batch - int(mask.sum())
    image = np.concatenate([batch["image"][:len(pos[mask])],
                            np.zeros((pad, *batch["image"].shape[1:]), np.uint8)])
    label = np.concatenate([batch["label"][:len(pos[mask])], np.zeros(pad, np.int32)]).astype(np.int32)
    return {"image": image, "label": label, "mask": mask}


@dataclasses.dataclass
class Datasets:
  """Train and eval sources with their batching; see the module docstring."""
  train: sources.Source
  eval: sources.Source
  num_classes: int
  mean: np.ndarray  # float32 [3], [0, 255] units
  std: np.ndarray  # float32 [3]
  global_batch_size: int
  eval_batch_size: int
  seed: int
  num_workers: int = 0
  process_index: int = dataclasses.field(default_factory=jax.process_index)
  process_count: int = dataclasses.field(default_factory=jax.process_count)

  def __post_init__(self):
    for name, size in (("global_batch_size", self.global_batch_size), ("eval_batch_size", self.eval_batch_size)):
      if size <= 0 or size % self.process_count:
        raise ValueError(f"{name}={size} must be a positive multiple of the process count {self.process_count}")
    if self.steps_per_epoch == 0:
      raise ValueError(f"The training split has {self.train_size} examples, fewer than one global batch of "
                       f"{self.global_batch_size}: lower config.train.batch_size")

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train[0]["image"].shape)

  @property
  def train_size(self) -> int:
    return len(self.train)

  @property
  def eval_size(self) -> int:
    return len(self.eval)

  @property
  def steps_per_epoch(self) -> int:
    return self.train_size // self.global_batch_size

  @property
  def num_eval_batches(self) -> int:
    return math.ceil(self.eval_size / self.eval_batch_size)

  def _read_options(self) -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)

  def train_iterator(self, epoch_start_state: dict[str, Any] | None = None) -> grain.DatasetIterator:
    """Endless iterator of this process's share of each global batch: {"image": uint8 [b, H, W, 3], "label": int32 [b]}.

    `it.get_state()` is a JSON-able dict (save it, e.g. with `orbax.checkpoint.args.JsonSave`, or hand the iterator
    to `grain.checkpoint.CheckpointSave`); `epoch_start_state` (or `it.set_state`) resumes at exactly that batch,
    wherever it is in an epoch. Batch `n` is step `n`: epoch `n // steps_per_epoch`.
    """
    local = self.global_batch_size // self.process_count
    read = _TrainBatch(self.train, seed=self.seed, global_batch=self.global_batch_size, local_batch=local,
                       offset=self.process_index * local, steps_per_epoch=self.steps_per_epoch)
    ds = grain.MapDataset.range(self.steps_per_epoch).repeat(None).map_with_index(read)
    it_ds = ds.to_iter_dataset(self._read_options())
    if self.num_workers > 0:
      if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside absl.app (tests, notebooks)
        flags.FLAGS.mark_as_parsed()
      it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers))
    it = iter(it_ds)
    if epoch_start_state is not None:
      it.set_state(epoch_start_state)
    return it

  def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
    """Every eval example exactly once: {"image": uint8 [e, H, W, 3], "label": int32 [e], "mask": bool [e]}."""
    local = self.eval_batch_size // self.process_count
    read = _EvalBatch(self.eval, global_batch=self.eval_batch_size, local_batch=local,
                      offset=self.process_index * local)
    return iter(grain.MapDataset.range(self.num_eval_batches).map(read).to_iter_dataset(self._read_options()))


def _load_split(data_config, split: str) -> tuple[sources.Source, int]:
  """Reads one split of the configured source; returns it and the source's number of classes."""
  source = data_config.source
  image_size = data_config.get("image_size", 0)
  if source == "digits":
    return sources.load_digits(split, image_size), 10
  if source == "archive":
    return (sources.load_archive(data_config.path, split, image_size, data_config.get("cache_dir", "")),
            sources.archive_num_classes(data_config.path))
  if source == "tfds":
    return sources.load_tfds(data_config.name, split, data_config.get("data_dir", ""), image_size,
                             data_config.get("image_key", "image"), data_config.get("label_key", "label"))
  raise ValueError(f"unknown data source {source!r}")  # Not a validated config (svdkd_jax.config.validate).


def create_datasets(data_config, *, global_batch_size: int, eval_batch_size: int, seed: int) -> Datasets:
  """Builds the train and eval splits described by `config.data` (see svdkd_jax.config.default)."""
  train, num_classes = _load_split(data_config, data_config.train_split)
  if data_config.get("class_subset", 0):
    if data_config.class_subset > num_classes:
      raise ValueError(f"class_subset={data_config.class_subset} exceeds the dataset's {num_classes} classes")
    num_classes = data_config.class_subset
    train = sources.class_subset(train, num_classes)
  rest = None
  if data_config.get("train_per_class", 0):
    # A fixed subset of the training split; a holdout then comes from the examples outside it, so held-out
    # probes train on exactly the images (and labels) of the final runs.
    kept = sources.per_class_draw(sources.source_labels(train), data_config.train_per_class, SUBSET_SEED)
    rest = sources.subset(train, np.setdiff1d(np.arange(len(train)), kept))
    train = sources.subset(train, kept)
  if data_config.get("holdout", 0):
    if rest is None:
      train, eval_ = sources.holdout_split(train, data_config.holdout, HOLDOUT_SEED)
    else:
      _, eval_ = sources.holdout_split(rest, data_config.holdout, HOLDOUT_SEED)
  else:
    eval_, _ = _load_split(data_config, data_config.eval_split)
    if data_config.get("class_subset", 0):
      eval_ = sources.class_subset(eval_, num_classes)

  wanted = data_config.get("num_classes", 0)
  if wanted and wanted < num_classes:
    raise ValueError(f"The data has {num_classes} classes (labels up to {num_classes - 1}) but config.data.num_classes"
                     f" = {wanted}: set --config.data.num_classes={num_classes} or --config.data.class_subset={wanted}")
  if wanted and wanted > num_classes:
    logging.warning("config.data.num_classes=%d but the data has %d classes; using %d.", wanted, num_classes,
                    num_classes)

  normalization = data_config.get("normalization", "dataset")
  if normalization == "dataset":
    mean, std = sources.channel_stats(train)
  elif normalization == "cifar100_bgr":
    mean, std = np.array(augment_lib.SSKD_BGR_MEAN, np.float32), np.array(augment_lib.SSKD_BGR_STD, np.float32)
  else:
    raise ValueError(f"unknown normalization {normalization!r}")  # Not a validated config.

  if data_config.get("labels_per_class", 0):  # After the statistics, which use every training image.
    train = label_budget(train, data_config.labels_per_class)
  return Datasets(train=train, eval=eval_, num_classes=num_classes, mean=mean, std=std,
                  global_batch_size=global_batch_size, eval_batch_size=eval_batch_size, seed=seed,
                  num_workers=data_config.get("num_workers", 0))


def label_budget(train: sources.Source, labels_per_class: int) -> sources.Source:
  """Keeps the labels of a fixed draw of `labels_per_class` images per class; the others become UNLABELLED (-1).

  As in the authors' released CIFAR-100 conversion (which keeps the first 250 labels of each class): unlabelled
  images stay in every batch and every distillation loss, with zero cross-entropy weight (see train.ce_reduction).
  """
  labels = sources.source_labels(train)
  keep = sources.per_class_draw(labels, labels_per_class, LABEL_SEED)
  logging.info("Label budget: %d of %d training images keep their label (%d per class).", len(keep), len(labels),
               labels_per_class)
  return sources.withhold_labels(train, keep)


def to_global(batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
  """Assembles every process's local batch into global arrays laid out by `sharding` (batch on the data axis)."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
