#!/usr/bin/env bash
# Downloads, here, the wheels that the GPU machine's image lacks (it has jax, flax, optax and orbax but no grain or
# ml_collections, and reaches no package index) into .whl/ (ignored by git), for experiments/accelerator_check.sh.
#   experiments/accelerator_wheels.sh     then carry .whl with the working tree
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
  ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 portpicker==1.6.0 tensorboardX==2.6.5
ls -1 .whl
