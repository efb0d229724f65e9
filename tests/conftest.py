"""Shared fixtures: the AG News CSV from ../shared and one tiny trained run."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "ag_news_csv" / "test.csv").resolve()
TRAIN = f"csv:{DATA}[:6000]"
HELDOUT = f"csv:{DATA}[6000:]"


@pytest.fixture(scope="session")
def data_path():
    if not DATA.exists():
        pytest.fail(f"AG News CSV not found at {DATA} (expected ../shared/data/ag_news_csv from the repo root)")
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
    """The tiny run exported once through the real CLI; returns the export base (version 1 inside)."""
    base = tmp_path_factory.mktemp("shared-models") / "chargen"
    r = run_cli("export", "--run-dir", tiny_run, "--export-base", base, "--default-max-length", 12,
                "--default-temperature", 0)
    assert r.returncode == 0, r.stderr[-3000:]
    return base
