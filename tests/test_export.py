"""The exported SavedModel: reloaded in fresh processes, session loader, sampling contract."""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import HELDOUT, Background, cli_command, cli_env

from tfchargen.generation import generator as gen_lib
from tfchargen.savedmodel import export as export_lib
from tfchargen.savedmodel import locate
from tfchargen.training import rundir
from tfchargen.training.losses import TokenMeanCrossentropy

pytestmark = pytest.mark.slow

PROMPTS = ["Today ", "On Sunday ", "", "Stocks", "日本 ☃ unknown", "x" * 5000]


@pytest.fixture(scope="module")
def gen(tiny_run):
    _, vocab, rnn = rundir.load_trained(tiny_run)
    return gen_lib.Generator(rnn, vocab)


def call(g, prompts, max_length=40, temperature=0.0, top_k=0, top_p=1.0, seed=0):
    n = len(prompts)
    vec = lambda v, dt: tf.constant(v if isinstance(v, list) else [v] * n, dt)  # noqa: E731
    out = g.generate(tf.constant(prompts, tf.string), gen_lib.ControlTensors(
        vec(max_length, tf.int32), vec(temperature, tf.float32), vec(top_k, tf.int32), vec(top_p, tf.float32),
        vec(seed, tf.int64)))
    return {k: v.numpy() for k, v in out.items()}


FRESH = r"""
import json, sys
sys.modules["tensorflow_text"] = None  # importing it would fail: the model must not need it
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
n = len(PROMPTS)
out = m.signatures["generate"](prompt=tf.constant(PROMPTS), max_length=tf.constant([40] * n),
    temperature=tf.zeros([n]), top_k=tf.zeros([n], tf.int32), top_p=tf.ones([n]), seed=tf.zeros([n], tf.int64))
d = m.signatures["serving_default"](prompt=tf.constant(PROMPTS))
s = m.signatures["score"](text=tf.constant(PROMPTS))
print(json.dumps({"text": [t.decode("utf-8") for t in out["text"].numpy()],
                  "default": [t.decode("utf-8") for t in d["continuation"].numpy()],
                  "score": s["nats_per_char"].numpy().tolist()}))
"""


SAVED_MODEL_CLI_EXPRS = ('prompt=["Today ",""];max_length=[15,4];temperature=[0.0,0.0];top_k=[0,0];top_p=[1.0,1.0];'
                         'seed=[0,0]')


@pytest.fixture(scope="module")
def jobs(tiny_model, version_dir):
    """This module's fresh processes, started together in the background at its first test
    (the in-process tests run meanwhile): FRESH (tf.saved_model.load), saved_model_cli (the
    session-based loader) and the CLI runs of test_cli_generate_and_evaluate_use_the_savedmodel."""
    started = {
        "fresh": [sys.executable, "-c", FRESH.replace("PROMPTS", json.dumps(PROMPTS)), version_dir],
        "saved_model_cli": [os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), "run", "--dir",
                            version_dir, "--tag_set", "serve", "--signature_def", "generate", "--input_exprs",
                            SAVED_MODEL_CLI_EXPRS],
        "generate": cli_command("generate", "--model", tiny_model, "--prompt", "Today ", "--prompt", "On Sunday ",
                                "--max-length", 20, "--temperature", 0.8, "--seed", 7, "--num-samples", 2, "--json"),
        "temperatures": cli_command("generate", "--model", tiny_model, "--temperatures", "0.3,0.8,1.0,1.3,1.8",
                                    "--max-length", 10),
        "evaluate": cli_command("evaluate", "--model", tiny_model, "--data", HELDOUT),
    }
    started = {name: Background(command, env=cli_env()) for name, command in started.items()}
    yield started
    for job in started.values():
        job.kill()


@pytest.fixture(scope="module")
def fresh_runs(jobs):
    """The export in two fresh processes started at once: FRESH (tf.saved_model.load) and
    saved_model_cli (the session-based loader); their CompletedProcess objects by name."""
    return {name: jobs[name].wait(300) for name in ("fresh", "saved_model_cli")}


def test_fresh_process_without_tensorflow_text_matches_in_memory(fresh_runs, gen):
    r = fresh_runs["fresh"]
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    want = call(gen, PROMPTS)
    assert got["text"] == [t.decode("utf-8") for t in want["text"]]
    # serving_default has the export's defaults baked in: greedy, 12 characters.
    assert got["default"] == [c.decode("utf-8")[:12] for c in want["continuation"]]
    np.testing.assert_allclose(got["score"], gen.score(tf.constant(PROMPTS))["nats_per_char"].numpy(), rtol=1e-5)


def test_session_loader_saved_model_cli(fresh_runs, gen):
    r = fresh_runs["saved_model_cli"]
    assert r.returncode == 0, r.stderr[-3000:]
    want = call(gen, ["Today ", ""], max_length=[15, 4])
    text_line = r.stdout.split("Result for output key text:")[1].strip().splitlines()[0]
    assert text_line == str(want["text"])  # saved_model_cli prints the numpy array


def test_graph_has_no_pyfunc_ops(version_dir):
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    ops = set()
    for mg in sm.meta_graphs:
        ops |= {n.op for n in mg.graph_def.node}
        for f in mg.graph_def.library.function:
            ops |= {n.op for n in f.node_def}
    assert ops and not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    assert not any(o.startswith("Cudnn") for o in ops)
    assert (version_dir / "assets" / "vocab.txt").exists()


def reference_greedy(rnn, vocab, prompt, n):
    """The teaching example's way: re-run the whole model on the whole prefix, take argmax."""
    ids = vocab.encode(tf.constant([prompt])).to_list()[0] or [vocab.eos_id]
    new = []
    for _ in range(n):
        logits = rnn.model(tf.constant([ids + new]))[0, -1].numpy()
        logits[0] = -np.inf
        nxt = int(np.argmax(logits))
        if nxt == vocab.eos_id:
            break
        new.append(nxt)
    return vocab.decode_py(new)


def test_greedy_equals_the_reference_method(gen):
    for prompt in ("Today ", "On Sunday ", ""):
        want = reference_greedy(gen.rnn, gen.vocab, prompt, 25)
        got = call(gen, [prompt], max_length=25)["continuation"][0].decode()
        assert got == want


def test_seeded_rows_are_reproducible_and_batch_independent(gen):
    alone = call(gen, ["Today "], temperature=1.0, seed=1234)
    again = call(gen, ["Today "], temperature=1.0, seed=1234)
    assert alone["text"][0] == again["text"][0]
    others = [f"prompt {i} " for i in range(16)]
    prompts = others[:7] + ["Today "] + others[7:]
    batch = call(gen, prompts, temperature=[1.3] * 7 + [1.0] + [0.5] * 9, seed=list(range(1, 8)) + [1234] + [0] * 9,
                 top_k=[5] * 7 + [0] + [0] * 9, max_length=[10] * 7 + [40] + [60] * 9)
    assert batch["text"][7] == alone["text"][0] and batch["log_prob"][7] == pytest.approx(alone["log_prob"][0])
    different = call(gen, ["Today "], temperature=1.0, seed=99)
    assert different["text"][0] != alone["text"][0]


def test_temperature_to_zero_and_top_k_1_equal_greedy(gen):
    greedy = call(gen, PROMPTS[:4])["text"]
    assert list(call(gen, PROMPTS[:4], temperature=1e-6, seed=3)["text"]) == list(greedy)
    assert list(call(gen, PROMPTS[:4], temperature=1.0, top_k=1, seed=3)["text"]) == list(greedy)
    assert list(call(gen, PROMPTS[:4], temperature=1.0, top_p=1e-6)["text"]) == list(greedy)


def test_padding_is_never_sampled_at_temperature_100(gen):
    out = call(gen, ["Today "] * 64, max_length=50, temperature=100.0, seed=list(range(1, 65)))
    for n, ended in zip(out["num_chars"], out["ended_with_eos"]):
        assert ended or n == 50  # a sampled id 0 would have left a hole
    out = call(gen, ["Today "] * 64, max_length=50, temperature=100.0)  # unseeded path too
    assert all(e or n == 50 for n, e in zip(out["num_chars"], out["ended_with_eos"]))


def test_per_row_max_length_and_edge_inputs(gen):
    prompts = ["Today ", "", "Zürich 😀", "To\xffday", "a"]
    out = call(gen, prompts, max_length=[0, 3, 7, 11, 20], temperature=1.0, seed=5)
    assert list(out["num_chars"][:1]) == [0] and out["continuation"][0] == b""
    for n, ended, limit in zip(out["num_chars"], out["ended_with_eos"], [0, 3, 7, 11, 20]):
        assert n <= limit and (ended or n == limit)
    assert out["text"][2].decode().startswith("Zürich 😀")  # unknown characters kept in text
    bad = gen.generate(tf.constant([b"To\xffday"]), gen_lib.ControlTensors(
        tf.constant([5]), tf.constant([0.0]), tf.constant([0]), tf.constant([1.0]), tf.constant([0], tf.int64)))
    assert bad["text"].numpy()[0].decode("utf-8").startswith("To\ufffdday")
    empty = call(gen, [])
    assert all(v.shape == (0,) for v in empty.values())


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=-2), "top_k"),
    (dict(max_length=-1), "max_length"),
    (dict(max_length=gen_lib.MAX_NEW_CHARS + 1), "max_length"),
    (dict(seed=[1, 2, 3]), "one value per prompt"),
])
def test_invalid_controls_are_invalid_argument(gen, kwargs, match):
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        call(gen, ["Today ", "x"], **kwargs)


def test_score_equals_the_training_loss(gen):
    text = "Oil prices rise as Gulf supply worries grow"
    ids = gen.vocab.encode(tf.constant([text])).to_tensor()
    targets = tf.concat([ids[:, 1:], [[gen.vocab.eos_id]]], axis=1)
    loss = TokenMeanCrossentropy()  # the loss training uses
    want = float(loss(targets, gen.rnn.model(ids)))
    got = gen.score(tf.constant([text, ""]))
    assert float(got["nats_per_char"][0]) == pytest.approx(want, rel=1e-5)
    assert int(got["num_chars"][0]) == len(text) and int(got["num_chars"][1]) == 0
    assert float(got["log_prob"][0]) == pytest.approx(-want * len(text), rel=1e-5)


def test_cli_generate_and_evaluate_use_the_savedmodel(jobs, tiny_run_heldout):
    r, temps, by_model = (jobs[name].wait(600) for name in ("generate", "temperatures", "evaluate"))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert len(rows) == 4 and all(row["text"].startswith(row["prompt"]) for row in rows)
    assert all(row["num_chars"] <= 20 for row in rows)
    assert temps.returncode == 0 and len(temps.stdout.strip().splitlines()) == 5, temps.stderr[-2000:]
    assert by_model.returncode == 0, by_model.stderr[-2000:]
    a, b = json.loads(by_model.stdout.strip().splitlines()[-1]), tiny_run_heldout  # b: evaluate --run-dir
    assert a["chars"] == b["chars"] and a["nats_per_char"] == pytest.approx(b["nats_per_char"], rel=1e-5)


def test_versions_are_atomic_and_increment(tiny_model_copy, tiny_run):
    exported = tiny_model_copy
    empty = exported.parent / "empty"
    empty.mkdir()
    # Two refused commands (they find no version 7, no version at all), meanwhile in the background.
    refused = [Background(cli_command("generate", "--model", exported, "--version", 7), env=cli_env()),
               Background(cli_command("generate", "--model", empty), env=cli_env())]
    try:
        # The XLA variant as version 2: export() itself runs it through the session loader.
        path = export_lib.export(str(tiny_run), str(exported), jit_compile=True, log=lambda *_: None)
        assert os.path.basename(path) == "2" and locate.versions(str(exported)) == [1, 2]
        assert not [d for d in os.listdir(exported) if d.startswith(".tmp")]
        r, r_empty = (job.wait(300) for job in refused)
    finally:
        for job in refused:
            job.kill()
    assert r.returncode == 2 and "no SavedModel" in r.stderr
    assert r_empty.returncode == 2 and "no model versions" in r_empty.stderr and "Traceback" not in r_empty.stderr


def test_xla_loop_matches_the_plain_loop(gen, tiny_run):
    _, vocab, rnn = rundir.load_trained(tiny_run)
    xla = gen_lib.Generator(rnn, vocab, jit_compile=True)
    prompts = ["Today ", "", "On Sunday "]
    for kwargs in (dict(), dict(temperature=0.9, seed=[3, 4, 5], top_k=[0, 10, 0], top_p=[1.0, 1.0, 0.9])):
        a, b = call(gen, prompts, max_length=[30, 5, 0], **kwargs), call(xla, prompts, max_length=[30, 5, 0], **kwargs)
        assert list(a["text"]) == list(b["text"]) and list(a["num_chars"]) == list(b["num_chars"])
        np.testing.assert_allclose(a["log_prob"], b["log_prob"], rtol=1e-4, atol=1e-4)
