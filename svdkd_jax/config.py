"""Every config key a run reads, with its meaning and default, and the one check of a config before a run.

`default()` is the schema: experiment configs (configs/*.py, built with `svdkd_jax.recipes`) start from it and
change values, never keys. It is locked, so a typo in a key fails where it is written (ml_collections' lock: "Did
you mean ...?"). `config.data` is read by `input_pipeline`, `config.optim` and `config.combine` by `optim`,
`config.distill` by `distill.from_config`, `config.model` / `config.teacher` by `models.create`, the rest by `train`.

`validate(config)` is the one check of a config, run by `train.train_and_evaluate` before anything is built: unknown
or missing keys, network and method names, and values, each reported as a one-line ValueError. On the command
line, `main.py` reports an override of an unknown key with `check_key`'s message (the same as `validate`'s).
"""

import difflib

import ml_collections

MECHANISMS = ("1stage", "2stage")
TEACHER_WEIGHTS = ("trained", "random")
TEACHER_IMAGES = ("same", "deranged")
CE_REDUCTIONS = ("batch", "labelled")


def default() -> ml_collections.ConfigDict:
  """Every key with its default: the paper's CIFAR-100 VGG recipe (docs/method.md 7), no distillation. Locked."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  # The network this run trains. A teacher run (T-DNN) and a student-alone run (S-DNN) set distill.method = "none".
  config.model = ml_collections.ConfigDict()
  config.model.name = "vgg_student"
  config.model.width = 1.0
  config.model.dropout = 0.5  # rate on the hidden FC layers (paper VGGs only; the paper's 0.5)

  # Frozen teacher for distillation runs: restored from a teacher run's workdir (its best, else latest checkpoint)
  # or an explicit checkpoint path. Unused when distill.method == "none".
  config.teacher = ml_collections.ConfigDict()
  config.teacher.name = "vgg_teacher"
  config.teacher.width = 1.0
  config.teacher.dropout = 0.5
  config.teacher.workdir = ""
  config.teacher.checkpoint = ""
  # trained: restored as above. random: an untrained teacher (the architecture's random initialisation, seed
  # config.seed + 100, frozen), a control for what distillation adds beyond the loss's form.
  config.teacher.weights = "trained"

  # Distillation method and its options (see svdkd_jax.distill.get).
  config.distill = ml_collections.ConfigDict()
  # none | kd_svd | fsp | soft_target, or several joined by "+" (their losses summed: one distillation gradient).
  config.distill.method = "none"
  config.distill.k = 1  # kd_svd: number of distilled singular vectors per tap
  config.distill.beta = 8.0  # kd_svd: RBF width
  # kd_svd's SVD backward: exact (the gradient of the loss; the best mode of the regime table, README) | paper (the
  # poster's truncated gradient) | sskd_code (what the released code computes). docs/svd_gradient.md 7.
  config.distill.svd_grad = "exact"
  config.distill.loss_scale = "sskd"  # kd_svd: sskd (batch sum x 1/2 x sqrt(k)) | mean
  config.distill.temperature = 4.0  # soft_target
  # same: each student image is compared with the teacher's outputs on the same image. deranged: on another image
  # of the batch (a seeded derangement per step, no image paired with itself), a control for the teacher's knowledge.
  config.distill.teacher_images = "same"
  # 1stage: main task + clipped distillation gradient every step (the released code).
  # 2stage: distillation alone for `init_epochs`, then the main task alone (FSP's procedure; the paper's table).
  # The main phase is the full `train.epochs` recipe (optimiser reset, schedule restarted): init_epochs + epochs.
  config.distill.mechanism = "1stage"
  config.distill.init_epochs = 0

  # How the distillation gradient joins the main one (see svdkd_jax.optim.combine_gradients).
  config.combine = ml_collections.ConfigDict()
  config.combine.rule = "sskd"  # sskd | poster | sum | global_norm
  config.combine.weight = 1.0  # distillation weight (used by "sum")

  # Data (see svdkd_jax.input_pipeline).
  config.data = ml_collections.ConfigDict()
  config.data.source = "tfds"  # tfds | archive | digits
  config.data.name = "cifar100"  # tfds dataset name
  config.data.data_dir = ""  # tfds data_dir ("" = tfds default; a GCS path works)
  config.data.path = ""  # archive: folder holding meta.json and <split>.npz
  config.data.cache_dir = ""  # archive: where the decoded uint8 cache goes ("" = next to the archive or ~/.cache)
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.num_classes = 100
  config.data.image_size = 32  # images are resized to this (0 = keep)
  config.data.class_subset = 0  # 0 = all classes, n = the first n classes
  config.data.holdout = 0  # hold out this many training examples as the eval split (tuning without the test set)
  # A fixed, seeded subset of the training split (0 = all); with it, `holdout` draws from the images outside it.
  config.data.train_per_class = 0
  # Label budget (0 = all): a fixed, seeded draw of this many labelled images per class; the other training images
  # stay in every batch and distillation loss with label -1 and zero cross-entropy weight (the released code's 50 %).
  config.data.labels_per_class = 0
  config.data.augment = "sskd"  # sskd (flip, rotate +-15 deg, pad 4 + crop) | flip_crop | none
  config.data.normalization = "dataset"  # dataset (per-channel stats of the train split) | sskd_bgr (authors')
  config.data.num_workers = 0  # grain worker processes (0 = in the main process)

  # Optimiser (see svdkd_jax.optim). Paper: Nesterov 0.9, 1e-2 -> 1e-3 at epoch 100 -> 1e-4 at 150, coupled L2 1e-4.
  config.optim = ml_collections.ConfigDict()
  config.optim.name = "sgd"  # sgd | adam
  config.optim.learning_rate = 1e-2
  config.optim.momentum = 0.9
  config.optim.nesterov = True
  config.optim.boundaries = (100, 150)  # epochs at which the learning rate is multiplied by decay_factor
  config.optim.decay_factor = 0.1
  config.optim.weight_decay = 1e-4  # on conv/dense kernels only
  config.optim.decoupled_weight_decay = False  # False: L2 term in the main loss (the authors' code)

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 200
  config.train.batch_size = 128  # global batch
  config.train.eval_batch_size = 200
  config.train.log_every_steps = 50
  config.train.checkpoint_every_steps = 500
  config.train.keep_checkpoints = 3
  config.train.max_steps = 0  # > 0 stops early (tests, smoke runs)
  # Cross-entropy with a label budget: "batch" = mean over every image of the batch, unlabelled ones counting as
  # zero (the released code); "labelled" = mean over the labelled images of the batch. Equal with all labels.
  config.train.ce_reduction = "batch"
  config.lock()
  return config


def check_key(key: str) -> None:
  """Raises the ValueError of `validate` if the dotted `key` (e.g. "train.epochs") is not a key of `default()`."""
  node, prefix = default(), ""
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      _unknown(prefix + part, prefix, node)
    node, prefix = node[part], f"{prefix}{part}."


def _unknown(name: str, prefix: str, schema) -> None:
  valid = sorted(schema.keys()) if isinstance(schema, ml_collections.ConfigDict) else []
  close = difflib.get_close_matches(name[len(prefix):], valid, n=1)
  hint = f" Did you mean {prefix + close[0]!r}?" if close else ""
  where = f" of {prefix[:-1]}" if prefix else ""
  listed = ", ".join(valid) if valid else f"none ({prefix[:-1]} is a value, not a section)"
  raise ValueError(f"Unknown config key {name!r}.{hint} Valid keys{where}: {listed}.")


def _check_keys(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, prefix: str = "") -> None:
  for key in config.keys():
    if key not in schema:
      _unknown(prefix + key, prefix, schema)
    if isinstance(schema[key], ml_collections.ConfigDict):
      if not isinstance(config[key], ml_collections.ConfigDict):
        raise ValueError(f"Config key {prefix + key!r} must be a section with keys {', '.join(schema[key].keys())}.")
      _check_keys(config[key], schema[key], f"{prefix}{key}.")
  missing = [key for key in schema.keys() if key not in config]
  if missing:
    raise ValueError(f"Config key(s) {', '.join(repr(prefix + k) for k in missing)} missing: start the config "
                     "from svdkd_jax.config.default().")


def validate(config: ml_collections.ConfigDict):
  """Raises a one-line ValueError naming the first problem: an unknown or missing key, a network or method name,
  a value out of range (including the distillation options, checked by `distill.from_config`).

  Returns the run's distillation function, `distill.from_config(config.distill)`: building it is the check of its
  options, and the trainer passes this one instance down (it is built once per run).
  """
  # Imported here: config files import this module, and it must not pull in JAX (main.py loads them first).
  from svdkd_jax import distill  # pylint: disable=g-import-not-at-top
  from svdkd_jax import models  # pylint: disable=g-import-not-at-top
  _check_keys(config, default())
  for field in ("model.name", "teacher.name"):
    section, key = field.split(".")
    if config[section][key] not in models.names():
      raise ValueError(f"config.{field}={config[section][key]!r} is not a network; valid: "
                       f"{', '.join(sorted(models.names()))}.")
  if not distill.is_method(config.distill.method):
    raise ValueError(f"config.distill.method={config.distill.method!r}; valid: {', '.join(distill.NAMES)}, or "
                     "several joined by '+'.")
  for field, valid in (("teacher.weights", TEACHER_WEIGHTS), ("distill.teacher_images", TEACHER_IMAGES)):
    section, key = field.split(".")
    if config[section][key] not in valid:
      raise ValueError(f"config.{field}={config[section][key]!r}; valid: {', '.join(valid)}.")
  if config.distill.mechanism not in MECHANISMS:
    raise ValueError(f"config.distill.mechanism={config.distill.mechanism!r}; valid: {', '.join(MECHANISMS)}.")
  if config.distill.mechanism == "2stage" and config.distill.method != "none" and config.distill.init_epochs < 1:
    raise ValueError("distill.mechanism='2stage' needs distill.init_epochs >= 1 (epochs of distillation alone).")
  if config.train.ce_reduction not in CE_REDUCTIONS:
    raise ValueError(f"config.train.ce_reduction={config.train.ce_reduction!r}; valid: {', '.join(CE_REDUCTIONS)}.")
  per_class, labelled = config.data.train_per_class, config.data.labels_per_class
  if per_class < 0 or labelled < 0 or (per_class and labelled > per_class):
    raise ValueError(f"config.data.labels_per_class={labelled} must be >= 0 and at most data.train_per_class="
                     f"{per_class} (0 = all).")
  if config.train.epochs < 1:
    raise ValueError(f"train.epochs={config.train.epochs} must be >= 1.")
  return distill.from_config(config.distill)  # Raises on bad options (k, beta, svd_grad, ...).
