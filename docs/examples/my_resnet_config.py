"""Your own network through the trainer: the ResNet of docs/examples/my_resnet.py, registered under a name, distilled
from a copy of itself twice as wide through taps chosen by name (docs/your_network.md).

  export PYTHONPATH=docs/examples   # where my_resnet.py lives (your project's package, in practice)
  python -m svdkd_jax.main --config docs/examples/my_resnet_config.py:teacher --workdir runs/mine/teacher
  python -m svdkd_jax.main --config docs/examples/my_resnet_config.py:kd_svd_exact_mean --workdir runs/mine/kd_svd \
      --config.teacher.workdir=runs/mine/teacher

CIFAR-10 from tensorflow-datasets with the paper's recipe; `,smoke` runs a few steps on the bundled digits.
"""

import ml_collections

import my_resnet
from svdkd_jax import models
from svdkd_jax import recipes

CHANNELS = 16  # the student's first stage; the teacher has TEACHER_WIDTH times as many at every layer
TEACHER_WIDTH = 2.0
# KD-SVD compares student and teacher channel by channel, so paired taps need equal channels: the teacher, twice as
# wide, has at stage l the channels the student has at stage l + 1 (its maps twice as large, which KD-SVD allows).
STUDENT_TAPS = ("stage2", "stage3")
TEACHER_TAPS = ("stage1", "stage2")


def resnet(num_classes: int, *, rngs, width: float = 1.0) -> my_resnet.ResNet:
  """The registry's form of the network: `width` scales its channels."""
  return my_resnet.ResNet(num_classes, channels=round(CHANNELS * width), rngs=rngs)


# Its call returns logits only: the run names its taps (config.model.taps, config.teacher.taps).
models.register("my_resnet", models.Entry(resnet, logits_only=True))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = recipes.parse_variant(arg, default="kd_svd_exact_mean")
  config = recipes.paper_recipe()
  config.data.name = "cifar10"
  config.data.num_classes = 10
  config.data.normalization = "dataset"  # the paper recipe's statistics are CIFAR-100's
  config = recipes.apply_variant(config, arg, pair=("my_resnet", "my_resnet"), init_epochs=40)
  config.model.width = TEACHER_WIDTH if arg.variant == "teacher" else 1.0
  config.teacher.width = TEACHER_WIDTH
  if arg.variant != "teacher":
    config.model.taps, config.teacher.taps = STUDENT_TAPS, TEACHER_TAPS
  return config
