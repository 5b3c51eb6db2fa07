"""The KD-SVD train step and the eval step lower for TPU and CUDA from a CPU, with only allowed custom calls."""

import pathlib
import re

import pytest

from svdkd_jax import config_files

ROOT = pathlib.Path(__file__).resolve().parents[1]
export_step = config_files.load_module(ROOT / "experiments" / "export_step.py")


@pytest.fixture(scope="module")
def exported():
  """{(step, platform): StableHLO text} of the paper VGG pair's full-width steps at batch 128 (lowering only)."""
  train_step, train_args, eval_step, eval_args = export_step.build_steps("kd_svd_exact", 1.0, 128)
  return {(name, platform): export_step.export(fn, args, platform)
          for name, fn, args in (("train", train_step, train_args), ("eval", eval_step, eval_args))
          for platform in ("tpu", "cuda")}


@pytest.mark.slow
@pytest.mark.parametrize("step", ["train", "eval"])
@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_exported_step_uses_allowed_custom_calls_only(exported, step, platform):
  assert export_step.check(platform, exported[step, platform]) == []


@pytest.mark.slow
def test_cuda_choices_are_carried_by_a_step_traced_on_cpu(exported):
  """The 64 x 64 Gram matrices of the full-width taps go to the subspace solver (its 8 x 8 Rayleigh-Ritz block),
  and its fallbacks to the batched Jacobi kernel: the CUDA branch, chosen at lowering although a CPU traced the
  step."""
  calls = export_step.custom_calls(exported["train", "cuda"])
  syevd_64 = [c for c in calls if c["target"] == "cusolver_syevd_ffi" and "64x64" in c["operands"]]
  assert syevd_64 and all("algorithm = 2" in c["config"] for c in syevd_64)
  assert any(c["target"] == "cusolver_syevd_ffi" and "128x8x8" in c["operands"] for c in calls)


def test_check_flags_what_is_not_allowed():
  bad = ('%0:3 = stablehlo.custom_call @cusolver_syevd_ffi(%1) {mhlo.backend_config = {algorithm = 0 : ui8}} : '
         '(tensor<128x64x64xf32>) -> (tensor<128x64x64xf32>)\n'
         '%2 = stablehlo.custom_call @xla_ffi_python_gpu_callback(%3) : (tensor<4xf64>) -> tensor<4xf64>')
  problems = export_step.check("cuda", bad)
  assert any("one-call-per-matrix syevd" in p for p in problems)
  assert any("xla_ffi_python_gpu_callback is not on the cuda allow-list" in p for p in problems)
  assert "float64 in the module" in problems and "a host callback in the module" in problems
  ok = ('%0:3 = stablehlo.custom_call @cusolver_syevd_ffi(%1) {mhlo.backend_config = {algorithm = 0 : ui8}} : '
        '(tensor<128x16x16xf32>) -> (tensor<128x16x16xf32>)')
  assert export_step.check("cuda", ok) == []


@pytest.mark.slow
def test_bfloat16_step_exported_for_tpu_convolves_in_bfloat16_and_decomposes_in_float32():
  """train.compute_dtype = bfloat16: every convolution of the train step (forward and both pullbacks) takes bfloat16
  operands, and every eigendecomposition of the SVD (the `Eigh` calls) is float32."""
  train_step, train_args, _, _ = export_step.build_steps("kd_svd_exact", 1.0, 128, "bfloat16")
  text = export_step.export(train_step, train_args, "tpu")
  convolutions = [line for line in text.splitlines() if "stablehlo.convolution" in line]
  assert convolutions and all(set(re.findall(r"x(f32|bf16|f64)>", line)) == {"bf16"} for line in convolutions)
  eighs = [c for c in export_step.custom_calls(text) if c["target"] == "Eigh"]
  assert eighs and all(c["operands"].endswith("xf32>") for c in eighs)
  assert export_step.check("tpu", text) == []
