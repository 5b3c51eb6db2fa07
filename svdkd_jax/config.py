"""Every config key a run reads, with its meaning, default and valid values, and the one check of a config.

`default()` is the schema: experiment configs (configs/*.py, built with `svdkd_jax.recipes`) start from it and
change values, never keys. It is locked, so a typo in a key fails where it is written (ml_collections' lock: "Did
you mean ...?"). `config.data` is read by `input_pipeline`, `config.optim` and `config.combine` by `optim`,
`config.distill` by `distill.from_config` and the trainer, `config.model` / `config.teacher` by `networks`, the rest
by `train`.

`validate(config)` is the check of every key and value, each problem a one-line ValueError. The trainer runs it
(through `run_config.validate_run`, which adds the names of networks and distillation methods) before it touches
the workdir. This module imports nothing of the package: config files and the command line load it without JAX.

Values keep their meaning across versions: `ALIASES` maps the names earlier runs wrote (in `config.json`,
`summary.json` and their commands) to today's, and `canonical(config)` applies it wherever a config is read.
"""

import copy
import difflib
import numbers
from typing import Any

import ml_collections

# The valid values of every key with a fixed set of them (the names of networks and distillation methods come from
# their registries, see run_config). They repeat the lists of the modules that implement them (svd.GRAD_MODES,
# augment.AUGMENTS, ...) because this module imports nothing of the package (configs load and are checked
# without JAX); tests/test_configs.py keeps the two equal.
CHOICES = {
    "teacher.weights": ("trained", "random"),
    "distill.svd_grad": ("exact", "kept_triplets", "released_code"),
    "distill.loss_scale": ("sum", "mean"),
    "distill.svd_solver": ("auto", "eigh", "subspace", "lanczos"),
    "distill.teacher_images": ("same", "deranged"),
    "distill.mechanism": ("1stage", "2stage"),
    "combine.rule": ("clip_per_tensor", "rescale_per_tensor", "sum", "clip_global_norm"),
    "data.source": ("tfds", "archive", "digits"),
    "data.augment": ("flip_rotate_crop", "flip_crop", "none"),
    "data.normalization": ("dataset", "cifar100_bgr"),
    "optim.name": ("sgd", "adam"),
    "train.ce_reduction": ("batch", "labelled"),
    "train.compute_dtype": ("float32", "bfloat16"),
}
# Earlier names of values, {key: {earlier name: name}}: runs written with them read as the same runs today.
ALIASES = {
    "distill.svd_grad": {"paper": "kept_triplets", "sskd_code": "released_code"},
    "distill.loss_scale": {"sskd": "sum"},
    "combine.rule": {"sskd": "clip_per_tensor", "poster": "rescale_per_tensor", "global_norm": "clip_global_norm"},
    "data.augment": {"sskd": "flip_rotate_crop"},
    "data.normalization": {"sskd_bgr": "cifar100_bgr"},
}
# Numbers that must be > 0, and >= 0.
POSITIVE = ("model.width", "teacher.width", "distill.k", "distill.beta", "distill.temperature", "distill.at_beta",
            "optim.learning_rate", "train.epochs", "train.batch_size", "train.eval_batch_size",
            "train.log_every_steps", "train.checkpoint_every_steps", "train.keep_checkpoints")
NON_NEGATIVE = ("model.dropout", "teacher.dropout", "distill.init_epochs", "distill.dkd_alpha", "distill.dkd_beta",
                "distill.dkd_warmup", "combine.weight", "data.num_classes",
                "data.image_size", "data.class_subset", "data.holdout", "data.train_per_class",
                "data.labels_per_class", "data.num_workers", "optim.momentum", "optim.decay_factor",
                "optim.weight_decay", "train.max_steps")
INTEGERS = ("seed", "distill.k", "distill.init_epochs", "distill.dkd_warmup", "data.num_classes", "data.image_size",
            "data.class_subset", "data.holdout", "data.train_per_class", "data.labels_per_class", "data.num_workers",
            "train.epochs", "train.batch_size", "train.eval_batch_size", "train.log_every_steps",
            "train.checkpoint_every_steps", "train.keep_checkpoints", "train.max_steps")
# The `config.distill` keys the trainer reads. Every other key of `config.distill` is an option of the distillation
# methods, passed to `distill.get` under its own name to the methods that declare it.
DISTILL_RUN_KEYS = ("method", "teacher_images", "mechanism", "init_epochs")
# Keys that steer a run without changing its result: a restart may change them (see svdkd_jax.workdir).
RUN_CONTROL_KEYS = ("train.max_steps", "train.log_every_steps", "train.checkpoint_every_steps",
                    "train.keep_checkpoints", "data.num_workers", "data.data_dir", "data.cache_dir", "data.path",
                    "teacher.workdir", "teacher.checkpoint")
# The one key whose growth extends a run instead of making it another run.
EXTENDABLE_KEY = "train.epochs"


def _networks() -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  # The network this run trains. A teacher run (T-DNN) and a student-alone run (S-DNN) set distill.method = "none".
  model = ml_collections.ConfigDict()
  model.name = "vgg_student"
  model.width = 1.0
  model.dropout = 0.5  # rate on the hidden FC layers (paper VGGs only; the paper's 0.5)
  # Taps by name (svdkd_jax.taps): submodule paths such as "stage2" or "blocks.3" whose outputs are the taps, in
  # order. () = the network's own taps (every network of svdkd_jax.models has them; a network registered
  # logits_only has none).
  model.taps = ()
  # Frozen teacher for distillation runs: restored from a teacher run's workdir (its best, else latest checkpoint)
  # or an explicit checkpoint path. Unused when distill.method == "none".
  teacher = ml_collections.ConfigDict()
  teacher.name = "vgg_teacher"
  teacher.width = 1.0
  teacher.dropout = 0.5
  teacher.taps = ()  # as model.taps, for the teacher: its tap i is paired with the student's tap i
  teacher.workdir = ""
  teacher.checkpoint = ""
  # trained: restored as above. random: an untrained teacher (the architecture's random initialisation, seed
  # config.seed + 100, frozen), a control for what distillation adds beyond the loss's form.
  teacher.weights = "trained"
  return model, teacher


def _distill() -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  # Distillation method and its options (see svdkd_jax.distill.get).
  distill = ml_collections.ConfigDict()
  # none | kd_svd | fsp | soft_target | attention_transfer | dkd, or several joined by "+" (their losses summed:
  # one distillation gradient).
  distill.method = "none"
  distill.k = 1  # kd_svd: number of distilled singular vectors per tap
  distill.beta = 8.0  # kd_svd: RBF width
  # kd_svd's SVD backward (docs/svd_gradient.md): exact (the gradient of the loss; the best mode of the regime
  # table, README) | kept_triplets (the poster's gradient on the k kept triplets only) | released_code (what the
  # authors' released code computes: zero at taps with HW >= D).
  distill.svd_grad = "exact"
  # kd_svd: mean (per-image losses averaged over the batch; confirmed in the regime tables, README) | sum (summed, as
  # the released code: the paper's rows kd_svd, kd_svd_exact, kd_svd_sskd_code, kd_svd_2stage set it, recipes.py).
  distill.loss_scale = "mean"
  # kd_svd's top-k eigensolver of the Gram matrices (svdkd_jax/eig.py): auto (on a CPU Lanczos for Gram matrices
  # above 8 x 8, power iteration for one pair; on accelerators subspace iteration above 32 x 32; else eigh) | eigh |
  # subspace | lanczos. Results differ in the last bits.
  distill.svd_solver = "auto"
  distill.temperature = 4.0  # soft_target, dkd
  distill.at_beta = 1000.0  # attention_transfer: the weight of its loss (the published 1000)
  # dkd: the weights of its target-class (alpha) and non-target-class (beta) terms, and its linear warm-up in epochs
  # (0: none); mdistiller's defaults, the paper's CIFAR-100 setting.
  distill.dkd_alpha = 1.0
  distill.dkd_beta = 8.0
  distill.dkd_warmup = 20
  # same: each student image is compared with the teacher's outputs on the same image. deranged: on another image
  # of the batch (a seeded derangement per step, no image paired with itself), a control for the teacher's knowledge.
  distill.teacher_images = "same"
  # 1stage: main task + clipped distillation gradient every step (the released code).
  # 2stage: distillation alone for `init_epochs`, then the main task alone (FSP's procedure; the paper's table).
  # The main phase is the full `train.epochs` recipe (optimiser reset, schedule restarted): init_epochs + epochs.
  distill.mechanism = "1stage"
  distill.init_epochs = 0

  # How the distillation gradient joins the main one (see svdkd_jax.optim.combine_gradients), per tensor or over
  # the whole gradient: clip_per_tensor (to sigmoid(epoch) x the main gradient's norm, the released code) |
  # rescale_per_tensor (to that norm when larger than the main gradient, the poster) | sum | clip_global_norm.
  combine = ml_collections.ConfigDict()
  combine.rule = "clip_per_tensor"
  combine.weight = 1.0  # scales the distillation gradient before the rule
  return distill, combine


def _data() -> ml_collections.ConfigDict:
  data = ml_collections.ConfigDict()  # see svdkd_jax.input_pipeline
  data.source = "tfds"  # tfds | archive | digits
  data.name = "cifar100"  # tfds dataset name
  data.data_dir = ""  # tfds data_dir ("" = tfds default; a GCS path works)
  data.image_key = "image"  # tfds: the feature holding the images
  data.label_key = "label"  # tfds: the feature holding the class labels
  # archive: an archive's name in the data root ($SVDKD_DATA, else ~/svdkd_data), or a folder holding meta.json and
  # <split>.npz (docs/data.md)
  data.path = ""
  data.cache_dir = ""  # archive: where the decoded uint8 cache goes ("" = next to the archive or ~/.cache)
  data.train_split = "train"
  data.eval_split = "test"
  data.num_classes = 100
  data.image_size = 32  # images are resized to this (0 = keep)
  data.class_subset = 0  # 0 = all classes, n = the first n classes
  data.holdout = 0  # hold out this many training examples as the eval split (tuning without the test set)
  # A fixed, seeded subset of the training split (0 = all); with it, `holdout` draws from the images outside it.
  data.train_per_class = 0
  # Label budget (0 = all): a fixed, seeded draw of this many labelled images per class; the other training images
  # stay in every batch and distillation loss with label -1 and zero cross-entropy weight (the released code's 50 %).
  data.labels_per_class = 0
  # flip_rotate_crop (flip, rotate +-15 deg, pad 4 + crop: the authors') | flip_crop | none
  data.augment = "flip_rotate_crop"
  # dataset (per-channel statistics of the train split) | cifar100_bgr (CIFAR-100's, in BGR order: the authors')
  data.normalization = "dataset"
  data.num_workers = 0  # grain worker processes (0 = in the main process)
  return data


def _optim_and_train() -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  # Optimiser (see svdkd_jax.optim). Paper: Nesterov 0.9, 1e-2 -> 1e-3 at epoch 100 -> 1e-4 at 150, coupled L2 1e-4.
  optim = ml_collections.ConfigDict()
  optim.name = "sgd"  # sgd | adam
  optim.learning_rate = 1e-2
  optim.momentum = 0.9
  optim.nesterov = True
  optim.boundaries = (100, 150)  # epochs at which the learning rate is multiplied by decay_factor
  optim.decay_factor = 0.1
  optim.weight_decay = 1e-4  # on conv/dense kernels only
  optim.decoupled_weight_decay = False  # False: L2 term in the main loss (the authors' code)

  train = ml_collections.ConfigDict()
  train.epochs = 200
  train.batch_size = 128  # global batch
  train.eval_batch_size = 200
  train.log_every_steps = 50
  train.checkpoint_every_steps = 500
  train.keep_checkpoints = 3
  train.max_steps = 0  # > 0 stops early (tests, smoke runs)
  # Cross-entropy with a label budget: "batch" = mean over every image of the batch, unlabelled ones counting as
  # zero (the released code); "labelled" = mean over the labelled images of the batch. Equal with all labels.
  train.ce_reduction = "batch"
  # The dtype both networks compute in: float32 | bfloat16 (accelerators: their convolutions and matmuls run at the
  # bfloat16 rate; README). Parameters, optimiser state, BatchNorm statistics, the SVD, Gram matrices and losses
  # stay float32.
  train.compute_dtype = "float32"
  return optim, train


def default() -> ml_collections.ConfigDict:
  """Every key with its default: the paper's CIFAR-100 VGG recipe (docs/method.md 7), no distillation. Locked."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model, config.teacher = _networks()
  config.distill, config.combine = _distill()
  config.data = _data()
  config.optim, config.train = _optim_and_train()
  config.lock()
  return config


# ---------------------------------------------------------------------------------------------------------------
# earlier names


def _get(config, key: str, missing: Any = None) -> Any:
  """`config[a][b]` for the dotted key "a.b" of a ConfigDict or dict; `missing` where a part is absent."""
  for part in key.split("."):
    if not hasattr(config, "keys") or part not in config:
      return missing
    config = config[part]
  return config


def canonical(config):
  """A copy of `config` (a ConfigDict, or the dict of a config.json) with earlier value names replaced by today's
  (`ALIASES`). Keys it lacks stay absent; a locked ConfigDict stays locked."""
  config = copy.deepcopy(config)
  for key, renamed in ALIASES.items():
    value = _get(config, key)
    if isinstance(value, str) and value in renamed:
      section, name = key.split(".")
      config[section][name] = renamed[value]
  return config


# ---------------------------------------------------------------------------------------------------------------
# checks


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


def _check_numbers(config: ml_collections.ConfigDict) -> None:
  for key in INTEGERS:
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
      raise ValueError(f"config.{key}={value!r} must be an integer.")
  for key in POSITIVE + NON_NEGATIVE:
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      raise ValueError(f"config.{key}={value!r} must be a number.")
    if value < 0 or (value == 0 and key in POSITIVE):
      raise ValueError(f"config.{key}={value!r} must be {'> 0' if key in POSITIVE else '>= 0'}.")
  boundaries = config.optim.boundaries
  if (not isinstance(boundaries, (tuple, list)) or
      not all(isinstance(b, numbers.Integral) and not isinstance(b, bool) and b >= 0 for b in boundaries) or
      any(a >= b for a, b in zip(boundaries, boundaries[1:]))):
    raise ValueError(f"config.optim.boundaries={boundaries!r} must be non-negative, strictly increasing epochs.")


def _check_combinations(config: ml_collections.ConfigDict) -> None:
  if config.distill.mechanism == "2stage" and config.distill.method != "none" and config.distill.init_epochs < 1:
    raise ValueError("distill.mechanism='2stage' needs distill.init_epochs >= 1 (epochs of distillation alone).")
  if (config.distill.method != "none" and config.teacher.weights == "trained" and not config.teacher.workdir and
      not config.teacher.checkpoint):
    raise ValueError("A distillation run needs a teacher: set --config.teacher.workdir=DIR (a finished teacher run) "
                     "or --config.teacher.checkpoint=DIR/checkpoints/<step>.")
  per_class, labelled = config.data.train_per_class, config.data.labels_per_class
  if per_class and labelled > per_class:
    raise ValueError(f"config.data.labels_per_class={labelled} must be at most data.train_per_class={per_class} "
                     "(0 = all).")
  if config.data.source == "archive" and not config.data.path:
    raise ValueError("config.data.source='archive' needs config.data.path: an archive name in the data root "
                     "($SVDKD_DATA, else ~/svdkd_data), e.g. --config.data.path=cifar10_jpeg, or a folder with "
                     "meta.json and <split>.npz (docs/data.md)")
  if config.data.source == "tfds" and not config.data.name:
    raise ValueError("config.data.source='tfds' needs config.data.name (a tensorflow-datasets name, e.g. cifar100).")


def _check_tap_paths(config: ml_collections.ConfigDict) -> None:
  for key in ("model.taps", "teacher.taps"):
    paths = _get(config, key)
    if (not isinstance(paths, (tuple, list)) or not all(isinstance(p, str) and p for p in paths) or
        len(set(paths)) != len(paths)):
      raise ValueError(f"config.{key}={paths!r} must be a tuple of distinct submodule paths such as "
                       "('stage2', 'stage3'), or () for the network's own taps.")
    if any("," in p for p in paths):  # a flag's "stage2,stage3" arrives as one path
      raise ValueError(f"config.{key}={paths!r}: a path has a comma; on the command line give a tuple, e.g. "
                       f"--config.{key}=\"('stage2', 'stage3')\".")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises a one-line ValueError naming the first problem of `config`: an unknown or missing key, a value that is
  not one of `CHOICES` (earlier names, `ALIASES`, count as today's) or out of range, or values that do not go
  together. Names of networks and distillation methods are checked by `run_config.validate_run`."""
  _check_keys(config, default())
  config = canonical(config)
  for key, valid in CHOICES.items():
    if _get(config, key) not in valid:
      raise ValueError(f"config.{key}={_get(config, key)!r}; valid: {', '.join(valid)}.")
  _check_numbers(config)
  _check_tap_paths(config)
  _check_combinations(config)
