"""What the benchmark scripts share: where the data and results are, what machine ran a
benchmark, the latest export version, and one way to write a result.

Run a benchmark as ``python benchmarks/NAME.py``: Python puts the script's directory on
sys.path, so ``import common`` finds this module (and ``tfchargen`` comes from the
installed package, ``pip install -e .``). Each script keeps one current result,
``benchmarks/results/NAME.json`` (``result_path(__file__)``); git keeps the older runs.

Importing this module is cheap: TensorFlow is imported only by ``machine_probe`` and
``latest_version``, so a script that times process start-up can use it too.

Example (in benchmarks/my_bench.py)::

    import common

    p.add_argument("--data", default=common.DEFAULT_DATA)
    p.add_argument("--out", default=common.result_path(__file__))
    machine = common.machine_info(probe=True)      # before timing: cores, CPU, matmul GFLOP/s
    ...
    common.write_result(args.out, {"benchmark": "my_bench", "results": results}, machine=machine)
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
# The AG News CSV beside the repository (never copied into it), as the tests find it.
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "ag_news_csv", "test.csv"))
# Rows 1..TRAIN_ROWS of DEFAULT_DATA train; the rest is held out (README's convention).
TRAIN_ROWS = 6000


def result_path(script: str, ext: str = ".json") -> str:
    """benchmarks/results/<script name><ext>, for a script's ``__file__`` or a bare name."""
    name = os.path.splitext(os.path.basename(script))[0]
    return os.path.join(RESULTS, name + ext)


def cpu_model() -> str | None:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)
def _matmul_loop():
    import tensorflow as tf

    @tf.function(autograph=False)
    def loop(a, b):
        return tf.while_loop(lambda i, s: i < 50, lambda i, s: (i + 1, s + tf.matmul(a, b)),
                             (tf.constant(0), tf.zeros([a.shape[0], b.shape[1]])))[1]
    return loop


def machine_probe(reps: int = 5) -> dict:
    """The machine's speed now, on the two kinds of work that drift apart on a shared VM:
    dense matmul GFLOP/s at a fixed [256, 212] x [212, 512] shape (one-hot 83 + LSTM state
    128 -> 4 x 128 gates at batch 256; kept fixed so that result files compare) and a pure
    Python loop's million additions per second. Medians of ``reps`` short trials."""
    import tensorflow as tf

    loop = _matmul_loop()
    a, b = tf.random.normal([256, 212]), tf.random.normal([212, 512])
    loop(a, b).numpy()  # trace
    gflops, python = [], []
    for _ in range(reps):
        t = time.perf_counter()
        loop(a, b).numpy()
        gflops.append(50 * 2 * 256 * 212 * 512 / (time.perf_counter() - t) / 1e9)
        t, total = time.perf_counter(), 0
        for i in range(1_000_000):
            total += i
        python.append(1.0 / (time.perf_counter() - t))
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {"matmul_gflops": median(gflops), "python_million_adds_per_second": median(python)}


def machine_info(probe: bool = False) -> dict:
    """Cores, CPU model, load, Python, platform and library versions; with ``probe``, also
    ``machine_probe()`` (imports TensorFlow and takes about a second)."""
    info = {
        "cpu_count": os.cpu_count(),
        "sched_affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{name: _version(name) for name in ("tensorflow", "keras", "numpy")},
    }
    if "tensorflow" in sys.modules:  # never import it just for this
        info["gpus"] = [d.name for d in sys.modules["tensorflow"].config.list_physical_devices("GPU")]
    if probe:
        info["probe"] = machine_probe()
    return info


def latest_version(path: str) -> str:
    """A SavedModel version directory as given, or the newest version under an export base."""
    from tfchargen.savedmodel import locate

    return locate.newest(path)


def git_commit() -> dict:
    """{"commit": HEAD's hash, "dirty": uncommitted changes?}; Nones outside a git checkout."""
    def git(*args):
        r = subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else None
    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    except (OSError, subprocess.SubprocessError):
        commit = status = None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def command_line(argv: list[str] | None = None) -> str:
    """This process's command as it could be typed again, e.g.
    ``python benchmarks/train_throughput.py --budget-seconds 10``."""
    script, *args = sys.argv if argv is None else argv
    if os.path.isabs(script) and script.startswith(REPO + os.sep):
        script = os.path.relpath(script, REPO)
    return shlex.join(["python", script, *args])


def write_result(path: str, payload: dict, machine: dict | None = None, argv: list[str] | None = None) -> dict:
    """Writes ``payload`` as JSON to ``path`` (the parent made, written aside and renamed: a
    reader never sees half a file), with the run's record first: the command line, the date,
    the git commit and the machine (``machine``, or ``machine_info()`` now). Returns the
    record written."""
    record = {
        "command": command_line(argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": git_commit(),
        "machine": machine if machine is not None else machine_info(),
        **payload,
    }
    from tfchargen.common import files  # plain Python: the project's one atomic write

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    files.atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return record
