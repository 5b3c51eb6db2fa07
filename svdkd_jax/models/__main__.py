"""`python -m svdkd_jax.models [--json] [--width W] [--num_classes N] [--image_size S]`.

Prints every registered network's FLOPs (exact: 2 x conv/dense multiply-accumulates of one image, from the traced
jaxpr; nothing is compiled or run), trainable parameters, per-sample tap shapes and, for the paper's networks, the
paper's figures beside them. `--json` prints a list of objects with keys name, flops, params, taps, paper_flops,
paper_params (the paper's numbers are for width 1, 100 classes and 32x32 inputs; null for other networks).
"""

import argparse
import json

from flax import nnx

from svdkd_jax import models


def summary(width: float = 1.0, num_classes: int = 100, image_size: int = 32) -> list[dict]:
  """One row per registered network: `{"name", "flops", "params", "taps", "paper_flops", "paper_params"}`."""
  rows = []
  for name in models.names():
    options = {"input_size": image_size} if name.startswith("vgg_") else {}
    model = nnx.eval_shape(lambda: models.create(name, num_classes, rngs=nnx.Rngs(0), width=width, **options))
    paper = models.paper_figures(name) or {}
    rows.append({"name": name, "flops": models.count_flops(model, image_size),
                 "params": models.count_params(model), "taps": [list(t) for t in models.tap_shapes(model, image_size)],
                 "paper_flops": paper.get("flops"), "paper_params": paper.get("params")})
  return rows


def _millions(x: float | None, digits: int) -> str:
  return "-" if x is None else f"{x / 1e6:.{digits}f}M"


def main() -> None:
  """Parses the command line (module docstring) and prints the table or, with `--json`, the rows."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  parser.add_argument("--width", type=float, default=1.0, help="channel multiplier")
  parser.add_argument("--num_classes", type=int, default=100)
  parser.add_argument("--image_size", type=int, default=32, help="square input side (e.g. 64 for Tiny-ImageNet)")
  args = parser.parse_args()
  rows = summary(args.width, args.num_classes, args.image_size)
  if args.json:
    print(json.dumps(rows, indent=1))
    return
  print(f"width {args.width}, {args.num_classes} classes, {args.image_size}x{args.image_size} inputs; "
        "FLOPs = 2 x conv/dense multiply-accumulates per image (exact count from the jaxpr); "
        "the paper columns are for width 1, 100 classes, 32x32")
  print(f"{'name':<20}{'FLOPs':>11}{'paper':>9}{'params':>12}{'paper':>8}  taps (h x w x d)")
  for r in rows:
    taps = ", ".join("x".join(map(str, t)) for t in r["taps"])
    print(f"{r['name']:<20}{_millions(r['flops'], 2):>11}{_millions(r['paper_flops'], 1):>9}"
          f"{r['params']:>12,}{_millions(r['paper_params'], 2):>8}  {taps}")


if __name__ == "__main__":
  main()
