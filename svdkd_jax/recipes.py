"""What the experiment configs (configs/*.py) are built from: variants, the paper's recipe, the CPU recipe.

Like big_vision's configs/common.py: every config file imports this module, so a config is a few lines of data, and
none imports another. A config file's `get_config(arg)` takes the text after `:` in `--config FILE.py:ARG`, a
comma-separated list of tokens (`parse_arg`); the variants:
  teacher           the T-DNN (model = the pair's teacher, no distillation)
  student           the S-DNN (the student alone)
  kd_svd            KD-SVD, svd_grad = "paper" (the poster's truncated gradient); 1-stage
  kd_svd_exact      KD-SVD, svd_grad = "exact"
  kd_svd_sskd_code  KD-SVD, svd_grad = "sskd_code" (what the released TF code computes, docs/svd_gradient.md 5)
  kd_svd_exact_mean KD-SVD, svd_grad = "exact", distill.loss_scale = "mean" (batch mean instead of the sum)
  kd_svd_exact_mean_untrained_teacher, kd_svd_exact_mean_deranged
                    controls of kd_svd_exact_mean: an untrained teacher (teacher.weights = "random"), or each image
                    matched to the teacher's taps of another image (distill.teacher_images = "deranged")
  kd_svd_exact_mean_soft_target
                    kd_svd_exact_mean plus soft targets: both losses summed, one distillation gradient
  fsp, soft_target  the baselines, 1-stage (main task + clipped distillation gradient, the released loop)
  fsp_2stage, kd_svd_2stage
                    2-stage (docs/method.md 6, 9): the distillation loss alone for `distill.init_epochs`, then the
                    main task alone with the unchanged recipe. The paper's table numbers are 2-stage; the authors
                    never released that schedule. We take FSP's precedent (the authors' KDM code initialises with 40
                    epochs of distillation-only training before a full main-task schedule): 40 epochs at the
                    recipe's first learning rate (not tuned), then the whole recipe again (the trainer restarts the
                    schedule and the optimiser), so a 2-stage paper run lasts 40 + 200 epochs.
  smoke             modifier: tiny networks on the bundled `digits` data, a few steps (tests; no download)
No variant means `kd_svd`. Students need `--config.teacher.workdir=DIR` (a finished teacher run). Config files may
add their own `key=value` tokens (`split_tokens`), e.g. `epochs=N` in the CPU configs.

The quickstart's config (`quickstart`) lives here too, so `python -m svdkd_jax.quickstart` needs no source tree.
"""

import ml_collections

from svdkd_jax import config as config_lib

VARIANTS = ("teacher", "student", "kd_svd", "kd_svd_exact", "kd_svd_sskd_code", "fsp", "soft_target",
            "fsp_2stage", "kd_svd_2stage", "kd_svd_exact_mean", "kd_svd_exact_mean_untrained_teacher",
            "kd_svd_exact_mean_deranged", "kd_svd_exact_mean_soft_target")
MODIFIERS = ("smoke",)
# What the table runner (experiments/run_table.py) trains by default for a paper-scale config file.
TABLE_VARIANTS = ("student", "soft_target", "fsp", "kd_svd_sskd_code", "kd_svd", "kd_svd_exact", "fsp_2stage",
                  "kd_svd_2stage")
TABLE_SEEDS = (0,)
# The CPU-scale tables (configs/cpu_*.py): networks at CPU_WIDTH (the sizing is in configs/cpu_tiny_imagenet.py).
CPU_WIDTH = 0.125
CPU_TABLE_VARIANTS = ("student", "soft_target", "fsp", "kd_svd_sskd_code", "kd_svd", "kd_svd_exact")
CPU_TABLE_SEEDS = (0, 1, 2)
QUICKSTART_VARIANTS = ("teacher", "student", "kd_svd", "fsp", "soft_target")

_METHODS = {  # variant -> (distill.method, distill.svd_grad or None, distill.mechanism)
    "teacher": ("none", None, "1stage"),
    "student": ("none", None, "1stage"),
    "kd_svd": ("kd_svd", "paper", "1stage"),
    "kd_svd_exact": ("kd_svd", "exact", "1stage"),
    "kd_svd_sskd_code": ("kd_svd", "sskd_code", "1stage"),
    "fsp": ("fsp", None, "1stage"),
    "soft_target": ("soft_target", None, "1stage"),
    "fsp_2stage": ("fsp", None, "2stage"),
    "kd_svd_2stage": ("kd_svd", "paper", "2stage"),
    "kd_svd_exact_mean": ("kd_svd", "exact", "1stage"),  # + distill.loss_scale = "mean"
    "kd_svd_exact_mean_untrained_teacher": ("kd_svd", "exact", "1stage"),  # + teacher.weights = "random"
    "kd_svd_exact_mean_deranged": ("kd_svd", "exact", "1stage"),  # + distill.teacher_images = "deranged"
    "kd_svd_exact_mean_soft_target": ("kd_svd+soft_target", "exact", "1stage"),
}


def parse_arg(arg: str | None, *, extra: tuple[str, ...] = ()) -> tuple[str, bool, list[str]]:
  """Splits `arg` into (variant, smoke, tokens of `extra`); unknown tokens raise a ValueError naming valid ones."""
  tokens = [t.strip() for t in (arg or "").split(",") if t.strip()]
  unknown = [t for t in tokens if t not in VARIANTS + MODIFIERS + extra]
  variants = [t for t in tokens if t in VARIANTS]
  if unknown or len(variants) > 1:
    raise ValueError(
        f"Bad config variant {arg!r}: give at most one of {', '.join(VARIANTS)}, optionally with "
        f"{', '.join(MODIFIERS + extra)} (comma-separated, e.g. `configs/FILE.py:kd_svd,smoke`).")
  return (variants[0] if variants else "kd_svd"), "smoke" in tokens, [t for t in tokens if t in extra]


def split_tokens(arg: str | None, kinds: dict[str, type]) -> tuple[str, dict]:
  """Takes the tokens named in `kinds` out of `arg`: (the other tokens, {name: value}). `name=value` tokens are
  converted with `kinds[name]` (int or float); a bare `name` token is True when `kinds[name]` is bool."""
  rest, values = [], {}
  for token in (t.strip() for t in (arg or "").split(",")):
    key, eq, value = token.partition("=")
    if eq and kinds.get(key) in (int, float):
      try:
        values[key] = kinds[key](value)
      except ValueError:
        raise ValueError(f"Bad token {token!r}: expected {key}=<{kinds[key].__name__}>.") from None
    elif not eq and kinds.get(token) is bool:
      values[token] = True
    elif token:
      rest.append(token)
  return ",".join(rest), values


def two_stage(config: ml_collections.ConfigDict, init_epochs: int) -> None:
  """2-stage: `init_epochs` of distillation alone, then the trainer restarts the unchanged `train.epochs` recipe."""
  config.distill.mechanism = "2stage"
  config.distill.init_epochs = init_epochs


def smoke(config: ml_collections.ConfigDict) -> None:
  """Tiny and download-free: 2 classes of the bundled digits (288 train images), width 0.25, 2 steps per stage."""
  config.data.source = "digits"
  config.data.name = "digits"
  config.data.path = ""
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.num_classes = 2
  config.data.class_subset = 2
  config.data.holdout = 0
  config.data.train_per_class = config.data.labels_per_class = 0
  config.data.normalization = "dataset"
  config.model.width = config.teacher.width = 0.25
  config.distill.init_epochs = 1 if config.distill.mechanism == "2stage" else 0  # one epoch per stage
  config.train.epochs = 1
  config.optim.boundaries = (1,)
  config.train.batch_size = 128
  config.train.eval_batch_size = 128
  config.train.max_steps = 0  # digits' 2 classes: 2 steps per epoch at batch 128
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 2


def apply_variant(config: ml_collections.ConfigDict, arg: str | None, *, teacher: str, student: str,
                  init_epochs: int) -> ml_collections.ConfigDict:
  """Sets model/teacher/distill for the variant in `arg` (see the module docstring); returns `config`."""
  variant, is_smoke, _ = parse_arg(arg)
  method, svd_grad, mechanism = _METHODS[variant]
  config.model.name = teacher if variant == "teacher" else student
  config.teacher.name = teacher
  config.distill.method = method
  if svd_grad is not None:
    config.distill.svd_grad = svd_grad
  if variant.startswith("kd_svd_exact_mean"):
    config.distill.loss_scale = "mean"  # the batch mean of the PyTorch reimplementations, not the released sum
  if variant == "kd_svd_exact_mean_untrained_teacher":
    config.teacher.weights = "random"
  if variant == "kd_svd_exact_mean_deranged":
    config.distill.teacher_images = "deranged"
  if mechanism == "2stage":
    two_stage(config, init_epochs)
  if is_smoke:
    smoke(config)
  return config


def paper_recipe() -> ml_collections.ConfigDict:
  """The paper's CIFAR-100 recipe (docs/method.md 7): the defaults, with the authors' channel statistics.

  Nesterov 0.9, lr 1e-2 -> 1e-3 at epoch 100 -> 1e-4 at 150, 200 epochs, batch 128, coupled L2 1e-4 on kernels,
  per-tensor clipping (combine.rule = "sskd"), k = 1, the authors' augmentation, width 1: all `config.default()`.
  """
  config = config_lib.default()
  config.data.normalization = "sskd_bgr"  # the authors' statistics, BGR order on RGB images (docs/method.md 7.2)
  return config


def cpu_recipe(*, epochs: int, width: float) -> ml_collections.ConfigDict:
  """The paper recipe with the schedule compressed to `epochs` (same shape) and networks at `width`."""
  config = paper_recipe()
  config.model.width = config.teacher.width = width
  # No dropout at CPU scale, a departure from the paper: with dropout 0.5 on FC layers only 128-256 wide, the
  # no-BatchNorm VGG teacher stayed at chance on Tiny-ImageNet-100 (held-out probes, experiments/results/cpu_probe.md).
  config.model.dropout = config.teacher.dropout = 0.0
  config.train.epochs = epochs
  config.optim.boundaries = (epochs // 2, (3 * epochs) // 4)
  config.data.normalization = "dataset"  # the authors' statistics are CIFAR-100's
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 200
  return config


def archive_config(arg: str | None, *, name: str, eval_split: str, num_classes: int, epochs: int,
                   teacher_epochs: int, width: float = CPU_WIDTH) -> ml_collections.ConfigDict:
  """The CPU recipe for `arg` on the archive `name` at 32x32, VGG pair. `config.data.path` holds the archive's name,
  found in the data root when the run reads it (docs/data.md), so configs and run records hold no machine path.

  `arg` may hold `epochs=N` (students), `teacher_epochs=N` (the `teacher` variant) and `width=W` tokens, which
  replace `epochs`, `teacher_epochs` and `width`. 2-stage variants get the KDM ratio of initialisation epochs (40
  for a 100-epoch schedule).
  """
  arg, values = split_tokens(arg, {"epochs": int, "teacher_epochs": int, "width": float})
  teacher = parse_arg(arg)[0] == "teacher"
  config = cpu_recipe(epochs=values.get("teacher_epochs", teacher_epochs) if teacher else values.get("epochs", epochs),
                      width=values.get("width", width))
  config.data.source = "archive"
  config.data.name = name
  config.data.path = name
  config.data.train_split = "train"
  config.data.eval_split = eval_split
  config.data.num_classes = num_classes
  config.data.image_size = 32
  return apply_variant(config, arg, teacher="vgg_teacher", student="vgg_student",
                       init_epochs=max(1, (2 * config.train.epochs) // 5))


def quickstart(variant: str | None = None) -> ml_collections.ConfigDict:
  """The quickstart: the VGG pair at width 0.25 on the bundled digits (1,437 train / 360 test, upsampled to 32x32
  so the VGG taps keep their 16/8/4/2 sizes), 8 epochs. `variant`: one of QUICKSTART_VARIANTS (default kd_svd)."""
  variant = variant or "kd_svd"
  if variant not in QUICKSTART_VARIANTS:
    raise ValueError(f"Unknown quickstart variant {variant!r}; valid: {', '.join(QUICKSTART_VARIANTS)}.")
  config = config_lib.default()
  config.model.name = "vgg_teacher" if variant == "teacher" else "vgg_student"
  config.model.width = config.teacher.width = 0.25
  config.distill.method = "none" if variant in ("teacher", "student") else variant
  config.data.source = "digits"
  config.data.name = "digits"
  config.data.num_classes = 10
  config.data.augment = "none"
  config.optim.learning_rate = 0.02
  config.optim.boundaries = (6,)
  config.train.epochs = 8
  config.train.batch_size = 64
  config.train.eval_batch_size = 120
  config.train.log_every_steps = 10
  config.train.checkpoint_every_steps = 200
  config.train.keep_checkpoints = 1
  return config
