"""The tests' plain helpers and constants: paths, the data slices, running the CLI and other
commands in fresh processes (one at a time or all at once), and commands started in the
background early and waited for where they are needed. Fixtures live in conftest.py.

Tests import these by name (``from helpers import HELDOUT, run_clis``): tests/ is on
pytest's pythonpath (pyproject.toml).
"""

import collections
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "ag_news_csv" / "test.csv").resolve()
TRAIN = f"csv:{DATA}[:6000]"
HELDOUT = f"csv:{DATA}[6000:]"
C_DIR = ROOT / "export" / "c"
GO_DIR = ROOT / "export" / "go"

# CI (.ci/run sets CI=true) fails where a developer's checkout skips: missing data, no Go.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The serving_default defaults of the tiny run's export: greedy, 12 new characters.
TINY_SERVING_DEFAULTS = ("--default-max-length", 12, "--default-temperature", 0)


def skip_or_fail(msg):
    """Fails under CI, where every test must run; skips with ``msg`` elsewhere."""
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


def cli_env(env=None):
    """The environment run_cli gives the command: ours, TensorFlow's C++ logging quieted."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))


def cli_command(*args):
    """The argv of `python -m tfchargen ARGS` (paths and numbers as strings)."""
    return [sys.executable, "-m", "tfchargen", *map(str, args)]


def run_cli(*args, timeout=600, env=None):
    """Runs `python -m tfchargen ARGS` in a fresh process; returns CompletedProcess."""
    (r,) = run_clis(args, timeout=timeout, env=env)
    return r


def run_together(*commands, timeout=600, env=None, cwd=ROOT):
    """Runs each command (an argv list) in a fresh process of its own, all of them at once;
    returns their CompletedProcess objects in order. Starting TensorFlow is most of a short
    command and runs on one core: independent commands started together use both.

    On a timeout every process is killed and the test fails (it never hangs)."""
    jobs = []
    try:
        for c in commands:
            jobs.append(Background(c, env=env, cwd=cwd))
        return [job.wait(timeout) for job in jobs]
    finally:
        for job in jobs:  # after a timeout or a failed start: none is left running
            job.kill()


def run_clis(*arg_lists, timeout=600, env=None):
    """run_cli for each argument list, all at once (see run_together); CompletedProcess list."""
    return run_together(*[cli_command(*args) for args in arg_lists], timeout=timeout, env=cli_env(env))


def _process_limit():
    """How many commands Background runs at a time: TFCHARGEN_TEST_PROCESSES, else 3 per core
    (starting TensorFlow is mostly single-threaded) within the memory available (a command
    that loads TensorFlow takes up to ~1 GB), at least 2 and at most 8."""
    if os.environ.get("TFCHARGEN_TEST_PROCESSES"):
        return max(2, int(os.environ["TFCHARGEN_TEST_PROCESSES"]))
    try:
        with open("/proc/meminfo") as f:
            available_gb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 2**20
    except (OSError, StopIteration, ValueError):
        available_gb = 8
    return max(2, min(8, 3 * (os.cpu_count() or 2), int(available_gb) - 2))


class Background:
    """A command started in a process of its own, its output going to temporary files (never
    a pipe that could fill up while nobody reads it); ``wait()`` gives its CompletedProcess
    (text output). Started early, it runs beside whatever comes first.

    At most PROCESS_LIMIT commands run at a time (memory): the others start, in order, as
    running ones end.

    >>> job = Background(cli_command("export", "--run-dir", run, "--export-base", base))  # doctest: +SKIP
    >>> r = job.wait(timeout=600)  # doctest: +SKIP
    """

    _lock = threading.Lock()
    _running = 0
    _queue = collections.deque()

    def __init__(self, command, env=None, cwd=ROOT):
        self.args = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in command]
        self._env, self._cwd = env, cwd
        self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc, self._result, self._cancelled = None, None, False
        self._started = threading.Event()
        with Background._lock:
            start = Background._running < PROCESS_LIMIT
            if start:
                Background._running += 1
            else:
                Background._queue.append(self)
        if start:
            self._start()

    def _start(self):
        try:
            self.proc = subprocess.Popen(self.args, stdout=self._out, stderr=self._err, text=True, env=self._env,
                                         cwd=self._cwd)
        except BaseException:
            self._ended()
            raise
        finally:
            self._started.set()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        self.proc.wait()
        self._ended()

    def _ended(self):
        """Frees this command's place: the next queued one starts."""
        with Background._lock:
            Background._running -= 1
            nxt = None
            while Background._queue and nxt is None:
                nxt = Background._queue.popleft()
                if nxt._cancelled:
                    nxt = None
            if nxt is not None:
                Background._running += 1
        if nxt is not None:
            try:
                nxt._start()
            except OSError:
                pass  # nxt.wait() reports it

    def wait(self, timeout=600):
        """Waits for the command (``timeout`` seconds from now, its time in the queue
        included); kills it and fails the test on a timeout (a test never hangs)."""
        if self._result is None:
            deadline = time.monotonic() + timeout
            if not self._started.wait(timeout) or self.proc is None:
                self.kill()
                pytest.fail(f"command did not start within {timeout} s: {self.args}")
            try:
                self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"command did not finish within {timeout} s: {self.args}")
            outputs = []
            for f in (self._out, self._err):
                f.seek(0)
                outputs.append(f.read())
                f.close()
            self._result = subprocess.CompletedProcess(self.args, self.proc.returncode, *outputs)
        return self._result

    def kill(self):
        """Ends the command if it is still running, or drops it from the queue (a job
        nobody waited for)."""
        with Background._lock:
            if not self._started.is_set():
                self._cancelled = True
                if self in Background._queue:
                    Background._queue.remove(self)
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        if self._result is None:
            self._out.close()
            self._err.close()


PROCESS_LIMIT = _process_limit()


class Concurrent:
    """Callables run in threads of their own from now on, at most ``workers`` at a time, in
    the order given, each under a name: a test module starts the fresh-process parts of its
    tests together (while one process starts TensorFlow on one core, another uses the
    other) and each test takes its part's result.

    ``result(name)`` waits for one and returns what it returned or raises what it raised:
    an assertion inside fails the test that asks for it.

    >>> runs = Concurrent().start("a", run_cli, "train", ...)  # doctest: +SKIP
    >>> r = runs.result("a")  # doctest: +SKIP
    """

    def __init__(self, workers=3):
        self._pool = futures.ThreadPoolExecutor(workers)
        self._futures = {}

    def start(self, name, fn, *args, **kwargs):
        self._futures[name] = self._pool.submit(fn, *args, **kwargs)
        return self

    def result(self, name, timeout=1200):
        return self._futures[name].result(timeout)

    def close(self):
        """Waits for what runs; what has not started yet never starts."""
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- random models: no training, for tests of the pipeline around the numbers -------------------
RANDOM_TEXT = "Today the quick brown fox jumps over the lazy dog! 0123456789,.-'\"?"


def random_model(directory, units=16, seed=1, eos_bias=None, text=RANDOM_TEXT):
    """(vocab, CharRNN) with random weights (the same for the same arguments, in any process),
    its vocab.txt written to ``directory``; ``eos_bias`` sets the head's <eos> bias (a very
    negative one makes a model that never ends a text)."""
    import keras
    import tensorflow as tf

    from tfchargen.data.vocab import Vocabulary
    from tfchargen.model import charrnn

    keras.utils.set_random_seed(seed)
    os.makedirs(directory, exist_ok=True)
    vocab = Vocabulary.build([text], str(directory))
    rnn = charrnn.build(vocab.size, units=units)
    rnn.model(tf.zeros([1, 1], tf.int32))
    if eos_bias is not None:
        bias = rnn.head.bias.numpy()
        bias[vocab.eos_id] = eos_bias
        rnn.head.bias.assign(bias)
    return vocab, rnn


def random_run(directory, **kwargs):
    """A run dir (config.json, vocab.txt, weights) of a random model (``random_model``'s
    arguments), for `tfchargen export`."""
    import json

    from tfchargen import config

    directory = pathlib.Path(directory)
    vocab, rnn = random_model(directory, **kwargs)
    cfg = {**config.DEFAULTS, "units": kwargs.get("units", 16)}
    (directory / "config.json").write_text(json.dumps(cfg))
    rnn.model.save_weights(str(directory / "model.weights.h5"))
    return directory


# One fresh process: a random run that never ends a text (<eos> bias -30), exported through
# the CLI's own entry point (argv: run dir, export base, export flags).
NEVER_ENDING_EXPORT = """
import sys
from helpers import random_run
from tfchargen.cli import main
run = random_run(sys.argv[1], eos_bias=-30.0)
sys.exit(main(["export", "--run-dir", str(run), "--export-base", *sys.argv[2:]]))
"""

