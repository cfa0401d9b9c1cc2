"""Shared fixtures: the real digits-LT data, built once per test session."""

import warnings

import pytest

from jaxloss.data import load_digits_lt


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def digits(tfds_dir):
  """Default digits-LT (ρ = 25, 30 test images a class), as numpy arrays."""
  return load_digits_lt(data_dir=tfds_dir)


# The reference recipes' smoke runs, shared: each recipe's own test asserts on its run,
# and tests/recipes_multiprocess_test.py compares it with the same config on 2 processes.
# Host input on the 8 simulated devices (the path several processes take).
SMOKE_RUNS = {
    # recipe: (config file, overrides, the config field of the TFDS data dir)
    "absa": ("experiments/absa/configs/visfd_absa.py:smoke",
             {"ensemble_focal_weights": "0.7,0.8"}, "data_dir"),
    # A pretrained encoder (one multilingual-e5 layer), two members, length-grouped
    # batches: 32 reviews, 2 steps of 16 on 8 devices.
    "absa_e5": ("experiments/absa/configs/visfd_absa.py:e5_smoke",
                {"max_train_examples": 32, "max_eval_examples": 24}, "data_dir"),
    "nlu": ("experiments/nlu/configs/joint_nlu.py:smoke", {}, "tfds_data_dir"),
    "rerank": ("experiments/rerank/configs/rerank.py:smoke", {}, "tfds_data_dir"),
}


def smoke_settings(name, tfds_dir):
  """``(config file, {field: value})`` of a shared smoke run (also its command line)."""
  path, overrides, data_field = SMOKE_RUNS[name]
  return path, {**overrides, data_field: tfds_dir, "progress": False,
                "train_input": "host"}


@pytest.fixture(scope="session")
def smoke_run(tfds_dir, tmp_path_factory):
  """``smoke_run(name) -> (workdir, summary)``: the recipe's smoke run, trained once."""
  import importlib  # pylint: disable=g-import-not-at-top

  from experiments import recipes  # pylint: disable=g-import-not-at-top
  cache = {}

  def run(name):
    if name not in cache:
      path, settings = smoke_settings(name, tfds_dir)
      file, _, variant = path.partition(":")
      module = importlib.import_module(file[:-3].replace("/", "."))
      config = module.get_config(variant or None)
      for k, v in settings.items():
        config[k] = v
      workdir = str(tmp_path_factory.mktemp(f"smoke_{name}"))
      cache[name] = (workdir, recipes.run(config, workdir))
    return cache[name]
  return run


# With pytest-xdist (the README's `-n 2`), the tests that share a session fixture's
# expensive product run on one worker, so that it is built once: a recipe's smoke run
# and its prepared TFDS data (each worker has its own session, and tfds_dir).
_GROUPS = {
    "absa_test.py": "absa", "data/uit_visfd_test.py": "absa",
    "absa_encoder_test.py": "absa_e5",
    "nlu_test.py": "nlu", "data/joint_nlu_test.py": "nlu", "nlu_encoder_test.py": "nlu",
    "rerank_test.py": "rerank", "data/interactions_test.py": "rerank",
    "cifar_vsfc_test.py": "cifar", "data/cifar10_lt_test.py": "cifar",
    "data/uit_vsfc_test.py": "cifar",
    # Module-scoped fixtures that run a benchmark (25 s; MiniLM, 3-7 s): once, on one
    # worker.
    "tools/bench_losses_test.py": "bench_losses",
    "tools/bench_encoder_test.py": "bench_encoder",
}


# Tests of a minute or more in all (several processes, kills, the loop's many short
# runs), handed out right after the groups, so that the last minutes of a parallel run
# are its many short tests, which the two workers share evenly.
_LONG = ("recipes_multiprocess_test.py", "distributed_test.py", "tools/soak_test.py",
         "training/loop_test.py", "resume_test.py", "monitors/integration_test.py")


# tryfirst: pytest-xdist's worker reads the xdist_group marks in its own
# pytest_collection_modifyitems; this conftest is loaded before that plugin, so without
# tryfirst that hook ran first, saw no marks, and the groups were silently ignored.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
  order = {}
  for item in items:
    path = item.nodeid.split("::")[0].removeprefix("tests/")
    group = _GROUPS.get(path)
    if path == "recipes_multiprocess_test.py":
      name = item.callspec.params.get("name") if hasattr(item, "callspec") else None
      group = name if name in SMOKE_RUNS else None
    if group:
      item.add_marker(pytest.mark.xdist_group(group))
    order[item.nodeid] = 0 if group else 1 if path in _LONG else 2
  items.sort(key=lambda item: order[item.nodeid])  # stable: file order within each


def pytest_collection_finish(session):
  """Warns when pytest-xdist ignored the groups above (it marks a grouped test by
  appending ``@group`` to its node id, which pytest 9.2 no longer lets it change:
  pytest-dev/pytest-xdist#1386); the suite then builds each shared product on both
  workers, correct but slower."""
  if not session.config.getoption("loadgroup", default=False):
    return  # not an xdist worker of a --dist loadgroup run
  lost = [item.nodeid for item in session.items
          if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
  if lost:
    warnings.warn(f"pytest-xdist ignored the xdist_group of {len(lost)} tests (e.g. "
                  f"{lost[0]}): install pytest<9.2 as pyproject.toml says")
