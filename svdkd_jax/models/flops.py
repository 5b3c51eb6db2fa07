"""Parameter and FLOP counts without compiling or running a network.

FLOPs are an exact count, not an XLA estimate: 2 x the multiply-accumulates of every convolution and matrix product
in the network's jaxpr (traced abstractly, batch 1, eval mode). This is the paper's convention (checked on its VGG
pair); BatchNorm, activations, pooling and additions are not counted.
"""

from collections.abc import Callable

from flax import nnx
import jax
import numpy as np


def count_params(model: nnx.Module) -> int:
  """Trainable parameters (`nnx.Param`: kernels, biases, BatchNorm scale/bias; not running statistics)."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, *spatial) axes of the kernel
      per_output = int(np.prod([rhs[d] for d in spec[1:]]))  # in features per group x kernel window
      total += int(np.prod(eqn.outvars[0].aval.shape)) * per_output
    elif name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += int(np.prod(eqn.outvars[0].aval.shape)) * int(np.prod([lhs[d] for d in lhs_contract]))
    for param in eqn.params.values():  # nested jaxprs (jit, custom_jvp, ...)
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        if hasattr(sub, "eqns"):
          total += _macs(sub)
        elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
          total += _macs(sub.jaxpr)
  return total


def count_flops(model: nnx.Module, image_size: int = 32) -> int:
  """2 x multiply-accumulates of one [1, image_size, image_size, 3] forward pass in eval mode (not executed)."""
  graphdef, state = nnx.split(model)

  def forward(state, x):
    m = nnx.merge(graphdef, state)
    m.eval()
    return m(x)

  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), np.float32)
  return 2 * _macs(jax.make_jaxpr(forward)(state, x).jaxpr)


def tap_shapes(model: nnx.Module, image_size: int = 32) -> list[tuple[int, ...]]:
  """Per-sample tap shapes [(h, w, d), ...] for one image_size x image_size input (traced, not executed)."""
  graphdef, state = nnx.split(model)

  def forward(state, x):
    m = nnx.merge(graphdef, state)
    m.eval()
    return m(x)[1]

  taps = jax.eval_shape(forward, state, jax.ShapeDtypeStruct((1, image_size, image_size, 3), np.float32))
  return [tuple(t.shape[1:]) for t in taps]


def abstract(build: Callable[[], nnx.Module]) -> nnx.Module:
  """Builds a network with shapes only (no parameter is initialised): cheap counting of large models."""
  return nnx.eval_shape(build)
