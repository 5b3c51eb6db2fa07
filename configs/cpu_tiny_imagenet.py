"""CPU-scale reproduction, main table: Tiny-ImageNet-100 at 32x32, VGG pair at reduced width, compressed schedule.

The paper's CIFAR-100 recipe (configs/cifar100_vgg.py) with the same schedule shape compressed to EPOCHS epochs
(lr 1e-2, x0.1 at 1/2 and at 3/4 of the run), at WIDTH times the channels, on the offline Tiny-ImageNet-100
(100 classes x 500 images, CIFAR-100's shape of problem; eval = its 5,000 labelled val images). Sized so that the
issue-7 table (teacher, then student / soft_target / fsp / kd_svd x 3 svd_grad modes for 3 seeds; 19 runs) fits
about 2.5 hours of a 2-core CPU: see TABLE_HOURS and experiments/results/bench_step.txt. Reduced-scale runs on other
data: never compare them to the paper's numbers as if they were the same experiment.

  python experiments/run_table.py --config configs/cpu_tiny_imagenet.py --root runs
"""

import importlib.util
import pathlib

import ml_collections

WIDTH = 0.25
EPOCHS = 8
TABLE_VARIANTS = ("student", "soft_target", "fsp", "kd_svd_sskd_code", "kd_svd", "kd_svd_exact")
TABLE_SEEDS = (0, 1, 2)


def _load(name: str):
  path = pathlib.Path(__file__).resolve().with_name(f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"svdkd_configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


_vgg = _load("cifar100_vgg")
VARIANTS = _vgg.VARIANTS


def cpu_recipe(*, epochs: int = EPOCHS, width: float = WIDTH) -> ml_collections.ConfigDict:
  """The paper recipe with the schedule compressed to `epochs` (same shape) and networks at `width`."""
  config = _vgg.paper_recipe()
  config.model.width = config.teacher.width = width
  config.train.epochs = epochs
  config.optim.boundaries = (epochs // 2, (3 * epochs) // 4)
  config.data.normalization = "dataset"  # the authors' statistics are CIFAR-100's
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 200
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = cpu_recipe()
  config.data.source = "archive"
  config.data.name = "tiny_imagenet_100"
  config.data.path = _vgg.shared_data("tiny_imagenet_100")
  config.data.train_split = "train"
  config.data.eval_split = "val"
  config.data.num_classes = 100
  config.data.image_size = 32
  # 2-stage at CPU scale: the KDM ratio (40 initialisation epochs for a 100-epoch schedule).
  return _vgg.apply_variant(config, arg, teacher="vgg_teacher", student="vgg_student",
                            init_epochs=max(1, (2 * EPOCHS) // 5))
