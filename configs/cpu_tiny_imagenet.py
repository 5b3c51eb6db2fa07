"""CPU-scale reproduction, main table: Tiny-ImageNet-100 at 32x32, VGG pair at reduced width, compressed schedule.

The paper's CIFAR-100 recipe (configs/cifar100_vgg.py) with the same schedule shape compressed to EPOCHS epochs
(lr 1e-2, x0.1 at 1/2 and at 3/4 of the run), at WIDTH times the channels, on the offline Tiny-ImageNet-100
(100 classes x 500 images, CIFAR-100's shape of problem; eval = its 5,000 labelled val images). Reduced-scale runs
on other data: never compare them to the paper's numbers as if they were the same experiment.

Sizing: the table is one teacher, then student / soft_target / fsp / kd_svd x 3 svd_grad modes for 3 seeds (19
runs, 50,000 images per epoch each). WIDTH = 0.125 because at 0.25 one VGG tap (8x8x32) needs a batched 32x32
`eigh` that ran 5-10x slower than the whole student step on this CPU, while at 0.125 every Gram matrix is at most
16x16 and the KD-SVD step costs about as much as FSP. Measured on an idle 2-core CPU at width 0.125 (2026-12-01,
`python experiments/bench_step.py --width 0.125 --steps 10 --rounds 2`): student 2,082 img/s, student + teacher
forward 1,372, FSP 1,071, KD-SVD 926-962, teacher 987; two training processes side by side each get a little under
half of that. So one student epoch of the whole table is about 13 minutes of the machine, and the lengths were
chosen to fit this table and configs/cpu_cifar10.py's into three hours of a 2-core CPU: EPOCHS = 3 for the students and
TEACHER_EPOCHS = 20 for the teacher (8 epochs left it at 9.4 % and still climbing on a held-out split,
experiments/results/cpu_probe.md). experiments/results/cpu_table.md has the wall times measured.

Variants as in configs/cifar100_vgg.py, plus `epochs=N` (students), `teacher_epochs=N` and `width=W` tokens that
rescale the schedule (the boundaries follow) or the networks, e.g. `configs/cpu_tiny_imagenet.py:epochs=8`
(the runner appends the variant).

  python experiments/run_table.py --config configs/cpu_tiny_imagenet.py --root runs
"""

import ml_collections

from svdkd_jax import config_files

WIDTH = 0.125
EPOCHS = 3  # students
TEACHER_EPOCHS = 20  # the one teacher of a table: 8 epochs left it still climbing (experiments/results/cpu_probe.md)
TABLE_VARIANTS = ("student", "soft_target", "fsp", "kd_svd_sskd_code", "kd_svd", "kd_svd_exact")
TABLE_SEEDS = (0, 1, 2)


_vgg = config_files.sibling("cifar100_vgg", __file__)
VARIANTS = _vgg.VARIANTS


def cpu_recipe(*, epochs: int = EPOCHS, width: float = WIDTH) -> ml_collections.ConfigDict:
  """The paper recipe with the schedule compressed to `epochs` (same shape) and networks at `width`."""
  config = _vgg.paper_recipe()
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


def split_options(arg: str | None, *, epochs: int = EPOCHS, teacher_epochs: int = TEACHER_EPOCHS
                  ) -> tuple[str, dict]:
  """Takes the `epochs=N` / `teacher_epochs=N` / `width=W` tokens out of `arg`: (the rest, cpu_recipe keyword
  arguments). The teacher variant trains for `teacher_epochs`, every other variant for `epochs`."""
  rest, options, lengths = [], {}, {"epochs": epochs, "teacher_epochs": teacher_epochs}
  for token in (t.strip() for t in (arg or "").split(",")):
    key, eq, value = token.partition("=")
    if eq and key in ("epochs", "teacher_epochs", "width"):
      try:
        if key == "width":
          options[key] = float(value)
        else:
          lengths[key] = int(value)
      except ValueError:
        raise ValueError(f"Bad token {token!r}: expected epochs=<int>, teacher_epochs=<int> or width=<float>.") from None
    elif token:
      rest.append(token)
  options["epochs"] = lengths["teacher_epochs" if "teacher" in rest else "epochs"]
  return ",".join(rest), options


def archive_config(arg: str | None, *, name: str, eval_split: str, num_classes: int, epochs: int = EPOCHS,
                   teacher_epochs: int = TEACHER_EPOCHS) -> ml_collections.ConfigDict:
  """The CPU recipe for variant `arg` on the offline archive `../shared/data/<name>` at 32x32."""
  arg, options = split_options(arg, epochs=epochs, teacher_epochs=teacher_epochs)
  config = cpu_recipe(**options)
  config.data.source = "archive"
  config.data.name = name
  config.data.path = _vgg.shared_data(name)
  config.data.train_split = "train"
  config.data.eval_split = eval_split
  config.data.num_classes = num_classes
  config.data.image_size = 32
  # 2-stage at CPU scale: the KDM ratio (40 initialisation epochs for a 100-epoch schedule).
  return _vgg.apply_variant(config, arg, teacher="vgg_teacher", student="vgg_student",
                            init_epochs=max(1, (2 * config.train.epochs) // 5))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return archive_config(arg, name="tiny_imagenet_100", eval_split="val", num_classes=100)
