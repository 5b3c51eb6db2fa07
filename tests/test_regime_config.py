"""configs/regime_cifar10.py and its table: tokens, the label budget, seeds per row, the teacher's last checkpoint."""

import json
import os
import pathlib

from svdkd_jax import config_files

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "regime_cifar10.py"


def test_tokens_set_the_budget_holdout_and_schedule():
  module = config_files.load_module(CONFIG)
  config = module.get_config("labels=250,holdout,kd_svd_exact_mean")
  assert (config.data.train_per_class, config.data.labels_per_class, config.data.holdout) == (module.TRAIN_PER_CLASS,
                                                                                             250, 5000)
  assert (config.distill.method, config.distill.svd_grad, config.distill.loss_scale) == ("kd_svd", "exact", "mean")
  assert config.train.epochs == module.EPOCHS and config.optim.boundaries == (module.EPOCHS // 2,
                                                                             3 * module.EPOCHS // 4)
  teacher = module.get_config("teacher")
  assert teacher.model.name == "vgg_teacher" and teacher.train.epochs == module.TEACHER_EPOCHS
  assert teacher.data.labels_per_class == 0 and teacher.data.holdout == 0 and teacher.data.eval_split == "test"
  probe = module.get_config("epochs=8,lr=0.03,dropout=0,width=0.25,student")
  assert (probe.train.epochs, probe.optim.learning_rate, probe.model.dropout, probe.model.width) == (8, 0.03, 0.0,
                                                                                                     0.25)


def test_table_plan_seeds_per_row_and_last_teacher_checkpoint(tmp_path, capsys):
  run_table = config_files.load_module(ROOT / "experiments" / "run_table.py")
  module = config_files.load_module(CONFIG)
  runs = run_table.plan(f"{CONFIG}:labels=250", str(tmp_path))
  counts = {}
  for r in runs:
    counts[r.variant] = counts.get(r.variant, 0) + 1
  want = {v: module.SEEDS_PER_VARIANT.get(v, len(module.TABLE_SEEDS)) for v in module.TABLE_VARIANTS}
  assert counts == {"teacher": 1, **want} and counts["student"] == counts["kd_svd_exact"] == 5
  assert runs[1].workdir == str(tmp_path / "regime_cifar10_labels250" / "student" / "seed0")
  # A capped row runs on the file's first seeds only, whatever --seeds asks for.
  capsys.readouterr()
  late = run_table.plan(f"{CONFIG}:labels=250", str(tmp_path), seeds=[3, 4])
  assert {r.variant for r in late[1:]} == {v for v in module.TABLE_VARIANTS if v not in module.SEEDS_PER_VARIANT}
  # Each run left out says so in one line.
  capped = capsys.readouterr().out.splitlines()
  assert len(capped) == 2 * len(module.SEEDS_PER_VARIANT), capped
  assert all(" capped " in line and "--all_seeds" in line for line in capped), capped
  assert {line.split()[1] for line in capped} == set(module.SEEDS_PER_VARIANT)
  # Unless the table's plan asks for every seed (the gain plan's stride table).
  every = run_table.plan(f"{CONFIG}:stride", str(tmp_path), seeds=[3, 4], variants=["kd_svd", "student"],
                         all_seeds=True)
  assert [(r.variant, r.seed) for r in every[1:]] == [("kd_svd", 3), ("student", 3), ("kd_svd", 4), ("student", 4)]
  # Seed-major order: all rows of seed 0 before any of seed 1.
  seeds = [r.seed for r in runs[1:]]
  assert seeds == sorted(seeds)
  teacher_dir = runs[0].workdir
  os.makedirs(teacher_dir)
  with open(os.path.join(teacher_dir, "summary.json"), "w") as f:
    json.dump({"complete": True, "step": 3120}, f)
  cmd = run_table.main_command(runs[2], teacher_checkpoint="last")
  assert f"--config.teacher.checkpoint={os.path.join(teacher_dir, 'checkpoints', '3120')}" in cmd
  assert not any(c.startswith("--config.teacher.checkpoint") for c in run_table.main_command(runs[2]))


def test_students_can_read_a_probe_s_teacher(tmp_path, capsys):
  """--teacher_workdir: the students read a finished run elsewhere, which the runner never trains."""
  run_table = config_files.load_module(ROOT / "experiments" / "run_table.py")
  probe_teacher = tmp_path / "probe" / "teacher" / "seed0"
  runs = run_table.plan(f"{CONFIG}:per_class=2500", str(tmp_path / "runs"), seeds=[0], variants=["student"],
                        table="scale", teacher_workdir=str(probe_teacher))
  assert [(r.variant, r.teacher_workdir) for r in runs] == [("student", str(probe_teacher))]
  assert runs[0].workdir == str(tmp_path / "runs" / "scale" / "student" / "seed0")
  # Not finished yet: the student waits for it, and nothing is trained.
  trained = []
  failed = run_table.run_table(runs, runner=lambda run, overrides: trained.append(run) or 0)
  assert failed == runs and not trained and "no-teach" in capsys.readouterr().out
  probe_teacher.mkdir(parents=True)
  (probe_teacher / "checkpoints").mkdir()
  (probe_teacher / "summary.json").write_text(json.dumps({"complete": True, "step": 7800}))
  cmd = run_table.main_command(runs[0], teacher_checkpoint="last")
  assert f"--config.teacher.workdir={probe_teacher}" in cmd
  assert f"--config.teacher.checkpoint={probe_teacher / 'checkpoints' / '7800'}" in cmd
