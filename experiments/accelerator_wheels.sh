#!/usr/bin/env bash
# Downloads, on a machine with a package index, the wheels that the GPU machine's image lacks (it has jax 0.11.2 but
# no grain or ml_collections, and reaches no package index) into .whl/ (ignored by git, 6.8 MB), for
# experiments/accelerator_check.sh and experiments/gpu_campaign.py; with them the versions of flax, optax and orbax
# the tests run with (they need jax >= 0.11.1), in place of the image's. The image's jax stays: the scripts run from
# the source tree on 0.11.2, below setup.cfg's jax >= 0.12, and both smoke modes pass with it on a CPU.
#   experiments/accelerator_wheels.sh     then put .whl/ beside the tree on the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
  ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 portpicker==1.6.0 tensorboardX==2.6.5 \
  flax==0.12.12 optax==0.2.8 orbax-checkpoint==0.12.8
ls -1 .whl
