"""CPU-scale reproduction, main table: Tiny-ImageNet-100 at 32x32, VGG pair at reduced width, compressed schedule.

The paper's CIFAR-100 recipe (configs/cifar100_vgg.py) with the same schedule shape compressed to EPOCHS epochs
(lr 1e-2, x0.1 at 1/2 and at 3/4 of the run), at WIDTH times the channels, on the offline Tiny-ImageNet-100
(100 classes x 500 images, CIFAR-100's shape of problem; eval = its 5,000 labelled val images). Reduced-scale runs
on other data: never compare them to the paper's numbers as if they were the same experiment.

Sizing: the table is one teacher, then student / soft_target / fsp / kd_svd x 3 svd_grad modes for 3 seeds (19
runs, 50,000 images per epoch each). WIDTH = 0.125 because at 0.25 one VGG tap (8x8x32) needs a batched 32x32
`eigh` that ran 5-10x slower than the whole student step on a 2-core CPU, while at 0.125 every Gram matrix is at most
16x16 and the KD-SVD step costs about as much as FSP. Measured on an idle 2-core CPU at width 0.125 (2026-12-01,
`python experiments/bench_step.py --width 0.125 --steps 10 --rounds 2`): student 2,082 img/s, student + teacher
forward 1,372, FSP 1,071, KD-SVD 926-962, teacher 987; two training processes side by side each get a little under
half of that. So one student epoch of the whole table is about 13 minutes of a 2-core CPU, and the lengths were
chosen to fit this table and configs/cpu_cifar10.py's into three hours of a 2-core CPU: EPOCHS = 3 for the students and
TEACHER_EPOCHS = 20 for the teacher (8 epochs left it at 9.4 % and still climbing on a held-out split,
experiments/results/cpu_probe.md). experiments/results/cpu_table.md has the wall times measured.

The recipe is `svdkd_jax.recipes.cpu_recipe` (networks at recipes.CPU_WIDTH, no dropout) and `archive_config`.
Variants as in configs/cifar100_vgg.py (svdkd_jax.recipes), plus `epochs=N` (students), `teacher_epochs=N` and
`width=W` tokens that rescale the schedule (the boundaries follow) or the networks, e.g.
`configs/cpu_tiny_imagenet.py:epochs=8` (the runner appends the variant).

  python experiments/run_table.py --config configs/cpu_tiny_imagenet.py --root runs
"""

import ml_collections

from svdkd_jax import recipes
from svdkd_jax.recipes import VARIANTS  # pylint: disable=unused-import

WIDTH = recipes.CPU_WIDTH  # 0.125
EPOCHS = 3  # students
TEACHER_EPOCHS = 20  # the one teacher of a table: 8 epochs left it still climbing (experiments/results/cpu_probe.md)
TABLE_VARIANTS = recipes.CPU_TABLE_VARIANTS
TABLE_SEEDS = recipes.CPU_TABLE_SEEDS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return recipes.archive_config(arg, name="tiny_imagenet_100", eval_split="val", num_classes=100, epochs=EPOCHS,
                                teacher_epochs=TEACHER_EPOCHS, width=WIDTH)
