"""A run's network as graph definitions plus variables: build a fresh one, restore a finished run's, apply one.

    net = networks.build("vgg_student", 0.25, 100, seed=0, mesh=mesh)               # freshly initialised
    net = networks.restore("runs/vgg/teacher", "vgg_teacher", 1.0, 100, mesh=mesh)  # a workdir or a <step> dir
    logits, taps, rest = networks.apply(net, net.variables, x)                      # eval mode
    logits, taps, rest = networks.apply(net, variables, x, train=True, rngs=nnx.Rngs(dropout=key))
    net = networks.build("resnet20", 1.0, 10, seed=0, mesh=mesh, taps=("stages.1.0", "stages.2.0"))  # named taps

`variables` is `{"params": nnx.State, "rest": nnx.State}` (BatchNorm statistics and the dropout stream in "rest"),
the layout of a checkpoint's `model` item. Teacher and student runs are restored alike: a run's network is its
config's `model`, and the checkpoint's meta says which network that was. A network's taps are its own (the second
output of the registry's networks) unless `taps` names submodules (`svdkd_jax.taps`); a network registered with
`logits_only` has only named taps. `compute_dtype` ("float32" or "bfloat16", config.train.compute_dtype) is the
dtype the layers compute in, logits and taps come in: parameters, and so the optimiser state and the gradients, stay
float32.
"""

import dataclasses
import logging
from typing import Any

from etils import epath
from flax import nnx
import jax
import jax.numpy as jnp

from svdkd_jax import checkpoint
from svdkd_jax import models
from svdkd_jax import parallel
from svdkd_jax import taps as taps_lib


@dataclasses.dataclass(frozen=True)
class Network:
  """One network split for functional use: a graph definition per mode and its variables (replicated on a mesh)."""
  name: str
  train_def: nnx.GraphDef  # train-mode BatchNorm (batch statistics) and dropout
  eval_def: nnx.GraphDef  # eval-mode BatchNorm (running statistics), no dropout
  variables: dict  # {"params": nnx.State, "rest": nnx.State}
  step_dir: str | None = None  # the checkpoint it was restored from; None for a fresh network
  taps: tuple[str, ...] = ()  # submodule paths whose outputs are its taps; () = the network's own


def _create(name: str, width: float, num_classes: int, seed: int, image_size: int, dropout: float | None,
            compute_dtype: str) -> nnx.Module:
  rngs = nnx.Rngs(params=seed, dropout=seed + 1)
  # The paper VGGs flatten their last map (they need the input size) and are the only networks with dropout.
  options = {"input_size": image_size or 32, "dropout": dropout}
  options = {k: v for k, v in options.items() if k in models.options(name) and v is not None}
  dtype = None if compute_dtype == "float32" else jnp.dtype(compute_dtype)
  return models.create(name, num_classes, rngs=rngs, width=width, dtype=dtype, **options)


def _split(module: nnx.Module) -> tuple[nnx.GraphDef, nnx.GraphDef, dict]:
  module.train()
  train_def, _, _ = nnx.split(module, nnx.Param, ...)
  module.eval()
  eval_def, params, rest = nnx.split(module, nnx.Param, ...)
  return train_def, eval_def, {"params": params, "rest": rest}


def build(name: str, width: float, num_classes: int, seed: int, *, mesh: jax.sharding.Mesh, image_size: int = 32,
          dropout: float | None = None, taps: tuple[str, ...] = (), compute_dtype: str = "float32") -> Network:
  """A freshly initialised `models.create(name, ...)` (params from `seed`, dropout stream `seed + 1`) on `mesh`.

  `image_size` matters only to the paper VGGs (they flatten the last map); `dropout` is their FC dropout rate
  (None: the network's default, the paper's 0.5); other networks ignore both. `taps`: submodule paths whose outputs
  `apply` returns as the taps (`svdkd_jax.taps`); empty: the network's own taps. `compute_dtype`: the module
  docstring.
  """
  module = _create(name, width, num_classes, seed, image_size, dropout, compute_dtype)
  taps_lib.check_paths(module, taps)
  train_def, eval_def, variables = _split(module)
  return Network(name, train_def, eval_def, parallel.replicate(variables, mesh), taps=tuple(taps))


def _abstract(name: str, width: float, num_classes: int, image_size: int, dropout: float | None,
              taps: tuple[str, ...], compute_dtype: str = "float32") -> tuple[nnx.GraphDef, nnx.GraphDef, dict]:
  """`_split` of the network with shapes only; ValueError when a tap path names no submodule of it."""
  module = nnx.eval_shape(lambda: _create(name, width, num_classes, 0, image_size, dropout, compute_dtype))
  taps_lib.check_paths(module, taps)
  return _split(module)


def abstract(name: str, width: float, num_classes: int, *, image_size: int = 32, dropout: float | None = None,
             taps: tuple[str, ...] = (), compute_dtype: str = "float32") -> Network:
  """`build`'s network with `jax.ShapeDtypeStruct` variables: nothing is initialised, for checks by
  `jax.eval_shape` (a tap path that names no submodule fails here)."""
  return Network(name, *_abstract(name, width, num_classes, image_size, dropout, taps, compute_dtype),
                 taps=tuple(taps))


def _check_meta(step_dir: epath.Path, name: str, width: float, num_classes: int) -> dict:
  """The saved run's `model` config; ValueError when its network or class count is not the one asked for."""
  meta = checkpoint.read_meta(step_dir)
  saved = meta.get("config", {}).get("model", {})
  classes = meta.get("num_classes")
  # Checkpoints without a meta item (none written by this package) are not checked here; the restore still is.
  wrong_net = saved and (saved.get("name") != name or float(saved.get("width", 1.0)) != float(width))
  if wrong_net or (classes is not None and classes != num_classes):
    raise ValueError(f"{step_dir} holds {saved.get('name', name)} (width {saved.get('width', width)}, "
                     f"{classes or num_classes} classes), not the {name} (width {width}, {num_classes} classes) "
                     "asked for.")
  return saved


def restore(path: str, name: str, width: float, num_classes: int, *, mesh: jax.sharding.Mesh,
            image_size: int = 32, dropout: float | None = None, taps: tuple[str, ...] = (),
            compute_dtype: str = "float32") -> Network:
  """The network of a finished run: `path` is its workdir (best checkpoint, else latest) or a `<step>` directory.

  Raises FileNotFoundError when there is no checkpoint and a one-line ValueError when the checkpoint holds another
  network, width or class count than `name`, `width`, `num_classes`. `dropout` (paper VGGs; used in train mode
  only) defaults to the saved run's rate; `taps` as in `build`. `compute_dtype`: the module docstring.
  """
  step_dir = checkpoint.find_step_dir(path)
  saved = _check_meta(step_dir, name, width, num_classes)
  dropout = saved.get("dropout") if dropout is None else dropout
  train_def, eval_def, abstract_vars = _abstract(name, width, num_classes, image_size, dropout, taps, compute_dtype)
  try:
    variables = checkpoint.restore_model(step_dir, parallel.abstract(abstract_vars, mesh))
  except checkpoint.CheckpointUnreadableError:
    raise  # A damaged checkpoint, not another network: its own message names the step directory.
  except Exception as e:  # orbax raises several types on structure/shape mismatch.
    raise ValueError(f"{step_dir} does not match the network {name} (width {width}, {num_classes} classes): "
                     f"{type(e).__name__}: {' '.join(str(e).split())[:500]}") from None
  logging.info("%s restored from %s", name, step_dir)
  return Network(name, train_def, eval_def, variables, str(step_dir), tuple(taps))


def apply(network: Network, variables: dict, x: jax.Array, *, train: bool = False,
          rngs: nnx.Rngs | None = None) -> tuple[jax.Array, list[jax.Array], Any]:
  """Runs `network` with `variables` on x [B, H, W, 3]: `(logits [B, C], taps [[B, h, w, d], ...], rest)`.

  train=False: eval mode; `rest` is `variables["rest"]`. train=True: train mode; `rest` holds the updated BatchNorm
  statistics, and dropout draws from `rngs` (its "dropout" stream) in the networks that have dropout (the paper
  VGGs; without `rngs`, from the network's own stream). Other networks draw no randomness and ignore `rngs`.
  The taps are the outputs of `network.taps` (`svdkd_jax.taps.tapped`) when it names any, else the network's own
  (none for a `logits_only` network).
  Works inside jit and autodiff: the variables are copied into the current trace, where NNX lets the forward update
  them.
  """
  graph_def = network.train_def if train else network.eval_def
  model = nnx.merge(graph_def, variables["params"], variables["rest"], copy=True)
  kwargs = {"rngs": rngs} if rngs is not None and models.takes_rngs(network.name) else {}
  logits_only = models.logits_only(network.name)
  if network.taps:
    output, taps = taps_lib.tapped(model, network.taps)(x, **kwargs)
  else:
    output = model(x, **kwargs)
    taps = [] if logits_only else output[1]
  logits = output if logits_only else output[0]
  rest = nnx.split(model, nnx.Param, ...)[2] if train else variables["rest"]
  return logits, taps, rest
