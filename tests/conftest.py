"""Shared fixtures, one per artifact: the AG News CSV from ../shared, one tiny trained run,
its export (written by the training command), that export's version directory, the run's
held-out evaluation, a second export of the run (other serving defaults), a random model
that never ends a text exported plain and with --xla, and the C and Go clients built from
export/. Each is made once per session: training, exporting and
starting TensorFlow are what the slow tests spend. Plain helpers and constants are in
tests/helpers.py.

A test that uses a fixture in SLOW_FIXTURES (it trains, exports or builds) must be marked
``@pytest.mark.slow``: collection stops with an error naming any test that is not, so the
fast layer (``pytest -m "not slow"``) never trains. Tests that spawn processes themselves
are marked by hand.

What the selected tests need is started in the background as soon as they are collected
(the training, the random model's exports, the client builds) or as soon as it can be (the held-out evaluation and the
second export, once the training is done), and the fast tests run first: the in-process
tests run beside those commands, whose fixtures wait for them.
"""

import json
import os
import pathlib
import shutil
import sys
import tempfile

import pytest
from helpers import (
    C_DIR,
    DATA,
    GO_DIR,
    HELDOUT,
    NEVER_ENDING_EXPORT,
    ROOT,
    TINY_SERVING_DEFAULTS,
    TRAIN,
    Background,
    cli_command,
    cli_env,
    skip_or_fail,
)

from tfchargen.savedmodel.locate import versions

# Fixture name -> why a test using it is slow.
SLOW_FIXTURES = {"tiny_run": "trains a model", "never_ending_model": "exports a model",
                 "never_ending_xla": "exports a model", "c_client": "builds export/c", "go_client": "builds export/go"}


def _order(item):
    """Fast tests first, then slow ones that do without the tiny run, then the rest, each
    group in collection order: the tiny run trains in the background meanwhile."""
    if item.get_closest_marker("slow") is None:
        return 0
    return 2 if "tiny_run" in item.fixturenames else 1


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    unmarked = []
    for item in items:
        uses = [f"{name} {why}" for name, why in SLOW_FIXTURES.items() if name in item.fixturenames]
        if uses and item.get_closest_marker("slow") is None:
            unmarked.append(f"{item.nodeid} ({', '.join(uses)})")
    if unmarked:
        raise pytest.UsageError("mark these tests @pytest.mark.slow:\n  " + "\n  ".join(unmarked))
    items.sort(key=_order)  # stable: collection order within each group


@pytest.fixture(scope="session")
def data_path():
    if not DATA.exists():
        skip_or_fail(f"AG News CSV not found at {DATA}: put ag_news_csv/test.csv under ../shared/data/ "
                     "next to the repository (CI=true makes this a failure)")
    return DATA


# -- commands started in the background --------------------------------------------------------
# The native clients' builds: (directory, timeout in seconds) by fixture name.
BUILDS = {"c_client": (C_DIR, 300), "go_client": (GO_DIR, 600)}
_jobs = {}  # name -> Background: the builds, the tiny run and what follows it
_needed = set()  # fixture names some selected test uses
_scratch = tempfile.mkdtemp(prefix="tfchargen-tests-")  # the tiny run and its second export; removed at the end
TINY_RUN = os.path.join(_scratch, "runs", "tiny")
TINY_V2_BASE = os.path.join(_scratch, "v2", "chargen")
# A random model that never ends a text, exported plain and with --xla (no training needed).
NEVER_ENDING = {"never_ending_model": (), "never_ending_xla": ("--xla",)}


def _make_command(directory, *targets):
    return ["make", "-C", str(directory), f"PYTHON={sys.executable}", *targets]


def _never_ending_job(name):
    root = os.path.join(_scratch, name)
    return Background([sys.executable, "-c", NEVER_ENDING_EXPORT, os.path.join(root, "run"),
                       os.path.join(root, "chargen"), *NEVER_ENDING[name]],
                      env=cli_env({"PYTHONPATH": os.pathsep.join(  # helpers, and this checkout's tfchargen
                          filter(None, [str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH")]))}))


def _train_command():
    """A tiny LSTM trained for 2 x 100 steps on rows 1-6000 through the real CLI, which
    exports it at the end."""
    return cli_command("train", "--preset", "tiny", "--run-dir", TINY_RUN, "--train-data", TRAIN,
                       "--eval-data", HELDOUT, "--seed", 3, "--sample-every", 0, *TINY_SERVING_DEFAULTS)


def pytest_collection_finish(session):
    """Starts what the selected tests need in the background: each client's `make` and the
    tiny run's training; its fixture waits for it."""
    if session.config.option.collectonly:
        return
    for item in session.items:
        # A fixture by name, or a parametrized one that looks the client up by a parameter
        # ("c" -> c_client, as tests/test_native_clients.py's `client` does).
        params = getattr(getattr(item, "callspec", None), "params", {})
        _needed.update(item.fixturenames)
        _needed.update(f"{v}_client" for v in params.values() if isinstance(v, str))
    for name in sorted(set(BUILDS) & _needed):
        if name == "go_client" and shutil.which("go") is None:
            continue  # the fixture skips or fails with the reason
        _jobs[name] = Background(_make_command(BUILDS[name][0]))
    if "tiny_run" in _needed and DATA.exists():  # else data_path skips or fails
        _jobs["tiny_run"] = Background(_train_command(), env=cli_env())
    for name in sorted(set(NEVER_ENDING) & _needed):
        _jobs[name] = _never_ending_job(name)


def pytest_sessionfinish(session):
    for job in _jobs.values():  # ends a job no test waited for
        job.kill()
    shutil.rmtree(_scratch, ignore_errors=True)


def _wait(name, timeout, what):
    """The CompletedProcess of background job ``name``; fails with its output if it failed."""
    r = _jobs[name].wait(timeout)
    if r.returncode != 0:
        pytest.fail(f"{what} failed (exit {r.returncode}):\n{(r.stdout + r.stderr)[-6000:]}")
    return r


# -- the tiny run and its exports ---------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_run(data_path):
    """A tiny LSTM trained for 2 x 100 steps on rows 1-6000 through the real CLI, which
    exports it at the end (``tiny_model``). Started in the background at collection."""
    if "tiny_run" not in _jobs:  # selected after collection (e.g. getfixturevalue)
        _jobs["tiny_run"] = Background(_train_command(), env=cli_env())
    _wait("tiny_run", 900, "tfchargen train (the tiny run)")
    run_dir = pathlib.Path(TINY_RUN)
    # What tests take from the finished run, started at once (each waits in its fixture).
    if "tiny_run_heldout" in _needed:
        _jobs["tiny_run_heldout"] = Background(cli_command("evaluate", "--run-dir", run_dir, "--data", HELDOUT),
                                               env=cli_env())
    if "tiny_model_v2" in _needed:
        _jobs["tiny_model_v2"] = Background(cli_command("export", "--run-dir", run_dir, "--export-base", TINY_V2_BASE,
                                                        "--default-max-length", 3, "--default-temperature", 0),
                                            env=cli_env())
    return run_dir


@pytest.fixture(scope="session")
def tiny_model(tiny_run):
    """The export base `tfchargen train` wrote for the tiny run (RUN_DIR/export, version 1
    inside), written in the training process after training, as users get it.

    Greedy, 12-character serving defaults. Tests only read it; one that adds versions takes
    ``tiny_model_copy``."""
    base = tiny_run / "export"
    assert versions(str(base)) == [1], sorted(os.listdir(base))
    return base


@pytest.fixture(scope="session")
def tiny_run_heldout(tiny_run):
    """`tfchargen evaluate --run-dir` of the tiny run on the held-out rows: its JSON line."""
    if "tiny_run_heldout" not in _jobs:
        _jobs["tiny_run_heldout"] = Background(cli_command("evaluate", "--run-dir", tiny_run, "--data", HELDOUT),
                                               env=cli_env())
    r = _wait("tiny_run_heldout", 600, "tfchargen evaluate --run-dir (the tiny run)")
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def tiny_model_v2(tiny_run):
    """A second `tfchargen export` of the tiny run, made in the background once it trained:
    other serving defaults (greedy, 3 characters). Its version directory (``.../1``); tests
    copy it, never change it."""
    if "tiny_model_v2" not in _jobs:
        _jobs["tiny_model_v2"] = Background(cli_command("export", "--run-dir", tiny_run, "--export-base", TINY_V2_BASE,
                                                        "--default-max-length", 3, "--default-temperature", 0),
                                            env=cli_env())
    _wait("tiny_model_v2", 600, "tfchargen export (the tiny run's second export)")
    assert versions(TINY_V2_BASE) == [1], sorted(os.listdir(TINY_V2_BASE))
    return pathlib.Path(TINY_V2_BASE) / "1"


@pytest.fixture(scope="session")
def version_dir(tiny_model):
    """tiny_model's only version: the SavedModel directory itself."""
    return tiny_model / "1"


@pytest.fixture(scope="session")
def tiny_loaded(version_dir):
    """tf.saved_model.load of tiny_model's version, once per process: the one the fuzz and
    soak tests' fuzz_signatures.Model holds. Tests call its signatures (read only)."""
    import fuzz_signatures as fz  # tests/fuzz, on pytest's pythonpath

    return fz.Model.cached(str(version_dir)).loaded


@pytest.fixture()
def tiny_model_copy(tiny_model, tmp_path):
    """A private copy of tiny_model's export base, for a test that adds or removes versions."""
    copy = tmp_path / "models" / "chargen"
    shutil.copytree(tiny_model, copy)
    return copy


# -- a random model that never ends a text -----------------------------------------------------
def _never_ending(name):
    if name not in _jobs:
        _jobs[name] = _never_ending_job(name)
    _wait(name, 900, f"the random model's export ({name})")
    base = pathlib.Path(_scratch) / name / "chargen"
    assert versions(str(base)) == [1], sorted(os.listdir(base))
    return base


@pytest.fixture(scope="session")
def never_ending_model():
    """The export base (version 1 inside) of a random-weight LSTM(16) whose <eos> bias is -30:
    every row runs to its max_length. Written by `tfchargen export` in the background from
    collection on; ``helpers.random_model(dir, eos_bias=-30.0)`` has the same weights. Tests
    only read it (or copy it)."""
    return _never_ending("never_ending_model")


@pytest.fixture(scope="session")
def never_ending_xla(never_ending_model):
    """The same model exported with ``--xla`` (jit_compile): its export base."""
    return _never_ending("never_ending_xla")


# -- the native clients -------------------------------------------------------------------------
def _make(name):
    """Waits for the client's background `make` (or runs it now if none was started); fails
    with make's output if it failed."""
    directory, timeout = BUILDS[name]
    if name not in _jobs:
        _jobs[name] = Background(_make_command(directory))
    _wait(name, timeout, f"make -C {directory}")


@pytest.fixture(scope="session")
def c_client():
    """export/c's tfchargen-c, built with its documented `make`."""
    _make("c_client")
    binary = C_DIR / "tfchargen-c"
    assert binary.exists()
    return binary


@pytest.fixture(scope="session")
def go_client():
    """export/go's tfchargen-go, built with its documented `make` (needs a Go toolchain)."""
    if shutil.which("go") is None:
        skip_or_fail("no Go toolchain (apt-get install golang-go); .ci/run installs it")
    _make("go_client")
    binary = GO_DIR / "tfchargen-go"
    assert binary.exists()
    return binary
