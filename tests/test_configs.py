"""Experiment configs, the table runner and the Colab notebook: everything loads, names what exists, and agrees.

References are independent of the code under test: the recipes are the numbers of docs/method.md (7.1, 7.3), the
key set is configs/default.py's, model names and teacher/student pairs come from svdkd_jax.models.
"""

import ast
import functools
import importlib.util
import inspect
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import nbformat
import pytest

from svdkd_jax import config as config_lib
from svdkd_jax import config_files
from svdkd_jax import distill
from svdkd_jax import models
from svdkd_jax import recipes
from svdkd_jax import run_config
from svdkd_jax import workdir

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
NOTEBOOK = ROOT / "experiments" / "colab_tpu.ipynb"
VARIANTS = ("teacher", "student", "kd_svd", "kd_svd_exact", "kd_svd_sskd_code", "fsp", "soft_target",
            "attention_transfer", "dkd", "fsp_2stage", "kd_svd_2stage")
# file -> its pair in models.PAIRS for the variants without a pair token.
PAIRS = {
    "cifar100_vgg": "vgg",
    "cifar100_vgg_stride": "vgg_stride",
    "cifar100_mobilenet": "mobilenet",
    "cifar100_resnext": "resnext",
    "tiny_imagenet_vgg": "vgg",
    "crd_benchmark": "resnet32x4",
    "kdm_resnet": "resnet32",
    "cpu_tiny_imagenet": "vgg",
    "cpu_cifar10": "vgg",
}
SVD_GRADS = {"kd_svd": "kept_triplets", "kd_svd_exact": "exact", "kd_svd_sskd_code": "released_code"}


def load(path: pathlib.Path):
  return config_files.load_module(path)


@functools.cache
def config_module(name: str):
  return load(CONFIGS / f"{name}.py")


CRD_PAIRS = config_module("crd_benchmark").CRD_PAIRS  # its pair tokens: names in models.PAIRS


def all_args():
  """(file, arg) for every file, variant (+ smoke) and CRD pair."""
  out = []
  for name in PAIRS:
    prefixes = [f"{p}," for p in CRD_PAIRS] + [""] if name == "crd_benchmark" else [""]
    for prefix in prefixes:
      for v in VARIANTS:
        out += [(name, prefix + v), (name, prefix + v + ",smoke")]
  return out


def flat_values(config, prefix=""):
  values = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      values.update(flat_values(value, f"{prefix}{key}."))
    else:
      values[prefix + key] = value
  return values


def flat_keys(config):
  return {key: type(value) for key, value in flat_values(config).items()}


DEFAULT_KEYS = flat_keys(load(CONFIGS / "default.py").get_config())


@pytest.mark.parametrize("name,arg", all_args())
def test_variant_loads_with_default_keys_and_known_models(name, arg):
  config = config_module(name).get_config(arg)
  keys = flat_keys(config)
  assert set(keys) == set(DEFAULT_KEYS), set(keys) ^ set(DEFAULT_KEYS)
  for key, kind in keys.items():  # a tuple may replace a tuple, an int an int, ... (ints may stand for floats)
    assert kind is DEFAULT_KEYS[key] or (kind is int and DEFAULT_KEYS[key] is float), (key, kind)
  assert config.model.name in models.names() and config.teacher.name in models.names()
  pair = next((p for p in CRD_PAIRS if arg.startswith(p + ",")), PAIRS[name])
  teacher, student = models.PAIRS[pair]
  variant = [t for t in arg.split(",") if t in VARIANTS][0]
  assert config.teacher.name == teacher
  assert config.model.name == (teacher if variant == "teacher" else student)
  method = {"teacher": "none", "student": "none", "fsp": "fsp", "fsp_2stage": "fsp", "soft_target": "soft_target",
            "attention_transfer": "attention_transfer", "dkd": "dkd"}
  assert config.distill.method == method.get(variant, "kd_svd")
  if variant.startswith("kd_svd") and variant != "kd_svd_2stage":
    assert config.distill.svd_grad == SVD_GRADS[variant]
  # The paper's KD-SVD rows keep the released batch sum; the `_mean` rows and every other method, the default mean.
  paper_row = variant.startswith("kd_svd") and not variant.startswith("kd_svd_exact_mean")
  assert config.distill.loss_scale == ("sum" if paper_row else "mean"), (name, arg)
  assert config.distill.mechanism == ("2stage" if variant.endswith("2stage") else "1stage")
  assert (config.distill.init_epochs > 0) == variant.endswith("2stage")
  assert config.model.width == config.teacher.width
  if "smoke" in arg:
    assert config.data.source == "digits" and config.train.epochs == 1 and config.model.width <= 0.25


def test_no_variant_is_kd_svd_exact_mean_and_bad_variants_say_what_is_valid():
  vgg = config_module("cifar100_vgg")
  default = vgg.get_config().distill
  assert (default.method, default.svd_grad, default.loss_scale) == ("kd_svd", "exact", "mean")
  for bad in ("kd-svd", "teacher,student", "smoke,bogus", "smoke=maybe", "epochs=3"):
    with pytest.raises(ValueError, match=r"^Bad config argument .*one variant of teacher, .*kd_svd_sskd_code.*; "
                                         r"smoke\.$"):
      vgg.get_config(bad)
  with pytest.raises(ValueError, match=r"two tokens for pair \('vgg13', 'wrn_40_2'\)"):
    config_module("crd_benchmark").get_config("vgg13,wrn_40_2,kd_svd")


def test_recipes_match_the_reference():
  # (epochs, batch, lr, boundaries, weight decay, nesterov) from docs/method.md 7.1 / 7.3.
  paper = (200, 128, 1e-2, (100, 150), 1e-4, True)
  expected = {"cifar100_vgg": paper, "cifar100_vgg_stride": paper, "cifar100_mobilenet": paper,
              "cifar100_resnext": paper, "tiny_imagenet_vgg": paper,
              "crd_benchmark": (240, 64, 0.05, (150, 180, 210), 5e-4, False),
              "kdm_resnet": (100, 128, 0.1, (30, 60, 80), 5e-4, True)}
  for name, recipe in expected.items():
    c = config_module(name).get_config("kd_svd")
    got = (c.train.epochs, c.train.batch_size, c.optim.learning_rate, tuple(c.optim.boundaries),
           c.optim.weight_decay, c.optim.nesterov)
    assert got == recipe, name
    assert c.optim.momentum == 0.9 and c.optim.decay_factor == 0.1 and c.distill.k == 1, name
  assert config_module("cifar100_vgg").get_config("kd_svd").combine.rule == "clip_per_tensor"
  assert config_module("kdm_resnet").get_config("kd_svd").optim.decoupled_weight_decay  # WD outside the clip
  # 2-stage: init epochs in front of the whole recipe (the trainer restarts the schedule).
  c = config_module("cifar100_vgg").get_config("kd_svd_2stage")
  assert (c.distill.init_epochs, c.train.epochs, tuple(c.optim.boundaries)) == (40, 200, (100, 150))
  c = config_module("tiny_imagenet_vgg").get_config("teacher")
  assert (c.data.image_size, c.data.eval_split, c.data.source) == (64, "val", "archive")


def test_cpu_configs_compress_the_schedule_and_name_their_archive():
  for name, folder, classes, eval_split in (("cpu_tiny_imagenet", "tiny_imagenet_100", 100, "val"),
                                            ("cpu_cifar10", "cifar10_jpeg", 10, "test")):
    c = config_module(name).get_config("kd_svd")
    e = c.train.epochs
    assert 0 < e < 200 and 0 < c.model.width < 1
    assert tuple(c.optim.boundaries) == (e // 2, 3 * e // 4)  # the paper's 100/150 of 200, compressed
    assert (c.data.source, c.data.num_classes, c.data.image_size, c.data.eval_split) == ("archive", classes, 32,
                                                                                           eval_split)
    assert c.data.path == folder  # a name in the data root: configs and run records hold no machine path
    assert config_module(name).TABLE_VARIANTS == ("student", "soft_target", "fsp", "kd_svd_sskd_code", "kd_svd",
                                                  "kd_svd_exact")
    assert len(config_module(name).TABLE_SEEDS) >= 3
    # `epochs=` / `width=` tokens rescale the schedule with its shape, and the networks.
    c = config_module(name).get_config("epochs=12,kd_svd_2stage,width=0.25")
    assert (c.train.epochs, tuple(c.optim.boundaries), c.model.width, c.teacher.width) == (12, (6, 9), 0.25, 0.25)
    assert (c.distill.mechanism, c.distill.init_epochs) == ("2stage", 4)
    with pytest.raises(ValueError, match="expected epochs=<int>, got 'two'"):
      config_module(name).get_config("epochs=two")
    # The table's one teacher trains longer than its students; `teacher_epochs=` only touches the teacher.
    module = config_module(name)
    c = module.get_config("teacher")
    assert (c.train.epochs, c.model.name) == (module.TEACHER_EPOCHS, "vgg_teacher") and module.TEACHER_EPOCHS > e
    assert tuple(c.optim.boundaries) == (module.TEACHER_EPOCHS // 2, 3 * module.TEACHER_EPOCHS // 4)
    assert module.get_config("teacher,teacher_epochs=10,epochs=3").train.epochs == 10
    assert module.get_config("student,teacher_epochs=10").train.epochs == e


@functools.cache
def tap_channels(name: str, width: float, image_size: int) -> tuple[int, ...]:
  def forward(x):
    size = {"input_size": image_size} if image_size != 32 else {}  # the paper VGGs flatten their last map
    model = models.create(name, 10, rngs=nnx.Rngs(params=0, dropout=1), width=width, **size)
    model.eval()
    return model(x)
  _, taps = jax.eval_shape(forward, jax.ShapeDtypeStruct((2, image_size, image_size, 3), jnp.float32))
  return tuple(t.shape[-1] for t in taps)


ARCHIVE_CONFIGS = {"cpu_cifar10": "kd_svd", "cpu_tiny_imagenet": "kd_svd", "regime_cifar10": "kd_svd",
                   "tiny_imagenet_vgg": "teacher"}


@pytest.mark.real_data
def test_archive_configs_name_archives_found_in_the_data_root():
  from svdkd_jax.data import sources  # pylint: disable=g-import-not-at-top

  assert {f.stem for f in CONFIGS.glob("*.py")
          if "source = \"archive\"" in f.read_text() or "archive_config(" in f.read_text()} == set(ARCHIVE_CONFIGS)
  names = {name: config_module(name).get_config(arg).data.path for name, arg in ARCHIVE_CONFIGS.items()}
  assert not [p for p in names.values() if "/" in p], names
  missing = []
  for name, path in names.items():
    try:
      meta = sources.read_archive_meta(path)
    except FileNotFoundError as e:
      missing.append(str(e))
      continue
    config = config_module(name).get_config(ARCHIVE_CONFIGS[name])
    splits = {config.data.train_split, config.data.eval_split}
    assert splits <= set(meta) and len(meta["classes"]) >= config.data.num_classes, (name, path)
  if missing:
    pytest.skip(f"ARCHIVES MISSING from the data root, not checked: {missing[0]}")


def test_teacher_and_student_taps_have_equal_channels():
  seen = set()
  for name, arg in all_args():
    if "smoke" in arg and name != "cifar100_vgg":  # every smoke is width 0.25: one network family is enough here
      continue
    c = config_module(name).get_config(arg)
    key = (c.teacher.name, c.model.name if c.model.name != c.teacher.name else None, c.model.width,
           c.data.image_size)
    if key[1] is None or key in seen:
      continue
    seen.add(key)
    teacher = tap_channels(c.teacher.name, c.teacher.width, c.data.image_size)
    student = tap_channels(c.model.name, c.model.width, c.data.image_size)
    assert len(teacher) >= 2 and teacher == student, (name, arg, teacher, student)
  assert len(seen) >= 12


def test_teacher_workdir_and_keys_are_settable_from_the_command_line():
  argv = ["main", f"--config={CONFIGS / 'crd_benchmark.py'}:wrn_40_2,kd_svd_exact",
          "--config.teacher.workdir=/runs/t", "--config.seed=3", "--config.train.epochs=2"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=fv, sys_argv=argv)  # overrides are read from sys_argv
  fv(argv)
  assert (fv.config.teacher.workdir, fv.config.seed, fv.config.train.epochs) == ("/runs/t", 3, 2)
  assert (fv.config.model.name, fv.config.distill.svd_grad) == ("wrn_16_2", "exact")


# --- how configs are built: one schema, locked; one home for the shared pieces; one check ---


def test_config_files_import_the_package_not_each_other():
  allowed = {"ml_collections", "svdkd_jax.config", "svdkd_jax.recipes"}
  for path in sorted(CONFIGS.glob("*.py")):
    tree = ast.parse(path.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {f"{node.module}.{alias.name}" if node.module == "svdkd_jax" else node.module
                 for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert imported <= allowed, (path.name, imported - allowed)


def test_configs_are_locked_where_built():
  for name in [*PAIRS, "quickstart", "regime_cifar10", "default"]:
    config = config_module(name).get_config()
    assert config.is_locked and config.train.is_locked, name
  config = config_module("cpu_cifar10").get_config("kd_svd")
  with pytest.raises(AttributeError, match='Did you mean "path" instead of "pth"'):
    config.data.pth = "/data"
  with pytest.raises(TypeError, match="epochs"):
    config.train.epochs = "three"
  config.train.epochs = 4  # values change, keys do not
  assert recipes.quickstart("teacher").is_locked and config_lib.default().is_locked


def test_paper_recipe_is_the_default_but_for_the_authors_statistics():
  default, paper = flat_values(config_lib.default()), flat_values(recipes.paper_recipe())
  assert {k for k in default if default[k] != paper[k]} == {"data.normalization"}
  assert paper["data.normalization"] == "cifar100_bgr"


def test_validate_names_unknown_and_missing_keys_in_one_line():
  config = recipes.quickstart("student")
  config_lib.validate(config)
  with config.unlocked():
    config.optim.learning_rte = 0.1
  with pytest.raises(ValueError, match=r"^Unknown config key 'optim.learning_rte'. Did you mean "
                                       r"'optim.learning_rate'\? Valid keys of optim: boundaries, .*, weight_decay.$"):
    config_lib.validate(config)
  partial = ml_collections.ConfigDict(recipes.quickstart("student").to_dict())
  del partial.train["ce_reduction"]
  with pytest.raises(ValueError, match=r"^Config key\(s\) 'train.ce_reduction' missing"):
    config_lib.validate(partial)
  for key, message in (("trainz.epochs", r"^Unknown config key 'trainz'. Did you mean 'train'\? Valid keys: combine"),
                       ("seed.x", r"^Unknown config key 'seed.x'. Valid keys of seed: none \(seed is a value")):
    with pytest.raises(ValueError, match=message):
      config_lib.check_key(key)
  config_lib.check_key("distill.svd_grad")


# Every check of a value, each a one-line ValueError: (key, bad value, message).
BAD_VALUES = [
    ("teacher.weights", "bogus", "config.teacher.weights='bogus'; valid: trained, random."),
    ("distill.svd_grad", "autodiff", "config.distill.svd_grad='autodiff'; valid: exact, kept_triplets, released_code."),
    ("distill.loss_scale", "batch", "config.distill.loss_scale='batch'; valid: sum, mean."),
    ("distill.teacher_images", "other", "config.distill.teacher_images='other'; valid: same, deranged."),
    ("distill.mechanism", "3stage", "config.distill.mechanism='3stage'; valid: 1stage, 2stage."),
    ("combine.rule", "max", "config.combine.rule='max'; valid: clip_per_tensor, rescale_per_tensor, sum, "
     "clip_global_norm."),
    ("data.source", "hub", "config.data.source='hub'; valid: tfds, archive, digits."),
    ("data.augment", "mixup", "config.data.augment='mixup'; valid: flip_rotate_crop, flip_crop, none."),
    ("data.normalization", "imagenet", "config.data.normalization='imagenet'; valid: dataset, cifar100_bgr."),
    ("optim.name", "lamb", "config.optim.name='lamb'; valid: sgd, adam."),
    ("train.ce_reduction", "sum", "config.train.ce_reduction='sum'; valid: batch, labelled."),
    ("optim.weight_decay", -1e-4, "config.optim.weight_decay=-0.0001 must be >= 0."),
    ("optim.decay_factor", -0.1, "config.optim.decay_factor=-0.1 must be >= 0."),
    ("optim.learning_rate", 0.0, "config.optim.learning_rate=0.0 must be > 0."),
    ("optim.boundaries", (150, 100), "config.optim.boundaries=(150, 100) must be non-negative, strictly increasing "
     "epochs."),
    ("optim.boundaries", (-1,), "config.optim.boundaries=(-1,) must be non-negative, strictly increasing epochs."),
    ("distill.k", 0, "config.distill.k=0 must be > 0."),
    ("distill.beta", 0.0, "config.distill.beta=0.0 must be > 0."),
    ("distill.temperature", -1.0, "config.distill.temperature=-1.0 must be > 0."),
    ("train.epochs", 0, "config.train.epochs=0 must be > 0."),
    ("train.batch_size", 0, "config.train.batch_size=0 must be > 0."),
    ("train.checkpoint_every_steps", 0, "config.train.checkpoint_every_steps=0 must be > 0."),
    ("train.max_steps", -1, "config.train.max_steps=-1 must be >= 0."),
    ("data.holdout", -5, "config.data.holdout=-5 must be >= 0."),
    ("model.width", 0.0, "config.model.width=0.0 must be > 0."),
    ("model.dropout", -0.5, "config.model.dropout=-0.5 must be >= 0."),
]


@pytest.mark.parametrize("key,value,message", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_validate_refuses_each_bad_value_in_one_line(key, value, message):
  config = recipes.quickstart("student")
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(ValueError) as e:
    config_lib.validate(config)
  assert str(e.value) == message


def test_validate_refuses_values_that_do_not_go_together():
  for variant, overrides, message in (
      ("kd_svd_exact", {}, r"^A distillation run needs a teacher: set --config.teacher.workdir=DIR"),
      ("fsp_2stage", {"teacher.workdir": "t", "distill.init_epochs": 0},
       r"^distill.mechanism='2stage' needs distill.init_epochs >= 1"),
      ("student", {"data.source": "archive", "data.path": ""},
       r"^config.data.source='archive' needs config.data.path: an archive name in the data root"),
      ("student", {"data.source": "tfds", "data.name": ""}, r"^config.data.source='tfds' needs config.data.name"),
      ("student", {"data.train_per_class": 10, "data.labels_per_class": 20},
       r"^config.data.labels_per_class=20 must be at most data.train_per_class=10 \(0 = all\).$")):
    config = recipes.quickstart(variant)
    for key, value in overrides.items():
      section, name = key.split(".")
      config[section][name] = value
    with pytest.raises(ValueError, match=message):
      config_lib.validate(config)
  built = recipes.quickstart("student").to_dict()  # a config built from a dict: its types are not the schema's
  built["train"]["epochs"] = 2.5
  with pytest.raises(ValueError, match=r"^config.train.epochs=2.5 must be an integer.$"):
    config_lib.validate(ml_collections.ConfigDict(built))
  config = recipes.quickstart("kd_svd_exact_mean_untrained_teacher")  # a random teacher needs no teacher run
  config_lib.validate(config)


def test_earlier_value_names_read_as_today_s():
  """config.ALIASES: a config (or a config.json dict) with the names earlier versions wrote validates, and
  `canonical` gives today's names, leaving its argument alone."""
  earlier = {"data.augment": "sskd", "data.normalization": "sskd_bgr", "distill.svd_grad": "paper",
             "distill.loss_scale": "sskd", "combine.rule": "poster"}
  today = {"data.augment": "flip_rotate_crop", "data.normalization": "cifar100_bgr",
           "distill.svd_grad": "kept_triplets", "distill.loss_scale": "sum", "combine.rule": "rescale_per_tensor"}
  config = recipes.quickstart("kd_svd")
  config.teacher.workdir = "t"
  for key, value in earlier.items():
    section, name = key.split(".")
    config[section][name] = value
  config_lib.validate(config)
  run_config.validate_run(config)
  converted = config_lib.canonical(config)
  assert {k: flat_values(converted)[k] for k in today} == today and converted.is_locked
  assert {k: flat_values(config)[k] for k in earlier} == earlier
  as_dict = config_lib.canonical({"distill": {"svd_grad": "sskd_code"}, "combine": {"rule": "global_norm"}})
  assert as_dict == {"distill": {"svd_grad": "released_code"}, "combine": {"rule": "clip_global_norm"}}
  # Every earlier name maps to a valid value of its key, and no name is both earlier and current.
  for key, renamed in config_lib.ALIASES.items():
    assert set(renamed.values()) <= set(config_lib.CHOICES[key]) and not set(renamed) & set(config_lib.CHOICES[key])


def test_distillation_options_must_be_read_by_the_method():
  """run_config.validate_run: a non-default value of an option the chosen method does not read is refused (it
  would be ignored); the options of the method, and of each part of a sum, are free."""
  config = recipes.quickstart("kd_svd_exact")
  config.teacher.workdir = "t"
  config.distill.temperature = 2.0
  with pytest.raises(ValueError) as e:
    run_config.validate_run(config)
  assert str(e.value) == ("config.distill.temperature=2.0 is not read by distill.method='kd_svd' (it reads k, beta, "
                          "svd_grad, loss_scale, svd_solver): leave it at its default 4.0, or choose a method that "
                          "reads it.")
  config.distill.method = "kd_svd+soft_target"
  run_config.validate_run(config)
  config = recipes.quickstart("fsp")
  config.teacher.workdir = "t"
  config.distill.loss_scale = "sum"
  with pytest.raises(ValueError, match=r"^config.distill.loss_scale='sum' is not read by distill.method='fsp' "
                                       r"\(it has no options\)"):
    run_config.validate_run(config)
  for field, value, message in (("model.name", "vgg99", r"^config.model.name='vgg99' is not a network; valid: "),
                                ("distill.method", "fsp+fsp", r"^config.distill.method='fsp\+fsp'; valid: none, ")):
    config = recipes.quickstart("teacher")
    config.teacher.workdir = "t"
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=message):
      run_config.validate_run(config)


def test_a_config_distill_key_no_method_declares_is_refused(monkeypatch):
  """A `config.distill` option that no registered method declares is unknown; an option a method declares that
  config.distill lacks is named. (The registry declares each method's options: distill.Method.)"""
  schema = config_lib.default()
  with schema.unlocked():
    schema.distill.gamma = 1.0
  monkeypatch.setattr(config_lib, "default", lambda: schema)
  config = recipes.quickstart("teacher")
  with config.unlocked():
    config.distill.gamma = 1.0
  with pytest.raises(ValueError, match=r"^config.distill.gamma is an option of no distillation method \(their "
                                       r"options: at_beta, beta, dkd_alpha, dkd_beta, dkd_warmup, k, loss_scale, "
                                       r"svd_grad, svd_solver, temperature\).$"):
    run_config.validate_run(config)
  monkeypatch.undo()
  from svdkd_jax import distill  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(distill._REGISTRY, "toy", distill.Method(lambda *, delta: distill.none(), ("delta",)))
  config = recipes.quickstart("teacher")
  config.distill.method, config.teacher.workdir = "toy", "t"
  with pytest.raises(ValueError, match=r"^distill.method='toy' reads option\(s\) delta, which config.distill lacks"):
    run_config.validate_run(config)


def test_the_schema_s_values_are_the_libraries():
  """The schema lists the values the code that reads them implements, and every `config.distill` key is the
  trainer's or an option a method declares (adding an option: its default here, its name in distill's registry)."""
  from svdkd_jax import distill, optim, svd  # pylint: disable=g-import-not-at-top
  from svdkd_jax.data import augment  # pylint: disable=g-import-not-at-top
  assert set(config_lib.CHOICES["distill.svd_grad"]) == set(svd.GRAD_MODES)
  assert config_lib.CHOICES["distill.loss_scale"] == distill.LOSS_SCALES
  assert config_lib.CHOICES["combine.rule"] == optim.COMBINE_RULES
  assert config_lib.CHOICES["data.augment"] == augment.AUGMENTS
  keys = set(config_lib.default().distill.keys())
  assert keys == set(config_lib.DISTILL_RUN_KEYS) | set(distill.all_option_names())
  assert not set(config_lib.DISTILL_RUN_KEYS) & set(distill.all_option_names())
  flat = flat_values(config_lib.default())
  assert set(config_lib.CHOICES) | set(config_lib.POSITIVE) | set(config_lib.NON_NEGATIVE) <= set(flat)
  assert set(config_lib.RUN_CONTROL_KEYS) | {config_lib.EXTENDABLE_KEY} <= set(flat)
  assert all(flat[key] in valid for key, valid in config_lib.CHOICES.items())


def test_parse_arg_is_typed():
  spec = dict(variant=recipes.OneOf(("a", "b"), "a"), smoke=False, epochs=3, width=0.5, name="x")
  assert recipes.parse_arg(None, **spec).to_dict() == {"variant": "a", "smoke": False, "epochs": 3, "width": 0.5,
                                                       "name": "x"}
  got = recipes.parse_arg("b, smoke,epochs=8,width=1,name=y", **spec)
  assert (got.variant, got.smoke, got.epochs, got.width, got.name) == ("b", True, 8, 1.0, "y")
  assert isinstance(got.width, float) and recipes.parse_arg("smoke=false,variant=b", **spec).smoke is False
  for bad, problem in (("c", "unknown token 'c'"), ("a,b", "two tokens for variant ('a', 'b')"),
                       ("epochs=x", "expected epochs=<int>, got 'x'"), ("epochs", "unknown token 'epochs'"),
                       ("variant=c", "variant='c' is not one of a, b"),
                       ("smoke=2", "expected smoke or smoke=<true|false>")):
    with pytest.raises(ValueError) as e:
      recipes.parse_arg(bad, **spec)
    assert str(e.value).startswith(f"Bad config argument {bad!r}: {problem}") and str(e.value).endswith(
        "Valid tokens (comma-separated): one variant of a, b; smoke; epochs=<int>; width=<float>; name=<str>.")


def test_quickstart_variants_mean_what_they_mean_in_every_file():
  """One variant name, one meaning: the quickstart's variants set what the recipe files' set."""
  vgg = config_module("cifar100_vgg")
  for variant in recipes.VARIANTS:
    a, b = recipes.quickstart(variant), vgg.get_config(variant)
    for key in ("model.name", "teacher.name", "teacher.weights", "distill.method", "distill.svd_grad",
                "distill.loss_scale", "distill.teacher_images", "distill.mechanism"):
      assert flat_values(a)[key] == flat_values(b)[key], (variant, key)
  default = recipes.quickstart().distill
  assert (default.method, default.svd_grad, default.loss_scale) == ("kd_svd", "exact", "mean")
  assert config_lib.default().distill.loss_scale == "mean" and inspect.signature(distill.kd_svd).parameters[
      "loss_scale"].default == "mean"  # one default: the config's and the Python API's


def _committed_runs():
  """(workdir, argv) of the committed table runs: each run.log's last command."""
  for log in sorted((ROOT / "experiments" / "results").glob("*_runs/*/*/seed*/run.log")):
    if (log.parent / "config.json").is_file() and "probe" not in log.parts[-5]:
      commands = [line[2:].strip() for line in log.read_text().splitlines() if line.startswith("$ ")]
      yield log.parent, shlex.split(commands[-1])


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # ml_collections' config file loader
def test_committed_runs_resume_under_today_s_configs():
  """Each committed table run's command builds, with today's config files and value names, the config of the same
  run (workdir.config_changes finds nothing), so rerunning the table resumes or skips it."""
  checked = 0
  for run, argv in _committed_runs():
    argv = ["main"] + [a for a in argv if a.startswith("--config")]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=fv, sys_argv=argv, lock_config=True)
    fv(argv)
    config = config_lib.canonical(fv.config)
    run_config.validate_run(config)
    new = json.loads(config.to_json_best_effort())
    assert workdir.config_changes(workdir.read_config(str(run)), new, run_config.unread_keys) == [], run
    checked += 1
  assert checked >= 90


def test_package_runs_without_the_source_tree(tmp_path):
  """A copy of the package alone (as a non-editable install has it) loads a config file by absolute path, builds
  the quickstart's config and checks configs: nothing is read from the repository."""
  shutil.copytree(ROOT / "svdkd_jax", tmp_path / "site" / "svdkd_jax", ignore=shutil.ignore_patterns("__pycache__"))
  script = (
      "import svdkd_jax, json, sys\n"
      "from svdkd_jax import config, config_files, recipes, workdir\n"
      "import svdkd_jax.quickstart\n"
      "c = config_files.get_config(sys.argv[1])\n"
      "config.validate(c)\n"
      "config.validate(recipes.quickstart('teacher'))\n"
      "workdir.prepare(c, sys.argv[2])\n"
      "workdir.prepare(c, sys.argv[2])  # compares with the schema's defaults\n"
      "print(json.dumps([svdkd_jax.__file__, c.model.name, c.data.source]))\n")
  env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
  proc = subprocess.run([sys.executable, "-c", script, f"{CONFIGS / 'cifar100_vgg.py'}:student,smoke",
                         str(tmp_path / "run")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  where, model, source = json.loads(proc.stdout.strip().splitlines()[-1])
  assert where.startswith(str(tmp_path / "site")) and (model, source) == ("vgg_student", "digits")


# --- the Colab notebook ---


def test_notebook_is_valid_and_names_existing_configs_variants_and_modules():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert nb.nbformat == 4
  code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
  config, student = re.search(r'^CONFIG, STUDENT = "([^"]+)", "(\w+)"', code, re.M).groups()
  assert (ROOT / config).is_file()
  assert set(re.findall(r"--config=\{CONFIG\}:\{?(\w+)", code)) == {"teacher", "STUDENT"}
  for v in ("teacher", student):
    load(ROOT / config).get_config(v)
  text = code + "\n".join(cell.source for cell in nb.cells)
  for path in set(re.findall(r"configs/\w+\.py", text)):
    assert (ROOT / path).is_file(), path
  modules = set(re.findall(r"-m ([\w.]+)", code))
  assert modules == {"svdkd_jax.main"}
  for module in modules:
    assert importlib.util.find_spec(module) is not None, module
  assert "--config.teacher.workdir={TEACHER_DIR}" in code and '"--config.data.data_dir={DATA_DIR}"' in code
  assert "tfds build cifar100" in code and "metrics.jsonl" in code


# --- experiments/run_table.py (with a stand-in trainer: the real one is tested in test_train.py) ---


@pytest.fixture(scope="module")
def run_table():
  return load(ROOT / "experiments" / "run_table.py")


def fake_trainer(log, fail=()):
  def runner(run, overrides):
    log.append((run.variant, run.seed, run.workdir, run.teacher_workdir, tuple(overrides)))
    if run.variant in fail:
      return 1
    os.makedirs(os.path.join(run.workdir, "checkpoints"), exist_ok=True)
    acc = 0.5 + 0.01 * run.seed
    with open(os.path.join(run.workdir, "summary.json"), "w") as f:
      json.dump({"complete": True, "best_eval_accuracy": acc, "last_eval_accuracy": acc - 0.01}, f)
    return 0
  return runner


def test_runner_trains_teacher_first_then_skips_what_is_complete(run_table, tmp_path):
  spec = f"{CONFIGS / 'crd_benchmark.py'}:vgg13"
  runs = run_table.plan(spec, str(tmp_path), variants=["student", "kd_svd"], seeds=[0, 1])
  assert [(r.variant, r.seed) for r in runs] == [("teacher", 0), ("student", 0), ("kd_svd", 0), ("student", 1),
                                                  ("kd_svd", 1)]
  teacher_dir = str(tmp_path / "crd_benchmark_vgg13" / "teacher" / "seed0")
  assert runs[0].workdir == teacher_dir and all(r.teacher_workdir == teacher_dir for r in runs[1:])
  assert runs[2].workdir == str(tmp_path / "crd_benchmark_vgg13" / "kd_svd" / "seed0")
  cmd = run_table.main_command(runs[2], ["train.epochs=2"])
  assert cmd[1:3] == ["-m", "svdkd_jax.main"] and f"--config={spec.split(':')[0]}:vgg13,kd_svd" in cmd
  assert f"--config.teacher.workdir={teacher_dir}" in cmd and "--config.seed=0" in cmd
  assert "--config.train.epochs=2" in cmd

  log, lines = [], []
  # A failing teacher: its students are not trained, and say why.
  failed = run_table.run_table(runs, runner=fake_trainer(log, fail={"teacher"}), echo=lines.append)
  assert failed == runs and len(log) == 1 and "not complete" in lines[-1]
  # Rerun: everything trains once, teacher first; an incomplete student (no summary) is rerun next time.
  log.clear()
  assert run_table.run_table(runs, runner=fake_trainer(log, fail={"kd_svd"}), echo=lines.append) == runs[2::2]
  assert [x[0] for x in log] == ["teacher", "student", "kd_svd", "student", "kd_svd"]
  log.clear()
  assert run_table.run_table(runs, runner=fake_trainer(log), echo=lines.append) == []
  assert [x[:2] for x in log] == [("kd_svd", 0), ("kd_svd", 1)]
  assert sum("skipped" in line for line in lines[-5:]) == 3
  summary = run_table.table_summary(runs)
  assert len(summary) == 3 and "2/2 runs" in summary[1] and "best 50.50 +- 0.71" in summary[1]
  assert summary[1].split()[1] == "student" and summary[2].split()[1] == "kd_svd"
  # A teacher whose summary is complete but whose checkpoints are gone (e.g. a fresh clone) is trained again.
  os.rmdir(os.path.join(teacher_dir, "checkpoints"))
  log.clear()
  assert run_table.run_table(runs, runner=fake_trainer(log), echo=lines.append) == []
  assert [x[0] for x in log] == ["teacher"]


def test_runner_cli_dry_run_and_errors(run_table, tmp_path, capsys):
  assert run_table.main(["--config", str(CONFIGS / "cpu_cifar10.py"), "--root", str(tmp_path), "--dry_run"]) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert len(out) == 1 + 6 * 3 and ":teacher" in out[0] and "kd_svd_exact" in out[-1]
  with pytest.raises(SystemExit):
    run_table.main(["--config", str(CONFIGS / "cpu_cifar10.py"), "--root", str(tmp_path), "--variants", "bogus"])
  assert "kd_svd_sskd_code" in capsys.readouterr().err


def test_notebook_plot_cell_reads_metrics_jsonl(tmp_path):
  """Runs the notebook's last code cell on workdirs holding metrics.jsonl rows as the trainer writes them."""
  import matplotlib  # in the test extra
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  nb = nbformat.read(NOTEBOOK, as_version=4)
  cell = [c.source for c in nb.cells if c.cell_type == "code"][-1]
  dirs = {}
  for name in ("teacher", "student"):
    d = tmp_path / name
    d.mkdir()
    rows = [{"step": 10, "epoch": 0, "loss": 2.0}, {"step": 10, "epoch": 0, "eval_accuracy": 0.25},
            {"step": 20, "epoch": 1, "eval_accuracy": 0.5}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 25, "ev')  # killed
    (d / "summary.json").write_text(json.dumps({"complete": True}))
    dirs[name] = str(d)
  plt.close("all")
  scope = {"TEACHER_DIR": dirs["teacher"], "STUDENT_DIR": dirs["student"]}
  exec(compile(cell, "colab_tpu.ipynb", "exec"), scope)
  lines = plt.gca().get_lines()
  assert [list(line.get_ydata()) for line in lines] == [[25.0, 50.0], [25.0, 50.0]]
  assert list(lines[0].get_xdata()) == [1, 2]
  plt.close("all")


def test_dry_run_prints_the_pinned_teacher_checkpoint(run_table, tmp_path):
  teacher = tmp_path / "teacher"
  teacher.mkdir()
  (teacher / "summary.json").write_text(json.dumps({"complete": True, "step": 3120}))
  runs = run_table.plan(f"{CONFIGS / 'regime_cifar10.py'}", str(tmp_path), variants=["kd_svd_exact_mean"], seeds=[0],
                        teacher_workdir=str(teacher))
  for checkpoint, want in (("last", f"--config.teacher.checkpoint={teacher}/checkpoints/3120"), ("best", None)):
    lines = []
    assert run_table.run_table(runs, dry_run=True, echo=lines.append, teacher_checkpoint=checkpoint) == []
    assert len(lines) == 1 and f"--config.teacher.workdir={teacher}" in lines[0]
    assert (want in lines[0].split()) if want else "--config.teacher.checkpoint" not in lines[0]
