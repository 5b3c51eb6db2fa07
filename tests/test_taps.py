"""svdkd_jax.taps: taps by name on unmodified NNX modules, checked against the registry networks' own taps (which
their calls return), in train and eval mode, inside jit after split/merge, under grad, and with dropout."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svdkd_jax import models
from svdkd_jax import networks
from svdkd_jax import parallel
from svdkd_jax import taps

# resnet8's own taps are the outputs of each stage's block (models/resnet.py): the same arrays by name.
RESNET_TAPS = ("stages.0.0", "stages.1.0", "stages.2.0")


def _resnet8():
  return models.create("resnet8", 3, rngs=nnx.Rngs(0), width=0.125)


def _images(n=4, size=16):
  return jax.random.normal(jax.random.key(1), (n, size, size, 3))


def test_named_taps_are_the_network_s_own_and_train_as_a_plain_call():
  """In train mode, inside jit after split/merge: the same logits, taps, BatchNorm statistics and gradients as the
  network's own `(logits, taps)`; the wrapped module classes are restored after the call."""
  graph, params, rest = nnx.split(_resnet8(), nnx.Param, ...)
  x = _images()

  def forward(params, named):
    model = nnx.merge(graph, params, rest, copy=True)
    if named:
      (logits, _), tapped = taps.tapped(model, RESNET_TAPS)(x)
    else:
      logits, tapped = model(x)
    loss = sum(jnp.sum(jnp.sin(t)) for t in tapped) + jnp.sum(logits)
    return loss, (tapped, nnx.split(model, nnx.Param, ...)[2])

  results = {}
  for named in (False, True):
    (loss, (tapped, new_rest)), grads = jax.jit(jax.value_and_grad(forward, has_aux=True),
                                                static_argnums=1)(params, named)
    results[named] = jax.tree.map(np.asarray, (loss, tapped, new_rest, grads))
  jax.tree.map(np.testing.assert_array_equal, results[True], results[False])
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), results[True][2], jax.tree.map(np.asarray, rest))
  assert max(jax.tree.leaves(moved)) > 0  # train mode did update the running statistics
  assert models.resnet.BasicBlock.__call__.__qualname__ == "BasicBlock.__call__"  # not left wrapped
  assert not hasattr(models.resnet.BasicBlock.__call__, "_does_capturing")


def test_named_taps_pass_dropout_rngs_through():
  model = models.create("vgg_student", 3, rngs=nnx.Rngs(0), width=0.125, dropout=0.5)
  x, key = _images(size=32), jax.random.key(7)
  plain, _ = model(x, rngs=nnx.Rngs(dropout=key))
  (named, _), (block0, hidden) = taps.tapped(model, ["blocks.0.0", "hidden.0"])(x, rngs=nnx.Rngs(dropout=key))
  np.testing.assert_array_equal(np.asarray(named), np.asarray(plain))
  assert block0.shape == (4, 32, 32, 8) and hidden.shape == (4, 128)
  other, _ = taps.tapped(model, ["hidden.0"])(x, rngs=nnx.Rngs(dropout=jax.random.key(8)))[0]
  assert np.abs(np.asarray(other) - np.asarray(plain)).max() > 0  # the masks do come from the rngs given


def test_a_path_that_names_no_submodule_lists_the_paths_near_it():
  model = _resnet8()
  with pytest.raises(ValueError, match=r"^tap 'stages.1.4' names no submodule of ResNet; paths under 'stages.1': "
                                       r"stages.1.0; close: .*\.$"):
    taps.tapped(model, ["stages.1.4"])
  with pytest.raises(ValueError, match=r"^tap 'stage2' names no submodule of ResNet; paths at the top level: head, "
                                       r"stages, stem, stem_bn"):
    taps.tapped(model, ["stage2"])
  with pytest.raises(ValueError, match="'stages.0.0' is named twice"):
    taps.tapped(model, ["stages.0.0", "stages.0.0"])
  assert taps.module_paths(model)["stages.1.0.conv1"] is model.stages[1][0].conv1


def test_a_tap_must_run_exactly_once():
  class Shared(nnx.Module):
    """One conv applied twice, and a list of convs the call never calls as a whole."""

    def __init__(self, rngs):
      self.conv = nnx.Conv(3, 3, (3, 3), rngs=rngs)
      self.convs = nnx.List([nnx.Conv(3, 3, (3, 3), rngs=rngs) for _ in range(2)])

    def __call__(self, x):
      for conv in self.convs:
        x = conv(x)
      return jnp.mean(self.conv(self.conv(x)), axis=(1, 2))

  model, x = Shared(nnx.Rngs(0)), _images(2, 8)
  with pytest.raises(ValueError, match=r"^tap 'conv' \(Conv\) ran 2 times in one call of Shared; a tap must run "
                                       r"exactly once; beside it, run once: convs.0, convs.1.$"):
    taps.tapped(model, ["conv"])(x)
  with pytest.raises(ValueError, match=r"^tap 'convs' \(List\) ran 0 times .*; submodules of it that run once: "
                                       r"convs.0, convs.1\.\n"):  # JAX's note on errors in a trace follows
    graph, state = nnx.split(model)  # raised while tracing, too (the module merged in the trace, as it must be)
    jax.eval_shape(lambda state, x: taps.tapped(nnx.merge(graph, state), ["convs"])(x), state, x)
  assert [t.shape for t in taps.tapped(model, ["convs.1"])(x)[1]] == [(2, 8, 8, 3)]

  class Stage(nnx.Sequential):  # inherits its __call__: nnx.capture records only methods a class defines
    pass

  class Staged(nnx.Module):
    def __init__(self, rngs):
      self.stage = Stage(nnx.Conv(3, 3, (3, 3), rngs=rngs))

    def __call__(self, x):
      return jnp.mean(self.stage(x), axis=(1, 2))

  with pytest.raises(ValueError, match=r"^tap 'stage' \(Stage\) ran 0 times .*; Stage inherits __call__, which "
                                       r"Flax's nnx.capture does not record: define it in the class.$"):
    taps.tapped(Staged(nnx.Rngs(0)), ["stage"])(x)
  assert Shared.__call__.__qualname__.endswith("Shared.__call__") and not hasattr(nnx.Conv.__call__, "__wrapped__")


def test_networks_build_and_apply_with_named_taps():
  """A registry network tapped elsewhere by name through networks: its logits, and the named submodules' outputs."""
  mesh = parallel.create_mesh(jax.devices()[:1])
  own = networks.build("resnet8", 0.125, 3, 0, mesh=mesh)
  named = networks.build("resnet8", 0.125, 3, 0, mesh=mesh, taps=("stages.1.0.conv1", "stages.2.0"))
  x = _images()
  logits, (conv1, stage2), _ = networks.apply(named, named.variables, x, train=True)
  own_logits, own_taps, _ = networks.apply(own, own.variables, x, train=True)
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(own_logits))
  np.testing.assert_array_equal(np.asarray(stage2), np.asarray(own_taps[2]))
  assert conv1.shape == (4, 8, 8, 16) and named.taps == ("stages.1.0.conv1", "stages.2.0")
  with pytest.raises(ValueError, match="tap 'stages.3' names no submodule of ResNet"):
    networks.abstract("resnet8", 0.125, 3, taps=("stages.3",))
