"""The README's example of KD-SVD in one's own training step runs as printed, and trains."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_training_step_example_runs(monkeypatch):
  """The example distils docs/examples/my_resnet.py's ResNet (a user's network, logits only) from a copy twice as wide
  through named taps: two steps move the parameters and the BatchNorm statistics, with a live KD-SVD loss."""
  monkeypatch.syspath_prepend(str(ROOT / "docs" / "examples"))  # where the example's `from my_resnet import ResNet` finds it
  text = (ROOT / "README.md").read_text()
  section = text[text.index("## KD-SVD in your own training step"):text.index("## Where things are")]
  (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  images = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
  labels = jnp.arange(8) % 10
  params, rest, opt_state = namespace["params"], namespace["rest"], namespace["opt_state"]
  before = jax.tree.map(np.asarray, (params, rest))
  for epoch in range(2):
    params, rest, opt_state, ce, dist = namespace["train_step"](params, rest, opt_state, images, labels, epoch)
    assert np.isfinite(float(ce)) and float(dist) > 0
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), (params, rest), before)
  assert max(jax.tree.leaves(moved[0])) > 0 and max(jax.tree.leaves(moved[1])) > 0
