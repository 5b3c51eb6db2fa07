"""docs/developing.md stays true: its module table is the package's import graph, and its worked examples run.

Each example is read from the guide (the fenced block after `<!-- example: NAME -->`) and executed where the guide
puts it: the method in distill's namespace, its registry entry and schema key as the guide's edits would add them
(undone by monkeypatch), then two training steps with it on the tiny problem (tests/conftest.py; `slow`: the
first run of the trainer in a process takes 10-25 s on 2 cores). The network, the data source's loader and the
config file run the same way, traced or on a few arrays.
"""

import ast
import pathlib
import re
import textwrap
import types

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svdkd_jax import config as config_lib
from svdkd_jax import config_files
from svdkd_jax import distill
from svdkd_jax import metrics as metrics_lib
from svdkd_jax import models
from svdkd_jax import recipes
from svdkd_jax import run_config
from svdkd_jax import train
from svdkd_jax import workdir
from svdkd_jax.data import sources

ROOT = pathlib.Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "developing.md"
PACKAGE = ROOT / "svdkd_jax"
EXAMPLE_FILES = {"svdkd_jax/models/small_cnn.py", "configs/cifar10_resnet.py"}  # what the examples create


def example(name: str) -> str:
  """The code block of the guide marked `<!-- example: name -->`."""
  found = re.search(rf"<!-- example: {re.escape(name)} -->\n```python\n(.*?)```", GUIDE.read_text(), re.S)
  assert found, f"docs/developing.md has no example {name!r}"
  return found.group(1)


def section(title: str) -> str:
  text = GUIDE.read_text()
  start = text.index(f"\n## {title}")
  end = text.find("\n## ", start + 1)
  return text[start:end if end > 0 else None]


# --- the module table ---


def import_graph() -> dict[str, set[str]]:
  """{module: the package modules it imports}: modules of svdkd_jax by name, the subpackages `models` and `data`
  as one node each (imports inside one are not counted); imports anywhere in a file, in functions too. Imports of
  the source tree's folders (configs, experiments, tests) appear under their folder's name."""
  graph = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE).parts
    node = parts[0] if len(parts) > 1 else path.stem
    if node == "__init__":
      continue
    imported = set()
    for stmt in ast.walk(ast.parse(path.read_text())):
      if isinstance(stmt, ast.Import):
        names = [alias.name for alias in stmt.names]
      elif isinstance(stmt, ast.ImportFrom):
        assert stmt.level == 0, f"{path}: relative import"
        names = [f"{stmt.module}.{alias.name}" for alias in stmt.names]
      else:
        continue
      for name in names:
        top, *rest = name.split(".")
        if top == "svdkd_jax" and rest:
          imported.add(rest[0])
        elif top in ("configs", "experiments", "tests"):
          imported.add(top)
    graph.setdefault(node, set()).update(imported - {node})
  return graph


def documented_graph() -> dict[str, set[str]]:
  """{module: imports} of the guide's table ("Layers"): first cell the module, last cell its imports."""
  rows = {}
  for line in section("Layers").splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if not line.startswith("| `") or len(cells) != 3:
      continue
    module = cells[0].strip("`").removesuffix(".py").removesuffix("/")
    rows[module] = set(re.findall(r"`(\w+)`", cells[2]))
  return rows


def test_module_table_is_the_import_graph():
  actual, documented = import_graph(), documented_graph()
  assert set(documented) == set(actual), ("docs/developing.md's module table (Layers) lacks or has extra modules",
                                          set(documented) ^ set(actual))
  for module in sorted(actual):
    assert documented[module] == actual[module], (
        f"docs/developing.md's row for {module!r} is out of date: it imports {sorted(actual[module])}")


def test_import_rules():
  graph = import_graph()
  assert graph["config"] == set()  # the schema is a leaf: config files and the command line load it without JAX
  assert graph["svd"] <= {"eig"} and graph["eig"] <= {"svd"}
  assert {m for m, deps in graph.items() if "train" in deps} <= {"main", "quickstart"}
  assert not [m for m, deps in graph.items() if deps & {"main", "quickstart", "configs", "experiments", "tests"}]
  for entry in ("main", "quickstart"):  # the trainer only inside main(): the flags set JAX_* before jax starts
    tree = ast.parse((PACKAGE / f"{entry}.py").read_text())
    top = {f"{s.module}.{a.name}" for s in tree.body if isinstance(s, ast.ImportFrom) for a in s.names}
    assert "svdkd_jax.train" not in top, entry
  # No cycle: lower layers never import higher ones.
  done, graph = set(), dict(graph)
  while graph:
    ready = [m for m, deps in graph.items() if deps <= done]
    assert ready, f"import cycle among {sorted(graph)}"
    done.update(ready)
    for m in ready:
      del graph[m]


def test_guide_names_files_and_tests_that_exist():
  text = GUIDE.read_text()
  paths = set(re.findall(r"`((?:svdkd_jax|experiments|tests|configs|docs)/[\w/.-]+?)(?:::\w+)?`", text))
  missing = [p for p in sorted(paths - EXAMPLE_FILES) if not (ROOT / p).exists()]
  assert not missing and len(paths) >= 10, missing
  tests = set(re.findall(r"`(?:[\w/.]+::)?(test_\w+)`", text))
  defined = set(re.findall(r"^def (test_\w+)", "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py")),
                           re.M))
  assert tests and tests <= defined, tests - defined
  assert "(developing.md)" in (ROOT / "docs" / "README.md").read_text()


# --- add a distillation method ---


@pytest.fixture
def nst(monkeypatch):
  """The guide's method in distill, its registry entry and its option in the schema, as the guide's edits add them;
  monkeypatch undoes all three. Returns the namespace the method was defined in."""
  monkeypatch.setattr(distill, "_REGISTRY", dict(distill._REGISTRY))
  namespace = dict(vars(distill))
  exec(example("method"), namespace)  # pylint: disable=exec-used
  distill._REGISTRY.update(eval("{" + example("method-entry") + "}", namespace))  # pylint: disable=eval-used
  schema = config_lib.default

  def default():
    config = schema()
    with config.unlocked():
      exec(textwrap.dedent(example("method-option")), {"distill": config.distill})  # pylint: disable=exec-used
    return config

  monkeypatch.setattr(config_lib, "default", default)
  assert '`"distill.nst_degree"` added to `INTEGERS` and\n`POSITIVE`' in GUIDE.read_text()
  monkeypatch.setattr(config_lib, "INTEGERS", config_lib.INTEGERS + ("distill.nst_degree",))
  monkeypatch.setattr(config_lib, "POSITIVE", config_lib.POSITIVE + ("distill.nst_degree",))
  return namespace


def test_guide_method_matches_numpy_and_spares_the_teacher(nst):
  rng = np.random.default_rng(0)
  student = [rng.normal(size=(3, 4, 4, 5)), rng.normal(size=(3, 2, 2, 6))]
  teacher = [rng.normal(size=(3, 4, 4, 7)), rng.normal(size=(3, 2, 2, 2))]  # channels may differ

  def reference(s, t, d):
    """Per image: the squared MMD of the two sets of normalised channel maps, by loops over channel pairs."""
    total = 0.0
    for b in range(len(s)):
      f_s, f_t = ([x[b, :, :, c].ravel() / np.linalg.norm(x[b, :, :, c]) for c in range(x.shape[-1])] for x in (s, t))
      k = lambda xs, ys: np.mean([(x @ y) ** d for x in xs for y in ys])  # noqa: E731
      total += k(f_s, f_s) + k(f_t, f_t) - 2 * k(f_s, f_t)
    return total / len(s)

  fn = distill.get("nst", nst_degree=3)
  loss, aux = fn([jnp.asarray(x, jnp.float32) for x in student], [jnp.asarray(x, jnp.float32) for x in teacher],
                 None, None)
  expected = [reference(s, t, 3) for s, t in zip(student, teacher)]
  np.testing.assert_allclose([float(aux["tap_0"]), float(aux["tap_1"])], expected, rtol=1e-5)
  np.testing.assert_allclose(float(loss), sum(expected), rtol=1e-5)
  grad_s, grad_t = jax.grad(lambda s, t: fn(s, t, None, None)[0], argnums=(0, 1))(
      [jnp.asarray(x, jnp.float32) for x in student], [jnp.asarray(x, jnp.float32) for x in teacher])
  assert all(np.all(np.asarray(g) == 0) for g in grad_t) and max(float(jnp.abs(g).max()) for g in grad_s) > 0
  assert distill.option_names("kd_svd+nst")[-1] == "nst_degree"
  with pytest.raises(ValueError, match="nst_degree must be a positive integer"):
    distill.get("nst", nst_degree=0)


def test_guide_method_option_is_checked_before_the_workdir_is_touched(nst, tiny_config, tmp_path):
  bad = tiny_config("student", distill__method="nst", teacher__weights="random", distill__nst_degree=0)
  with pytest.raises(ValueError, match=r"^config.distill.nst_degree=0 must be > 0.$"):
    train.train_and_evaluate(bad, str(tmp_path / "bad"))
  bad = tiny_config("student", distill__nst_degree=3)  # the option of a method the run does not use
  with pytest.raises(ValueError, match=r"^config.distill.nst_degree=3 is not read by distill.method='none'"):
    train.train_and_evaluate(bad, str(tmp_path / "bad"))
  assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_guide_method_trains_two_steps(nst, tiny_config, tmp_path):
  """The guide's method, registered as it shows, trains two steps through train_and_evaluate: the student learns
  from its loss, and its aux is logged."""
  config = tiny_config("student", distill__method="nst", teacher__weights="random", distill__nst_degree=3,
                       train__max_steps=2, data__augment="none")  # (the augmentation's compile would double the time)
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["step"] == 2 and not summary["complete"] and summary["distill"] == "nst"
  rows = [r for r in metrics_lib.read_jsonl(tmp_path / "run" / metrics_lib.METRICS_FILE) if "loss" in r]
  last = rows[-1]
  assert last["dist_loss"] > 0 and last["grad_norm_dist"] > 0 and last["grad_norm_main"] > 0
  assert {f"dist/tap_{l}" for l in range(4)} <= set(last)
  assert workdir.read_config(str(tmp_path / "run"))["distill"]["nst_degree"] == 3


# --- add a network, a data source, a config ---


def test_guide_network_builds_a_pair_with_equal_taps(monkeypatch):
  module = types.ModuleType("small_cnn")
  exec(example("network"), module.__dict__)  # pylint: disable=exec-used
  namespace = {"Entry": models.Entry, "small_cnn": module}
  entries = eval("{" + example("network-entries") + "}", namespace)  # pylint: disable=eval-used
  for name, entry in entries.items():
    monkeypatch.setitem(models._REGISTRY, name, entry)
  for pair, names in eval("{" + example("network-pair") + "}").items():  # pylint: disable=eval-used
    monkeypatch.setitem(models.PAIRS, pair, names)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  for name in models.PAIRS["small_cnn"]:
    for train_mode in (True, False):  # networks start in train mode
      def forward(x, name=name, train_mode=train_mode):
        model = models.create(name, 10, rngs=nnx.Rngs(0), width=0.25)
        model.train() if train_mode else model.eval()  # pylint: disable=expression-not-assigned
        return model(x)
      logits, taps = jax.eval_shape(forward, x)  # traced, not run
      assert logits.shape == (2, 10) and [t.shape for t in taps] == [(2, 16, 16, 8), (2, 8, 8, 16), (2, 4, 4, 32)]
    assert models.options(name) == () and not models.takes_rngs(name)
  config = recipes.apply_variant(recipes.quickstart(), recipes.parse_variant("kd_svd_exact"), pair="small_cnn",
                                 init_epochs=1)
  config.teacher.weights = "random"
  run_config.validate_run(config)
  assert (config.teacher.name, config.model.name) == ("small_cnn_teacher", "small_cnn_student")


def test_guide_source_loads_arrays(tmp_path):
  namespace = dict(vars(sources))
  exec(example("source"), namespace)  # pylint: disable=exec-used
  images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
  np.savez(tmp_path / "train.npz", images=images, labels=np.array([0, 1, 2, 0, 1, 2]))
  source, num_classes = namespace["load_arrays"](str(tmp_path), "train", 16)
  batch = source.gather(np.array([4, 1]))
  assert num_classes == 3 and len(source) == 6
  assert batch["image"].shape == (2, 16, 16, 3) and batch["label"].tolist() == [1, 1]
  with pytest.raises(FileNotFoundError, match="No split 'test'"):
    namespace["load_arrays"](str(tmp_path), "test")


def test_guide_config_builds_valid_runs(tmp_path):
  path = tmp_path / "cifar10_resnet.py"
  path.write_text(example("config"))
  teacher = config_files.get_config(f"{path}:teacher")
  run_config.validate_run(teacher)
  assert (teacher.model.name, teacher.data.source, teacher.data.name, teacher.data.num_classes) == (
      "resnet56", "tfds", "cifar10", 10)
  student = config_files.get_config(f"{path}:kd_svd_exact,epochs=100")
  student.teacher.workdir = "runs/c10/teacher"
  run_config.validate_run(student)
  assert (student.model.name, student.distill.svd_grad, student.train.epochs, tuple(student.optim.boundaries)) == (
      "resnet20", "exact", 100, (50, 75))
  smoke = config_files.get_config(f"{path}:student,smoke")
  run_config.validate_run(smoke)
  assert smoke.data.source == "digits" and smoke.is_locked
