r"""Which way does the KD-SVD gradient point? The three SVD backwards against the true gradient, on a run's student.

  python experiments/probe_gradients.py --workdir DIR [--teacher TDIR] [--batches 2] [--init] [--out FILE.json] \
      [--etas 1e-3 1e-2 1e-1]

DIR is a run workdir (config.json, checkpoints/); its student (best, else latest checkpoint; `--init`: its initial
weights, `networks.build` with the run's seed) is probed against the teacher of `--teacher`, else of
config.teacher.workdir, on `--batches` batches of 128 TRAINING images (a fixed random sample, permutation seed 0: the
splits are stored sorted by class), normalised as at evaluation, both networks in eval mode. L = the run's KD-SVD loss
(`distill.kd_svd` with its k, beta, loss_scale), g_mode = dL/dparams with `svd_grad=mode` (same forward for all),
g_main = gradient of the plain softmax CE (no L2); losses and gradients are means over the batches. Report:
  loss, pair_l    L and its per-tap-pair terms;
  modes table     |g_mode|, |g_mode| / |g_main|, cos(g_mode, g_exact), cos(g_mode, g_main); descent: dL =
                  L(theta - eta g_mode / |g_mode|) - L(theta) (a step of Euclidean length eta; |theta| printed for
                  scale) and its first-order prediction -eta <g_exact, g_mode> / |g_mode| (dL < 0 for small eta
                  means a descent direction);
  layers table    per conv/linear layer (kernel + bias, network order): cos with g_exact, cos with g_main, and
                  |g_mode| / |g_main|; "-" where a gradient is 0 (L does not reach the FC layers);
  combine table   c = optim.combine_gradients(g_main, g_mode, e, rule="clip_per_tensor") at epoch e (each tensor's
                  distillation part clipped to sigmoid(e) |g_main of that tensor|): cos(c, g_main), cos(c, g_mode),
                  and the share |d|^2 / (|g_main|^2 + |d|^2) of the clipped distillation part d = c - g_main;
  taps table      per student tap, from a float64 NumPy SVD of each sample's [HW, D] map: mean s1/s2 and s2/s3 (the
                  singular-vector gradient has 1/(s_i^2 - s_j^2) factors), fractions of samples with either ratio
                  < 1.05 and of dead maps (s1 = 0); per mode, dL/dtap (where the backwards differ, before the
                  network's backward mixes them): its norm, cos with the exact one, and the share of its squared norm
                  in its 5 largest samples (top5).
Run from the project root (relative paths in configs are read from the current directory).
"""

import argparse
import json
import logging
import pathlib
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from svdkd_jax import config_files, distill, input_pipeline, networks, optim, parallel
from svdkd_jax import workdir as workdir_lib

probe_alignment = config_files.load_module(pathlib.Path(__file__).with_name("probe_alignment.py"))  # not a package

BATCH = probe_alignment.BATCH
# Output label (as in the committed probes and reports) -> svd_grad.
MODES = {"exact": "exact", "paper": "kept_triplets", "sskd_code": "released_code"}
ETAS = (1e-3, 1e-2, 1e-1)
EPOCHS = (0, 2)


def _layers(tree) -> dict[str, np.ndarray]:
  """Flat float64 vector per layer (path without its kernel/bias leaf), in network order (the head last)."""
  out: dict[tuple, list] = {}
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = [str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path]
    names = [n for n in names if n not in ("value", "raw_value")][:-1]
    out.setdefault(tuple(names), []).append(np.asarray(x, np.float64).ravel())
  order = sorted(out, key=lambda n: ("head" in n, [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in n]))
  return {"/".join(n): np.concatenate(out[n]) for n in order}


def _cos(a: np.ndarray, b: np.ndarray) -> float | None:
  na, nb = np.linalg.norm(a), np.linalg.norm(b)
  return float(a @ b / (na * nb)) if na > 0 and nb > 0 else None


def _ratio(a: float, b: float) -> float | None:
  return float(a / b) if b > 0 else None


def make_fns(student: networks.Network, teacher: networks.Network, cfg, mean, std):
  """Jitted `grads(params, rest, t_vars, images, labels)` and `loss(params, rest, t_vars, images)`."""
  d = cfg.distill
  opts = dict(k=int(d.get("k", 1)), beta=float(d.get("beta", 8.0)), loss_scale=d.get("loss_scale", "sum"))
  fns = {m: distill.kd_svd(svd_grad=svd_grad, **opts) for m, svd_grad in MODES.items()}

  def nets(params, rest, t_vars, images):
    x = input_pipeline.preprocess(images, None, train=False, mean=mean, std=std, augment="none")
    t_logits, t_taps, _ = networks.apply(teacher, t_vars, x)
    student_fn = lambda p: networks.apply(student, {"params": p, "rest": rest}, x)[:2]  # noqa: E731
    return student_fn, jax.lax.stop_gradient((t_logits, t_taps))

  def grads(params, rest, t_vars, images, labels):
    net, (t_logits, t_taps) = nets(params, rest, t_vars, images)
    (logits, taps), pull = jax.vjp(net, params)  # one forward; each gradient pulls back a cotangent of (logits, taps)
    no_taps = [jnp.zeros_like(t) for t in taps]
    ce = lambda z: optax.softmax_cross_entropy_with_integer_labels(z.astype(jnp.float32), labels).mean()  # noqa: E731
    out = {"g_main": pull((jax.grad(ce)(logits).astype(logits.dtype), no_taps))[0], "taps": taps}
    for m, fn in fns.items():
      (out["loss"], out["aux"]), tap_g = jax.value_and_grad(
          lambda t, fn=fn: fn(t, t_taps, logits, t_logits), has_aux=True)(taps)
      out[m], out[f"taps_{m}"] = pull((jnp.zeros_like(logits), tap_g))[0], tap_g
    return out

  def loss(params, rest, t_vars, images):
    net, (t_logits, t_taps) = nets(params, rest, t_vars, images)
    logits, taps = net(params)
    return fns["exact"](taps, t_taps, logits, t_logits)[0]

  return jax.jit(grads), jax.jit(loss)


def _tap_stats(taps: list[np.ndarray], tap_grads: dict[str, list[np.ndarray]]) -> list[dict]:
  rows = []
  for t, tap in enumerate(taps):
    b, h, w, dd = tap.shape
    s = np.linalg.svd(np.asarray(tap, np.float64).reshape(b, h * w, dd), compute_uv=False)
    alive = s[:, 0] > 0
    r12 = s[alive, 0] / np.maximum(s[alive, 1], 1e-300)
    r23 = s[alive, 1] / np.maximum(s[alive, 2], 1e-300) if s.shape[1] > 2 else np.full_like(r12, np.inf)
    row = {"shape": [h, w, dd], "s1_s2": float(np.mean(r12)), "s2_s3": float(np.mean(r23)),
           "near_degenerate": float(np.mean((r12 < 1.05) | (r23 < 1.05))), "dead": float(1 - alive.mean())}
    exact = tap_grads["exact"][t].reshape(b, -1).astype(np.float64)
    for m, grads in tap_grads.items():
      g = grads[t].reshape(b, -1).astype(np.float64)
      per_sample = np.sort(np.sum(g * g, axis=1))[::-1]
      row[m] = {"grad_norm": float(np.sqrt(per_sample.sum())), "cos_exact": _cos(g.ravel(), exact.ravel()),
                "top5_share": _ratio(float(per_sample[:5].sum()), float(per_sample.sum()))}
    rows.append(row)
  return rows


def probe(workdir: str, teacher_dir: str, *, batches: int, init: bool, etas=ETAS) -> dict[str, Any]:
  cfg = ml_collections.ConfigDict(workdir_lib.read_config(workdir))
  ds = input_pipeline.create_datasets(cfg.data, global_batch_size=BATCH, eval_batch_size=BATCH, seed=cfg.seed)
  mesh, size = parallel.create_mesh(), ds.image_shape[0]
  if init:
    student = networks.build(cfg.model.name, cfg.model.width, ds.num_classes, cfg.seed, mesh=mesh, image_size=size,
                             dropout=cfg.model.get("dropout"))
  else:
    student = probe_alignment.restore_run(workdir, ds.num_classes, mesh=mesh, image_size=size)
  teacher = probe_alignment.restore_run(teacher_dir, ds.num_classes, mesh=mesh, image_size=size)
  grads_fn, loss_fn = make_fns(student, teacher, cfg, ds.mean, ds.std)
  params, rest, t_vars = student.variables["params"], student.variables["rest"], teacher.variables
  n = min(batches, len(ds.train) // BATCH) or 1
  # A fixed random sample (seed 0): archive splits are sorted by class, their first batch is one class.
  data = [ds.train.gather(indices) for indices in probe_alignment.sample_indices(len(ds.train), n)]
  outs = []
  for i, batch in enumerate(data):
    outs.append(jax.device_get(grads_fn(params, rest, t_vars, batch["image"], batch["label"])))
    print(f"  gradients: batch {i + 1}/{n}", file=sys.stderr)
  mean = lambda *xs: sum(xs) / len(xs)  # noqa: E731
  avg = {key: jax.tree.map(mean, *[o[key] for o in outs]) for key in ("g_main", "aux", *MODES)}
  total_loss = lambda p: float(np.mean([loss_fn(p, rest, t_vars, b["image"]) for b in data]))  # noqa: E731
  # Jitted: eager tree ops would compile once per op and leaf shape.
  shift = jax.jit(lambda p, d, step: jax.tree.map(lambda a, b: a - step * b, p, d))
  combine = jax.jit(lambda m, d, e: optim.combine_gradients(m, d, e, rule="clip_per_tensor", weight=cfg.combine.weight))
  base = total_loss(params)
  lay = {key: _layers(avg[key]) for key in ("g_main", *MODES)}
  flat = {key: np.concatenate(list(v.values())) for key, v in lay.items()}
  main_layer_norm = {name: float(np.linalg.norm(v)) for name, v in lay["g_main"].items()}
  res: dict[str, Any] = {
      "workdir": workdir, "teacher": teacher_dir, "init": init, "examples": sum(len(b["label"]) for b in data),
      "checkpoint": "init" if init else student.step_dir,
      "loss": base, "pairs": {k: float(v) for k, v in avg["aux"].items()},
      "param_norm": float(np.linalg.norm(np.concatenate(list(_layers(params).values())))),
      "grad_norm_main": float(np.linalg.norm(flat["g_main"])), "layers": main_layer_norm, "modes": {}}
  for m in MODES:
    g, norm = flat[m], float(np.linalg.norm(flat[m]))
    r: dict[str, Any] = {"grad_norm": norm, "cos_exact": _cos(g, flat["exact"]), "cos_main": _cos(g, flat["g_main"]),
                         "ratio_main": _ratio(norm, res["grad_norm_main"]),
                         "layers": {name: {"cos_exact": _cos(v, lay["exact"][name]),
                                           "cos_main": _cos(v, lay["g_main"][name]),
                                           "ratio_main": _ratio(float(np.linalg.norm(v)), main_layer_norm[name])}
                                    for name, v in lay[m].items()}, "descent": [], "combine": []}
    for eta in etas:
      step = eta / norm if norm > 0 else 0.0
      r["descent"].append({"eta": eta, "delta": total_loss(shift(params, avg[m], step)) - base,
                           "predicted": -step * float(flat["exact"] @ g)})
    for e in EPOCHS:
      c = _layers(jax.device_get(combine(avg["g_main"], avg[m], e)))
      c = np.concatenate(list(c.values()))
      dpart = float(np.sum(np.square(c - flat["g_main"])))
      r["combine"].append({"epoch": e, "cos_main": _cos(c, flat["g_main"]), "cos_dist": _cos(c, g),
                           "dist_share": dpart / (res["grad_norm_main"] ** 2 + dpart)})
    res["modes"][m] = r
  cat = lambda key: [np.concatenate([o[key][t] for o in outs]) / (1 if key == "taps" else n)  # noqa: E731
                     for t in range(len(outs[0]["taps"]))]
  res["taps"] = _tap_stats(cat("taps"), {m: cat(f"taps_{m}") for m in MODES})
  return res


def _f(x: float | None, fmt: str = ".3f") -> str:
  return "-" if x is None else format(x, fmt)


def _table(head: list[str], rows: list[list[str]]) -> str:
  w = [max(len(r[j]) for r in [head] + rows) for j in range(len(head))]
  return "\n".join("  ".join(c.ljust(x) for c, x in zip(r, w)).rstrip() for r in [head] + rows)


def format_report(r: dict) -> str:
  modes = r["modes"]
  out = [f"{r['workdir']} [{r['checkpoint']}] vs teacher {r['teacher']}: {r['examples']} train images",
         f"|theta| = {r['param_norm']:.4g}   |g_main| = {r['grad_norm_main']:.4g}   KD-SVD loss = {r['loss']:.5g}   "
         + "  ".join(f"{k} = {v:.4g}" for k, v in r["pairs"].items()), ""]
  rows = [[m, _f(x["grad_norm"], ".4g"), _f(x["ratio_main"], ".3g"), _f(x["cos_exact"]), _f(x["cos_main"])]
          + [f"{d['delta']:+.3g} ({d['predicted']:+.3g})" for d in x["descent"]] for m, x in modes.items()]
  out += [_table(["mode", "|g_dist|", "/|g_main|", "cos exact", "cos main"]
                 + [f"dL eta={d['eta']:g} (pred)" for d in next(iter(modes.values()))["descent"]], rows), ""]
  cell = lambda x: f"{_f(x['cos_exact'])} / {_f(x['cos_main'])} / {_f(x['ratio_main'], '.3g')}"  # noqa: E731
  rows = [[name, _f(g, ".3g")] + [cell(modes[m]["layers"][name]) for m in modes] for name, g in r["layers"].items()]
  out += [_table(["layer", "|g_main|"] + [f"{m}: cos exact / cos main / |g_d|/|g_m|" for m in modes], rows), ""]
  rows = [[m, str(c["epoch"]), _f(c["cos_main"]), _f(c["cos_dist"]), _f(c["dist_share"])]
          for m, x in modes.items() for c in x["combine"]]
  out += [_table(["combine sskd", "epoch", "cos(c, g_main)", "cos(c, g_dist)", "dist share"], rows), ""]
  cell = lambda x: f"{x['grad_norm']:.3g} / {_f(x['cos_exact'])} / {_f(x['top5_share'], '.2f')}"  # noqa: E731
  rows = [[f"tap{i} {'x'.join(map(str, t['shape']))}", _f(t["s1_s2"]), _f(t["s2_s3"]), _f(t["near_degenerate"], ".2f"),
           _f(t["dead"], ".2f")] + [cell(t[m]) for m in modes] for i, t in enumerate(r["taps"])]
  out.append(_table(["student tap", "s1/s2", "s2/s3", "near-degen.", "dead"]
                    + [f"{m}: |dL/dtap| / cos exact / top5" for m in modes], rows))
  return "\n".join(out)


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a distillation (or student) run workdir")
  parser.add_argument("--teacher", default="", help="teacher run workdir (default: config.teacher.workdir)")
  parser.add_argument("--batches", type=int, default=2, help=f"batches of {BATCH} training images")
  parser.add_argument("--init", action="store_true", help="probe the student's initial weights (the run's seed)")
  parser.add_argument("--etas", type=float, nargs="+", default=list(ETAS), help="descent-check step lengths")
  parser.add_argument("--out", default="", help="write the results as JSON here")
  args = parser.parse_args(argv)
  if args.batches < 1 or min(args.etas) <= 0:
    parser.error(f"--batches={args.batches} must be >= 1 and --etas {args.etas} positive")
  try:
    teacher_dir = probe_alignment.check_run(args.workdir, args.teacher, student_checkpoint=not args.init)
  except ValueError as e:
    parser.error(str(e))
  try:
    result = probe(args.workdir, teacher_dir, batches=args.batches, init=args.init, etas=tuple(args.etas))
  except (ValueError, FileNotFoundError) as e:
    parser.error(f"{args.workdir}: {e}")
  print(format_report(result))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
    print(f"wrote {args.out}", file=sys.stderr)
  return result


if __name__ == "__main__":
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's notes on read-only checkpoint managers
  main()
