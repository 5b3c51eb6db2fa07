"""The paper's networks and the CRD benchmark's, as Flax NNX modules returning `(logits, taps)`.

    model = models.create("vgg_student", 100, rngs=nnx.Rngs(params=0, dropout=1), width=0.25)
    logits, taps = model(x)        # x [B, H, W, 3] float32 NHWC -> [B, classes], [[B, h, w, d], ...]
    model.train(); model.eval()    # BatchNorm batch/running statistics, dropout on/off

Networks start in train mode. rng streams: `params` for initialisation and, for the paper VGGs (the only networks with
dropout), `dropout`; `nnx.Rngs(seed)` provides both. `width` scales every channel count (and the VGG FC widths),
rounded to an integer >= 1 the same way for every network, so a pair's taps keep equal channels at any width.
Conv and dense weights are `kernel` params (the only parameters the trainer decays). Families, their taps, input
sizes and where they depart from the paper are documented in each module: vgg, mobilenet, resnext, resnet, wrn.
"""

from collections.abc import Callable
import dataclasses
from typing import Any

from flax import nnx
import jax

from svdkd_jax.models import mobilenet, resnet, resnext, vgg, wrn
from svdkd_jax.models.flops import count_flops, count_params, tap_shapes


@dataclasses.dataclass(frozen=True)
class Entry:
  """A registered network: `build(num_classes, *, rngs, width, **options)` returns it; `options` names the family
  options `create` passes on; `takes_rngs`: its call takes `rngs=` (the dropout stream of train mode);
  `logits_only`: its call returns logits alone (a network written without this package), so a run names its taps
  (`config.model.taps`, `svdkd_jax.taps`) instead of taking `(logits, taps)` from it."""
  build: Callable[..., nnx.Module]
  options: tuple[str, ...] = ()
  takes_rngs: bool = False
  logits_only: bool = False


_PAPER_VGG = ("input_size", "dropout")
_MOBILENET = ("variant", "batch_stats_always")
_REGISTRY: dict[str, Entry] = {
    # The paper's pairs (SSKD code, docs/method.md section 8).
    "vgg_teacher": Entry(vgg.vgg_teacher, _PAPER_VGG, takes_rngs=True),
    "vgg_student": Entry(vgg.vgg_student, _PAPER_VGG, takes_rngs=True),
    "vgg_stride_student": Entry(vgg.vgg_stride_student, _PAPER_VGG, takes_rngs=True),
    "mobilenet_teacher": Entry(mobilenet.mobilenet_teacher, _MOBILENET),
    "mobilenet_student": Entry(mobilenet.mobilenet_student, _MOBILENET),
    "resnext_teacher": Entry(resnext.resnext_teacher, ("cardinality",)),
    "resnext_student": Entry(resnext.resnext_student, ("cardinality",)),
    # The authors' 2019 pair (KD_methods_with_TF).
    "resnet32": Entry(resnet.resnet32),
    "resnet8": Entry(resnet.resnet8),
    # The CRD benchmark (RepDistiller).
    "resnet32x4": Entry(resnet.resnet32x4),
    "resnet8x4": Entry(resnet.resnet8x4),
    "resnet56": Entry(resnet.resnet56),
    "resnet20": Entry(resnet.resnet20),
    "vgg13": Entry(vgg.vgg13),
    "vgg8": Entry(vgg.vgg8),
    "wrn_40_2": Entry(wrn.wrn_40_2),
    "wrn_16_2": Entry(wrn.wrn_16_2),
}

_PACKAGE_NETWORKS = frozenset(_REGISTRY)

# pair name -> (teacher, student); every pair has equal tap shapes at any width. The paper's pairs are named by
# family, the others by their teacher (as the CRD benchmark's tables name them, and configs/crd_benchmark.py's
# tokens select them).
PAIRS: dict[str, tuple[str, str]] = {
    "vgg": ("vgg_teacher", "vgg_student"),
    "vgg_stride": ("vgg_teacher", "vgg_stride_student"),
    "mobilenet": ("mobilenet_teacher", "mobilenet_student"),
    "resnext": ("resnext_teacher", "resnext_student"),
    "resnet32": ("resnet32", "resnet8"),
    "resnet32x4": ("resnet32x4", "resnet8x4"),
    "vgg13": ("vgg13", "vgg8"),
    "wrn_40_2": ("wrn_40_2", "wrn_16_2"),
    "resnet56": ("resnet56", "resnet20"),
}

# The paper's table (CIFAR-100, 32x32): FLOPs = 2 x multiply-accumulates, params as printed.
_PAPER = {
    "vgg_teacher": {"flops": 576.3e6, "params": 10.9e6},
    "vgg_student": {"flops": 121.3e6, "params": 3.8e6},
    "vgg_stride_student": {"flops": 15.6e6, "params": 3.8e6},
    "mobilenet_teacher": {"flops": 98.4e6, "params": 2.3e6},
    "mobilenet_student": {"flops": 37.8e6, "params": 0.82e6},
    "resnext_teacher": {"flops": 547.3e6, "params": 0.66e6},
    "resnext_student": {"flops": 247.6e6, "params": 0.34e6},
}


def names() -> list[str]:
  """Every registered network name."""
  return list(_REGISTRY)


def paper_figures(name: str) -> dict[str, float] | None:
  """The paper's {"flops", "params"} for its networks (32x32 inputs), None for the others."""
  _check_name(name)
  figures = _PAPER.get(name)
  return dict(figures) if figures else None


def _check_name(name: str) -> None:
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; registered models: {', '.join(names())}")


def create(name: str, num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0,
           dtype: jax.typing.DTypeLike | None = None, **kwargs: Any) -> nnx.Module:
  """Builds network `name` with `num_classes` outputs.

  Args:
    name: one of `names()`.
    num_classes: logits per example.
    rngs: `nnx.Rngs` with a `params` stream (and `dropout` for the paper VGGs), or `nnx.Rngs(seed)`.
    width: multiplies every channel count (and the VGG FC width); 1.0 is the published network.
    dtype: the dtype its layers compute in (e.g. `jnp.bfloat16`), set on every conv, dense and BatchNorm layer;
      parameters stay float32 and BatchNorm statistics are computed in float32 (Flax's `dtype`/`param_dtype`).
      None: the inputs' dtype.
    **kwargs: family options: `input_size` (paper VGGs, default 32), `dropout` (paper VGGs), `variant` and
      `batch_stats_always` (MobileNet), `cardinality` (ResNeXt).
  Returns:
    An `nnx.Module` in train mode; `model(x)` maps x [B, H, W, 3] to (logits [B, classes], taps [[B, h, w, d]]),
    both in `dtype`.
  """
  _check_name(name)
  if int(num_classes) != num_classes or num_classes < 1:
    raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
  if not width > 0:
    raise ValueError(f"width must be > 0, got {width}")
  unknown = sorted(set(kwargs) - set(options(name)))
  if unknown:
    raise ValueError(f"{name} does not take option(s) {unknown}; it accepts {list(options(name)) or 'none'}")
  model = _REGISTRY[name].build(int(num_classes), rngs=rngs, width=width, **kwargs)
  if dtype is not None:
    for _, layer in nnx.iter_modules(model):
      if isinstance(layer, (nnx.Conv, nnx.Linear, nnx.BatchNorm)):
        layer.dtype = dtype
  return model


def register(name: str, entry: Entry) -> None:
  """Adds network `name` to the registry for this process, e.g. from the config file that imports the user's own
  network (each load of the file registers it again, replacing the entry). The package's own names are refused."""
  if name in _PACKAGE_NETWORKS:
    raise ValueError(f"{name!r} is one of the package's networks; register yours under another name.")
  _REGISTRY[name] = entry


def options(name: str) -> tuple[str, ...]:
  """The family options (keyword arguments of `create` beyond `width`) that network `name` accepts."""
  _check_name(name)
  return _REGISTRY[name].options


def takes_rngs(name: str) -> bool:
  """Whether network `name`'s call takes `rngs=` (the networks with dropout)."""
  _check_name(name)
  return _REGISTRY[name].takes_rngs


def logits_only(name: str) -> bool:
  """Whether network `name`'s call returns logits alone (its taps are named by a run, `svdkd_jax.taps`)."""
  _check_name(name)
  return _REGISTRY[name].logits_only


__all__ = ["PAIRS", "Entry", "count_flops", "count_params", "create", "logits_only", "names", "options",
           "paper_figures", "register", "takes_rngs", "tap_shapes"]
