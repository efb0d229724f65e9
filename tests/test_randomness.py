"""Randomness of the exported model: unseeded means fresh draws in every process and every
call, in every runtime (Python's tf.saved_model.load, the session-based loader that TF
Serving and the C API use, the C client); seeded rows are reproducible across processes and
do not depend on the rest of the batch; one user seed gives each prompt x sample its own
row seed (tfchargen/seeds.py), the same in the CLI and the C and Go clients.

The model is the tiny run's own export, written by `tfchargen train` at the end of
training, after it set the training seed and op determinism (the export a global seed
could leak into).
"""

import doctest
import json
import os
import subprocess
import sys

import pytest
from helpers import Background, cli_command, cli_env

from tfchargen.generation import seeds

ROWS, CHARS = 8, 40

# Both runtimes in one fresh process (starting TensorFlow is most of its time): the
# session-based loader first, as TF Serving and the C API run it, with nothing loaded
# before it; then Python's tf.saved_model.load. For each: rows seeded 1..ROWS, then ROWS
# unseeded rows, the call made twice; then the seeded row 3 alone (batch invariance).
# One JSON line of texts per runtime and call.
LOADERS = r"""
import json, sys
import tensorflow as tf
n, chars = int(sys.argv[2]), int(sys.argv[3])
batch = list(range(1, n + 1)) + [0] * n


def session_loader():
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
        sig = tf.compat.v1.saved_model.loader.load(sess, ["serve"], sys.argv[1]).signature_def["generate"]
        def call(seed):
            b = len(seed)
            feeds = dict(prompt=["Today "] * b, max_length=[chars] * b, temperature=[1.0] * b, top_k=[0] * b,
                         top_p=[1.0] * b, seed=seed)
            out = sess.run(sig.outputs["text"].name, {sig.inputs[k].name: v for k, v in feeds.items()})
            return [t.decode("utf-8") for t in out]
        return {"calls": [call(batch), call(batch)], "alone": call([3])}


def python_loader():
    f = tf.saved_model.load(sys.argv[1]).signatures["generate"]
    def call(seed):
        b = len(seed)
        r = f(prompt=tf.constant(["Today "] * b), max_length=tf.fill([b], chars), temperature=tf.ones([b]),
              top_k=tf.zeros([b], tf.int32), top_p=tf.ones([b]), seed=tf.constant(seed, tf.int64))
        return [t.decode("utf-8") for t in r["text"].numpy()]
    return {"calls": [call(batch), call(batch)], "alone": call([3])}


print(json.dumps({"session": session_loader(), "python": python_loader()}))
"""


PUBLISHED = [6457827717110365317, 3203168211198807973, 9817491932198370423,  # SplitMix64 from state 1234567
             4593380528125082431, 16408922859458223821]  # (Rosetta Code, "Pseudo-random numbers/Splitmix64")


def test_row_seed_is_splitmix64():
    """Row i of seed 1234567 is SplitMix64's output i + 1 from that state, masked to int64."""
    assert [seeds.row_seed(1234567, i) for i in range(5)] == [v & (2**63 - 1) for v in PUBLISHED]


def test_row_seed_of_negative_seeds():
    """Output k + 1 from state s is output 1 from state s + k * gamma: negative seeds (most of
    these states as int64) are their two's-complement bit pattern."""
    states = [(1234567 + k * 0x9E3779B97F4A7C15) % 2**64 for k in range(5)]
    signed = [s - 2**64 if s >= 2**63 else s for s in states]
    assert sum(s < 0 for s in signed) >= 2
    assert [seeds.row_seed(s, 0) for s in signed] == [v & (2**63 - 1) for v in PUBLISHED]


def test_row_seed_rules():
    assert [seeds.row_seed(0, i) for i in range(4)] == [0, 0, 0, 0]  # unseeded stays unseeded
    rows = [seeds.row_seed(s, i) for s in (1, 2, -1, 2**63 - 1, -2**63) for i in range(50)]
    assert len(set(rows)) == len(rows) and all(0 < r < 2**63 for r in rows)
    for bad in ((2**63, 0), (-2**63 - 1, 0), (1, -1)):
        with pytest.raises(ValueError):
            seeds.row_seed(*bad)


def test_seeds_doctest():
    assert doctest.testmod(seeds).failed == 0


@pytest.fixture(scope="module")
def trained_export(tiny_run):
    version = tiny_run / "export" / "1"
    assert (version / "saved_model.pb").exists(), "tfchargen train exports at the end"
    return version


@pytest.fixture(scope="module")
def jobs(trained_export):
    """Every fresh process of this module, started together at its first use: LOADERS twice,
    the CLI's --num-samples command twice (each pair: two processes at once, neither can
    see the other's state)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    loaders = [[sys.executable, "-c", LOADERS, trained_export, ROWS, CHARS]] * 2
    started = {f"loaders {i}": Background(c, env=env) for i, c in enumerate(loaders)}
    started.update({f"num_samples {i}": Background(cli_command(*num_samples_args(trained_export)), env=cli_env())
                    for i in range(2)})
    yield started
    for job in started.values():
        job.kill()


def num_samples_args(version):
    """One --seed for --num-samples 3 and a repeated prompt."""
    return ["generate", "--model", version.parent, "--prompt", "Today ", "--prompt", "Today ",
            "--num-samples", 3, "--seed", 5, "--temperature", 1, "--max-length", CHARS]


def _check(a, b):
    seeded = lambda calls: [c[:ROWS] for c in calls]  # noqa: E731
    unseeded = lambda calls: [c[ROWS:] for c in calls]  # noqa: E731
    # unseeded: a new draw in each process, and in each call of one process
    assert unseeded(a["calls"])[0] != unseeded(b["calls"])[0]
    assert unseeded(a["calls"])[1] != unseeded(b["calls"])[1]
    assert unseeded(a["calls"])[0] != unseeded(a["calls"])[1]
    assert len(set(unseeded(a["calls"])[0])) > 1  # rows of one call differ too
    # seeded: the same in every call and process, and alone as in the batch
    assert seeded(a["calls"])[0] == seeded(a["calls"])[1] == seeded(b["calls"])[0] == seeded(b["calls"])[1]
    assert a["alone"] == b["alone"] == [a["calls"][0][2]]


@pytest.fixture(scope="module")
def two_processes(jobs):
    """LOADERS' answers from two fresh processes run at once."""
    outs = []
    for i in range(2):
        r = jobs[f"loaders {i}"].wait(300)
        assert r.returncode == 0, r.stderr[-3000:]
        outs.append(json.loads(r.stdout))
    return outs


@pytest.mark.slow
def test_unseeded_is_fresh_per_process_python_loader(two_processes):
    _check(*(answer["python"] for answer in two_processes))


@pytest.mark.slow
def test_unseeded_is_fresh_per_process_session_loader(two_processes):
    _check(*(answer["session"] for answer in two_processes))


@pytest.mark.slow
def test_unseeded_is_fresh_per_process_c_client(trained_export, c_client):
    binary = str(c_client)
    common = ["--temperature", "1", "--max-length", str(CHARS)]
    args = [[*common, "--seed", "0"]] * 2 + [[*common, "--seed", "5"]] * 2
    procs = [subprocess.Popen([binary, *a, str(trained_export), *["Today "] * ROWS], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for a in args]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(out)
    unseeded_1, unseeded_2, seeded_1, seeded_2 = outs
    assert unseeded_1 != unseeded_2
    assert seeded_1 == seeded_2
    assert len(set(seeded_1.splitlines())) > 1  # one --seed, a different seed per prompt


@pytest.mark.slow
def test_num_samples_differ_and_reproduce(jobs):
    """One --seed for --num-samples 3 (and a repeated prompt): every row its own draw, the
    same in a second process."""
    first, second = (jobs[f"num_samples {i}"].wait(300) for i in range(2))  # two processes at once
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-3000:]
    lines = first.stdout.splitlines()
    assert len(lines) == 6 and len(set(lines)) == 6
    assert first.stdout == second.stdout
