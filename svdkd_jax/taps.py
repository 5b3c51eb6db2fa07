"""Taps by name: the outputs of chosen submodules of an unmodified Flax NNX module.

    forward = taps.tapped(model, ["stage2", "stage3"])   # submodule paths, as nnx.iter_modules names them
    logits, (stage2, stage3) = forward(x)                # the model's own output, then each path's output

A path is a submodule's attribute names and list indices joined by ".": `stage2`, `blocks.3`, `stages.1.0.conv1`
(`module_paths(model)` lists them). The model needs no change: Flax's `nnx.capture(..., method_outputs=...)` records
what every submodule's methods return during one call (it wraps the module classes' methods for that call only),
and `tapped` reads each path's `__call__` output from that record. The call is the plain call otherwise, so inside
`jit` and `grad`, after `nnx.split`/`nnx.merge`, in train mode (BatchNorm statistics update as usual), with dropout
rngs passed through and with sharded inputs, the taps are the traced values themselves: gradients reach the model
through them.
"""

from collections.abc import Callable, Sequence
import difflib
from typing import Any

from flax import nnx
import jax

_MAX_LISTED = 12  # paths an error lists before it counts the rest


def path_name(parts: Sequence[Any]) -> str:
  """`("stages", 1, 0)` -> `"stages.1.0"`: an `nnx.iter_modules` path as `tapped` takes it."""
  return ".".join(str(p) for p in parts)


def module_paths(model: nnx.Module) -> dict[str, nnx.Module]:
  """Every submodule of `model` by path (the model itself, path `""`, left out)."""
  return {path_name(parts): module for parts, module in nnx.iter_modules(model) if parts}


def _listed(paths: Sequence[str]) -> str:
  shown = ", ".join(paths[:_MAX_LISTED])
  return shown + (f" and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else "")


def _near(path: str, valid: Sequence[str]) -> str:
  """The valid paths a user most likely meant: the children of the longest valid prefix of `path` (the top level
  if none), and the closest spellings."""
  parts = path.split(".")
  prefix = next((".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1) if ".".join(parts[:n]) in valid), "")
  depth = prefix.count(".") + 1 if prefix else 0
  children = [p for p in valid if p.startswith(f"{prefix}." if prefix else "") and p.count(".") == depth]
  close = [p for p in difflib.get_close_matches(path, valid, n=3) if p not in children]
  where = f"under {prefix!r}" if prefix else "at the top level"
  return f"paths {where}: {_listed(sorted(children, key=_natural))}" + (
      f"; close: {', '.join(close)}" if close else "")


def _natural(path: str) -> tuple:
  """Sorts `blocks.10` after `blocks.9`."""
  return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.split("."))


def _hint(path: str, module: nnx.Module, calls: dict[str, tuple]) -> str:
  """Why the submodule at `path` did not run once, where it can be told (an inherited `__call__`), and the paths
  near it that did run once: the submodules under it, else those beside it."""
  cls = type(module)
  if path not in calls and "__call__" not in vars(cls) and callable(module):
    # nnx.capture wraps the methods a module's class defines itself, not those it inherits.
    return f"; {cls.__name__} inherits __call__, which Flax's nnx.capture does not record: define it in the class"
  once = [p for p in calls if p and len(calls[p]) == 1]
  under = sorted((p for p in once if p.startswith(f"{path}.")), key=lambda p: (p.count("."), _natural(p)))
  if under:
    return f"; submodules of it that run once: {_listed(under)}"
  parent = path.rpartition(".")[0]
  beside = sorted((p for p in once if p.startswith(f"{parent}." if parent else "")),
                  key=lambda p: (p.count("."), _natural(p)))
  return f"; beside it, run once: {_listed(beside)}" if beside else ""


def check_paths(model: nnx.Module, paths: Sequence[str]) -> None:
  """Raises a one-line ValueError if a path is not a string naming a submodule of `model`, or is given twice."""
  valid = module_paths(model)
  for path in paths:
    if not isinstance(path, str) or path not in valid:
      raise ValueError(f"tap {path!r} names no submodule of {type(model).__name__}; "
                       f"{_near(str(path), list(valid))}.")
  repeated = sorted({p for p in paths if list(paths).count(p) > 1})
  if repeated:
    raise ValueError(f"tap {repeated[0]!r} is named twice; each tap is one submodule's output.")


def tapped(model: nnx.Module, paths: Sequence[str]) -> Callable[..., tuple[Any, list[jax.Array]]]:
  """`forward(*args, **kwargs) -> (model(*args, **kwargs), [output of each path's submodule, in order])`.

  Args:
    model: any `nnx.Module`; it is called as it is, in its current mode (train or eval).
    paths: submodule paths (`module_paths(model)`). Each submodule must run exactly once per call; its output is
      typically a feature map `[B, H, W, D]`.

  Raises (one-line ValueError): a path that names no submodule (listing the valid paths near it), given twice, or
  whose submodule does not run in the call or runs more than once (when `forward` is called or traced).

  The record is kept on the modules during the call, so inside `jax.jit` (or `eval_shape`, `grad`) the module must
  belong to that trace: merge it there (`nnx.merge`, as `networks.apply` does) or pass it through `nnx.jit`; Flax
  refuses to change a module of another trace level.
  """
  paths = list(paths)
  check_paths(model, paths)
  submodules = module_paths(model)
  capture = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)

  def forward(*args, **kwargs):
    output, captured = capture(*args, **kwargs)
    calls = {path_name(parts[:-1]): value.get_value() for parts, value in nnx.to_flat_state(captured)
             if parts[-1] == "__call__"}
    taps = []
    for path in paths:
      outputs = calls.get(path, ())
      if len(outputs) != 1:
        raise ValueError(f"tap {path!r} ({type(submodules[path]).__name__}) ran {len(outputs)} times in one call of "
                         f"{type(model).__name__}; a tap must run exactly once"
                         f"{_hint(path, submodules[path], calls)}.")
      taps.append(outputs[0])
    return output, taps

  return forward
