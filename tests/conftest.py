"""Shared fixtures, one per artifact: the AG News CSV from ../shared, one tiny trained run,
its export, that export's version directory, and the C and Go clients built from export/.

A test that uses a fixture in SLOW_FIXTURES (it trains, exports or builds) must be marked
``@pytest.mark.slow``: collection stops with an error naming any test that is not, so the
fast layer (``pytest -m "not slow"``) never trains. Tests that spawn processes themselves
are marked by hand.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "ag_news_csv" / "test.csv").resolve()
TRAIN = f"csv:{DATA}[:6000]"
HELDOUT = f"csv:{DATA}[6000:]"
C_DIR = ROOT / "export" / "c"
GO_DIR = ROOT / "export" / "go"

# CI (.ci/run sets CI=true) fails where a developer's checkout skips: missing data, no Go.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Fixture name -> why a test using it is slow.
SLOW_FIXTURES = {"tiny_run": "trains a model", "c_client": "builds export/c", "go_client": "builds export/go"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    unmarked = []
    for item in items:
        uses = [f"{name} {why}" for name, why in SLOW_FIXTURES.items() if name in item.fixturenames]
        if uses and item.get_closest_marker("slow") is None:
            unmarked.append(f"{item.nodeid} ({', '.join(uses)})")
    if unmarked:
        raise pytest.UsageError("mark these tests @pytest.mark.slow:\n  " + "\n  ".join(unmarked))


def skip_or_fail(msg):
    """Fails under CI, where every test must run; skips with ``msg`` elsewhere."""
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def data_path():
    if not DATA.exists():
        skip_or_fail(f"AG News CSV not found at {DATA}: put ag_news_csv/test.csv under ../shared/data/ "
                     "next to the repository (CI=true makes this a failure)")
    return DATA


def run_cli(*args, timeout=600, env=None):
    """Runs `python -m tfchargen ARGS` in a fresh process; returns CompletedProcess."""
    e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, "-m", "tfchargen", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=e, cwd=ROOT)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_path):
    """A tiny LSTM trained for 2 x 100 steps on rows 1-6000 through the real CLI."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    r = run_cli("train", "--preset", "tiny", "--run-dir", run_dir, "--train-data", TRAIN,
                "--eval-data", HELDOUT, "--seed", 3, "--sample-every", 0)
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def tiny_model(tiny_run, tmp_path_factory):
    """The tiny run exported once through the real CLI; returns the export base (version 1 inside).

    Greedy, 12-character serving defaults. Tests only read it; one that adds versions takes
    ``tiny_model_copy``."""
    base = tmp_path_factory.mktemp("shared-models") / "chargen"
    r = run_cli("export", "--run-dir", tiny_run, "--export-base", base, "--default-max-length", 12,
                "--default-temperature", 0)
    assert r.returncode == 0, r.stderr[-3000:]
    return base


@pytest.fixture(scope="session")
def version_dir(tiny_model):
    """tiny_model's only version: the SavedModel directory itself."""
    return tiny_model / "1"


@pytest.fixture()
def tiny_model_copy(tiny_model, tmp_path):
    """A private copy of tiny_model's export base, for a test that adds or removes versions."""
    copy = tmp_path / "models" / "chargen"
    shutil.copytree(tiny_model, copy)
    return copy


def _make(directory, *targets, timeout=300):
    r = subprocess.run(["make", "-C", str(directory), f"PYTHON={sys.executable}", *targets], capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        pytest.fail(f"make -C {directory} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


@pytest.fixture(scope="session")
def c_client():
    """export/c's tfchargen-c, built with its documented `make`."""
    _make(C_DIR)
    binary = C_DIR / "tfchargen-c"
    assert binary.exists()
    return binary


@pytest.fixture(scope="session")
def go_client():
    """export/go's tfchargen-go, built with its documented `make` (needs a Go toolchain)."""
    if shutil.which("go") is None:
        skip_or_fail("no Go toolchain (apt-get install golang-go); .ci/run installs it")
    _make(GO_DIR, timeout=600)
    binary = GO_DIR / "tfchargen-go"
    assert binary.exists()
    return binary
