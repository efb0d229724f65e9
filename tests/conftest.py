"""Shared fixtures, one per artifact: the AG News CSV from ../shared, one tiny trained run,
its export (written by the training command), that export's version directory, the run's
held-out evaluation, and the C and Go clients built from export/. Each is made once per
session: training, exporting and starting TensorFlow are what the slow tests spend.

A test that uses a fixture in SLOW_FIXTURES (it trains, exports or builds) must be marked
``@pytest.mark.slow``: collection stops with an error naming any test that is not, so the
fast layer (``pytest -m "not slow"``) never trains. Tests that spawn processes themselves
are marked by hand.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from tfchargen.savedmodel.locate import versions

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


def cli_env(env=None):
    """The environment run_cli gives the command: ours, TensorFlow's C++ logging quieted."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))


def run_cli(*args, timeout=600, env=None):
    """Runs `python -m tfchargen ARGS` in a fresh process; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "tfchargen", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=cli_env(env), cwd=ROOT)


def run_together(*commands, timeout=600, env=None, cwd=ROOT):
    """Runs each command (an argv list) in a fresh process of its own, all of them at once;
    returns their CompletedProcess objects in order. Starting TensorFlow is most of a short
    command and runs on one core: independent commands started together use both.

    On a timeout every process is killed and the test fails (it never hangs)."""
    commands = [[os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in c] for c in commands]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
             for c in commands]
    results = []
    try:
        for c, p in zip(commands, procs):
            out, err = p.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(c, p.returncode, out, err))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        for p in procs:
            p.communicate()
        pytest.fail(f"commands did not finish within {timeout} s: {commands}")
    return results


def run_clis(*arg_lists, timeout=600, env=None):
    """run_cli for each argument list, all at once (see run_together); CompletedProcess list."""
    return run_together(*[[sys.executable, "-m", "tfchargen", *args] for args in arg_lists], timeout=timeout,
                        env=cli_env(env))


# The serving_default defaults of the tiny run's export: greedy, 12 new characters.
TINY_SERVING_DEFAULTS = ("--default-max-length", 12, "--default-temperature", 0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_path):
    """A tiny LSTM trained for 2 x 100 steps on rows 1-6000 through the real CLI, which
    exports it at the end (``tiny_model``)."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    r = run_cli("train", "--preset", "tiny", "--run-dir", run_dir, "--train-data", TRAIN,
                "--eval-data", HELDOUT, "--seed", 3, "--sample-every", 0, *TINY_SERVING_DEFAULTS)
    assert r.returncode == 0, r.stderr[-3000:]
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
    r = run_cli("evaluate", "--run-dir", tiny_run, "--data", HELDOUT)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


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


# The native clients' builds: (directory, timeout in seconds) by fixture name.
BUILDS = {"c_client": (C_DIR, 300), "go_client": (GO_DIR, 600)}
_started_builds = {}  # fixture name -> (Popen of its `make`, the file its output goes to)


def _make_command(directory, *targets):
    return ["make", "-C", str(directory), f"PYTHON={sys.executable}", *targets]


def pytest_collection_finish(session):
    """Starts `make` for each client a selected test needs, in the background: compiling
    runs beside the tests before the first one that uses the client, whose fixture waits."""
    if session.config.option.collectonly:
        return
    needed = set()
    for item in session.items:
        # A fixture by name, or a parametrized one that looks the client up by a parameter
        # ("c" -> c_client, as tests/test_native_clients.py's `client` does).
        params = getattr(getattr(item, "callspec", None), "params", {})
        needed |= {name for name in BUILDS if name in item.fixturenames
                   or name in {f"{v}_client" for v in params.values() if isinstance(v, str)}}
    for name in sorted(needed):
        if name == "go_client" and shutil.which("go") is None:
            continue  # the fixture skips or fails with the reason
        log = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(_make_command(BUILDS[name][0]), stdout=log, stderr=subprocess.STDOUT, text=True)
        _started_builds[name] = (proc, log)


def pytest_sessionfinish(session):
    for proc, log in _started_builds.values():  # a build no test waited for
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _make(name):
    """Waits for the client's background `make` (or runs it now if none was started); fails
    with make's output if it failed."""
    directory, timeout = BUILDS[name]
    if name not in _started_builds:
        r = subprocess.run(_make_command(directory), capture_output=True, text=True, timeout=timeout)
        output = r.stdout + r.stderr
    else:
        proc, log = _started_builds[name]
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"make -C {directory} did not finish within {timeout} s")
        log.seek(0)
        output, r = log.read(), proc
    if r.returncode != 0:
        pytest.fail(f"make -C {directory} failed:\n{output[-6000:]}")


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
