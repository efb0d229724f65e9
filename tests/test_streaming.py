"""Streaming through `start` and `continue`: chained chunks equal one `generate` call.

Fast tests run in-process on a randomly initialised tiny CharRNN (no training); slow ones on
a real export reloaded in a fresh process, through the CLI, a server and the C client.
"""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import RANDOM_TEXT as TEXT
from helpers import ROOT, Background, cli_command, cli_env, random_model
from tensorflow.core.framework import tensor_pb2

from tfchargen import contract
from tfchargen.generation import generator as gen_lib

PROMPTS = ["Today ", "", "fox", "x" * 30, "On Sunday "]


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    return gen_lib.Generator(*reversed(random_model(tmp_path_factory.mktemp("rand"))))


def vec(value, n, dtype):
    return tf.constant(value if isinstance(value, list) else [value] * n, dtype)


def controls(n, max_length=60, temperature=0.0, top_k=0, top_p=1.0, seed=0):
    return dict(max_length=vec(max_length, n, tf.int32), temperature=vec(temperature, n, tf.float32),
                top_k=vec(top_k, n, tf.int32), top_p=vec(top_p, n, tf.float32), seed=vec(seed, n, tf.int64))


def control_tensors(n, *args, **kw):
    return gen_lib.ControlTensors(**controls(n, *args, **kw))


def numpy(out):
    return {k: v.numpy() for k, v in out.items()}


def stream(start, cont, prompts, chunks, **kw):
    """Runs start(chunks[0]) then continue(c) for the rest; -> (continuations, log_probs,
    ended, every chunk's outputs)."""
    n = len(prompts)
    out = numpy(start(prompt=tf.constant(prompts), **controls(n, **{**kw, "max_length": chunks[0]})))
    outs = [out]
    for c in chunks[1:]:
        out = numpy(cont(state_bytes=tf.constant(out[contract.STATE]), **controls(n, **{**kw, "max_length": c})))
        outs.append(out)
    text = [b"".join(o["continuation"][i] for o in outs) for i in range(n)]
    return text, sum(o["log_prob"] for o in outs), outs[-1]["ended_with_eos"], outs


def in_process(g):
    return ((lambda prompt, **c: g.start(prompt, gen_lib.ControlTensors(**c))),
            (lambda state_bytes, **c: g.continue_(state_bytes, gen_lib.ControlTensors(**c))))


MIXED = dict(temperature=[0.0, 1.0, 1.6, 0.9, 2.5], top_k=[0, 0, 5, 0, 0], top_p=[1.0, 1.0, 1.0, 0.8, 1.0],
             seed=[0, 3, 9, 2**40, -7])


# -- fast: in-process, random weights ---------------------------------------------------------
@pytest.mark.parametrize("chunks", [[60], [0, 60], [7, 13, 1, 39], [1] * 12 + [48], [30, 0, 30], [59, 1]])
def test_chained_chunks_equal_one_generate_call(gen, chunks):
    want = numpy(gen.generate(tf.constant(PROMPTS), control_tensors(len(PROMPTS), max_length=sum(chunks), **MIXED)))
    text, log_prob, ended, outs = stream(*in_process(gen), PROMPTS, chunks, **MIXED)
    assert text == list(want["continuation"])
    np.testing.assert_allclose(log_prob, want["log_prob"], rtol=1e-5, atol=1e-4)
    assert list(ended) == list(want["ended_with_eos"])
    assert sum(o["num_chars"] for o in outs).tolist() == want["num_chars"].tolist()
    assert list(outs[0]["text"]) == [p.encode() + c for p, c in zip(PROMPTS, outs[0]["continuation"])]
    for o in outs[1:]:  # continue's text is the chunk's continuation
        assert list(o["text"]) == list(o["continuation"])


def test_a_model_that_rules_a_character_out_streams_exactly(tmp_path):
    """A logit far past the state's value bound (<eos> biased to -1e9, as a model that never
    ends a text) is stored clipped: the state is valid and the chunks still equal one call."""
    g = gen_lib.Generator(*reversed(random_model(tmp_path, eos_bias=-1e9)))
    want = numpy(g.generate(tf.constant(PROMPTS), control_tensors(len(PROMPTS), max_length=40, **MIXED)))
    text, log_prob, ended, _ = stream(*in_process(g), PROMPTS, [9, 31], **MIXED)
    assert text == list(want["continuation"]) and not any(ended)
    np.testing.assert_allclose(log_prob, want["log_prob"], rtol=1e-5, atol=1e-4)


def test_rows_end_at_different_chunks_and_stay_ended(gen):
    prompts = ["Today "] * 16  # hot seeded rows end with <eos> at different chunks
    kw = dict(temperature=3.0, seed=list(range(1, 17)))
    want = numpy(gen.generate(tf.constant(prompts), control_tensors(16, max_length=200, **kw)))
    text, _, ended, outs = stream(*in_process(gen), prompts, [20] * 10, **kw)
    assert text == list(want["continuation"])
    first_end = [next((j for j, o in enumerate(outs) if o["ended_with_eos"][i]), None) for i in range(16)]
    assert len({j for j in first_end if j is not None}) >= 3, first_end  # the test needs variety
    for i, j in enumerate(first_end):
        if j is not None:
            assert all(o["ended_with_eos"][i] and o["num_chars"][i] == 0 and o["continuation"][i] == b""
                       for o in outs[j + 1:])


def decoded(state: bytes):
    """(header doubles, float values) of one state."""
    proto = tensor_pb2.TensorProto.FromString(state)
    return list(proto.double_val), np.array(proto.float_val, np.float32)


def test_a_row_continued_alone_equals_inside_any_batch(gen):
    """A row's text does not depend on the batch it is continued in; its state's floats may
    differ in the last bits: TensorFlow's CPU matmul rounds differently for different batch
    sizes (Eigen's and oneDNN's kernels take other paths for 1 row than for several, and
    sum in another order), so the RNN states and logits are equal to float rounding, not
    bit for bit. What is exact: the continuation, the header (position, ended, model), and
    the text that continuing either state gives."""
    start, cont = in_process(gen)
    n = len(PROMPTS)
    first = numpy(start(prompt=tf.constant(PROMPTS), **controls(n, max_length=9, **MIXED)))
    together = numpy(cont(state_bytes=tf.constant(first[contract.STATE]), **controls(n, max_length=25, **MIXED)))
    other = numpy(start(prompt=tf.constant(["Red Sox ", "Oil "]), **controls(2, max_length=4, temperature=1.0,
                                                                             seed=[5, 6])))
    for i in range(n):
        row = {k: [v[i]] for k, v in MIXED.items()}
        alone = numpy(cont(state_bytes=tf.constant(first[contract.STATE][i:i + 1]), **controls(1, 25, **row)))
        # the same state among other streams' states, at another position in the batch
        states = [other[contract.STATE][0], first[contract.STATE][i], other[contract.STATE][1]]
        mixed_kw = {k: [1.0 if k == "temperature" else 1.0 if k == "top_p" else 0 if k == "top_k" else 5]
                    + v + [v[0]] for k, v in row.items()}
        mixed = numpy(cont(state_bytes=tf.constant(states), **controls(3, [7, 25, 40], **mixed_kw)))
        assert alone["continuation"][0] == together["continuation"][i] == mixed["continuation"][1]
        assert alone["log_prob"][0] == pytest.approx(together["log_prob"][i], rel=1e-5, abs=1e-4)
        assert alone["log_prob"][0] == pytest.approx(mixed["log_prob"][1], rel=1e-5, abs=1e-4)
        assert alone["ended_with_eos"][0] == mixed["ended_with_eos"][1]
        a_state, m_state = alone[contract.STATE][0], mixed[contract.STATE][1]
        assert len(a_state) == len(m_state) == gen.codec.size
        (a_header, a_floats), (m_header, m_floats) = decoded(a_state), decoded(m_state)
        assert a_header == m_header  # magic, version, fingerprint, position, ended: exact
        np.testing.assert_allclose(a_floats, m_floats, rtol=1e-5, atol=1e-6)
        # Continued with the same controls, either state gives the same text.
        nxt = numpy(cont(state_bytes=tf.constant([a_state, m_state]),
                         **controls(2, 30, **{k: v * 2 for k, v in row.items()})))
        assert nxt["continuation"][0] == nxt["continuation"][1]
        np.testing.assert_allclose(nxt["log_prob"][0], nxt["log_prob"][1], rtol=1e-5, atol=1e-4)


def test_state_is_a_tensor_proto_of_fixed_size(gen):
    out = numpy(gen.start(tf.constant(PROMPTS), control_tensors(len(PROMPTS), max_length=5, **MIXED)))
    sizes = {len(s) for s in out[contract.STATE]}
    assert sizes == {gen.codec.size}
    proto = tensor_pb2.TensorProto.FromString(out[contract.STATE][0])
    assert len(proto.float_val) == gen.codec.floats and len(proto.double_val) == 5
    assert proto.double_val[0] == contract.STATE_MAGIC and proto.double_val[3] == 5  # position


def edited(state: bytes, doubles=None, floats=None) -> bytes:
    """A state with some header or float values replaced (same framing and size)."""
    proto = tensor_pb2.TensorProto.FromString(state)
    for i, v in (doubles or {}).items():
        proto.double_val[i] = v
    for i, v in (floats or {}).items():
        proto.float_val[i] = v
    out = proto.SerializeToString()
    assert len(out) == len(state)
    return out


def tampered_cases(state: bytes):
    """(name, state bytes, expected message) for one valid state."""
    rng = np.random.default_rng(0)
    cut = state[:-1]
    return [
        ("cut", cut, contract.MSG_STATE_SIZE),
        ("longer", state + b"\x00", contract.MSG_STATE_SIZE),
        ("empty", b"", contract.MSG_STATE_SIZE),
        ("random bytes", rng.integers(0, 256, len(state), dtype=np.uint8).tobytes(), contract.MSG_STATE_FORMAT),
        ("zeros", bytes(len(state)), contract.MSG_STATE_FORMAT),
        ("magic", edited(state, {0: 1.0}), contract.MSG_STATE_FORMAT),
        ("version", edited(state, {1: 2.0}), contract.MSG_STATE_FORMAT),
        ("fingerprint", edited(state, {2: 12345.0}), contract.MSG_STATE_MODEL),
        ("position -1", edited(state, {3: -1.0}), contract.MSG_STATE_VALUES),
        ("position 2**31", edited(state, {3: 2.0**31}), contract.MSG_STATE_VALUES),
        ("position 1.5", edited(state, {3: 1.5}), contract.MSG_STATE_VALUES),
        ("position NaN", edited(state, {3: float("nan")}), contract.MSG_STATE_VALUES),
        ("ended 2", edited(state, {4: 2.0}), contract.MSG_STATE_VALUES),
        ("logit NaN", edited(state, floats={3: float("nan")}), contract.MSG_STATE_VALUES),
        ("state inf", edited(state, floats={-1: float("inf")}), contract.MSG_STATE_VALUES),
        ("state huge", edited(state, floats={-2: 1e30}), contract.MSG_STATE_VALUES),
    ]


def test_tampered_and_foreign_states_are_invalid_argument(gen, tmp_path):
    good = numpy(gen.start(tf.constant(["Today ", "x"]), control_tensors(2, max_length=3)))[contract.STATE]
    cases = tampered_cases(good[0])
    bigger = gen_lib.Generator(*reversed(random_model(tmp_path / "b", units=24)))
    retrained = gen_lib.Generator(*reversed(random_model(tmp_path / "r", seed=2)))  # same shapes
    other_vocab = gen_lib.Generator(*reversed(random_model(tmp_path / "v", text=TEXT + "XYZ")))
    for name, g, msg in (("bigger", bigger, contract.MSG_STATE_SIZE),
                         ("retrained", retrained, contract.MSG_STATE_MODEL),
                         ("other vocab", other_vocab, contract.MSG_STATE_SIZE)):
        cases.append((name, numpy(g.start(tf.constant(["Today "]), control_tensors(1, 3)))[contract.STATE][0], msg))
    for name, bad, msg in cases:
        for batch in ([bad], [good[0], bad, good[1]]):  # one bad row fails the whole call
            with pytest.raises(tf.errors.InvalidArgumentError) as e:
                gen.continue_(tf.constant(batch, tf.string), control_tensors(len(batch), max_length=4))
            assert msg in e.value.message, (name, e.value.message[:300])


def test_continue_checks_its_controls_and_takes_an_empty_batch(gen):
    state = numpy(gen.start(tf.constant(["Today "]), control_tensors(1, max_length=3)))[contract.STATE]
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_length must be <= 2048"):
        gen.continue_(tf.constant(state), control_tensors(1, max_length=contract.MAX_NEW_CHARS + 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one value per prompt"):
        gen.continue_(tf.constant(state), control_tensors(2))
    no_rows = gen_lib.ControlTensors(*(v[:0] for v in control_tensors(1)))
    empty = numpy(gen.continue_(tf.constant([], tf.string), no_rows))
    assert all(v.shape == (0,) for v in empty.values())


# -- slow: a real export, fresh processes, servers, the C client --------------------------------
LONG = 5000  # characters of the longest stream tested (past one call's 2048)


@pytest.fixture(scope="module")
def export_base(never_ending_model):
    """A random model that never emits <eos>, exported through the CLI (read only)."""
    return never_ending_model


FRESH = r"""
import json, sys
import numpy as np
import tensorflow as tf
from tfchargen.contract import Controls
from tfchargen.generation import streaming
from tfchargen.savedmodel.call import local_predict
m = tf.saved_model.load(sys.argv[1])
predict = local_predict(m)
prompts = [b"Today ", b"", b"fox"]
kw = dict(temperature=[0.0, 1.0, 0.7], top_k=[0, 0, 4], top_p=[1.0, 0.9, 1.0], seed=[0, 11, -3])
def joined(max_length, chunk):
    outs = list(streaming.chunks(predict, prompts, Controls(max_length=max_length, **kw), chunk))
    return [b"".join(o["continuation"][i] for o in outs).decode() for i in range(3)], \
           sum(o["log_prob"] for o in outs).tolist(), len(outs)
one = predict("generate", {"prompt": prompts, "max_length": [2048] * 3, **kw})
print(json.dumps({"generate": [c.decode() for c in one["continuation"]], "generate_lp": one["log_prob"].tolist(),
                  "by_7": joined(300, 7), "by_300": joined(300, 300), "by_2048": joined(%d, 2048),
                  "by_500": joined(%d, 500)}))
""" % (LONG, LONG)


START_EXPRS = 'prompt=["Today "];max_length=[5];temperature=[0.0];top_k=[0];top_p=[1.0];seed=[0]'


CLI_ARGS = ["generate", "--model", "{base}", "--prompt", "Today ", "--temperature", 0.9, "--seed", 21]
CLI_RUNS = {  # the CLI runs of test_cli_stream_prints_the_same_text_as_one_call_and_passes_2048
    "one": [*CLI_ARGS, "--max-length", 300],
    "streamed": [*CLI_ARGS, "--max-length", 300, "--stream", "--chunk", 64],
    "long": [*CLI_ARGS, "--max-length", 3000, "--stream", "--chunk", 2048],
    "two prompts": ["generate", "--model", "{base}", "--stream", "--prompt", "a", "--prompt", "b"],
    "big chunk": ["generate", "--model", "{base}", "--stream", "--chunk", 5000],
}


@pytest.fixture(scope="module")
def jobs(export_base, tmp_path_factory):
    """Every fresh process on the export, started together in the background as soon as it
    is written (the in-process tests run meanwhile): FRESH (tf.saved_model.load and
    tfchargen.generation.streaming), saved_model_cli running `start` (the session-based
    loader), the CLI runs and the state fuzzer's short run."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    fuzz_json = tmp_path_factory.mktemp("fuzz-state") / "fuzz_state.json"
    started = {
        "fresh": Background([sys.executable, "-c", FRESH, export_base / "1"], env=env),
        "saved_model_cli": Background([os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), "run",
                                       "--dir", export_base / "1", "--tag_set", "serve", "--signature_def", "start",
                                       "--input_exprs", START_EXPRS], env=env),
        **{name: Background(cli_command(*[str(a).format(base=export_base) for a in args]), env=cli_env())
           for name, args in CLI_RUNS.items()},
        "fuzz_state": Background([sys.executable, ROOT / "tests" / "fuzz" / "fuzz_state.py", "--model", export_base,
                                  "--cases", "120", "--seed", "3", "--json", fuzz_json], env=env),
    }
    yield started, fuzz_json
    for job in started.values():
        job.kill()


@pytest.fixture(scope="module")
def fresh_runs(jobs):
    """The export in two fresh processes started at once: FRESH (tf.saved_model.load and
    tfchargen.generation.streaming) and saved_model_cli running `start` (the session-based loader)."""
    return {name: jobs[0][name].wait(900) for name in ("fresh", "saved_model_cli")}


@pytest.mark.slow
def test_fresh_process_streams_equal_generate_and_pass_2048_characters(fresh_runs):
    r = fresh_runs["fresh"]
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    gen_text, gen_lp = got["generate"], got["generate_lp"]
    assert all(len(t) == 2048 for t in gen_text)  # the model never ends: every row runs to its length
    for key, n in (("by_7", 300), ("by_300", 300)):
        assert got[key][0] == [t[:n] for t in gen_text], key
    assert got["by_7"][2] == 43 and got["by_300"][2] == 1
    np.testing.assert_allclose(got["by_7"][1], got["by_300"][1], rtol=1e-5)
    long_a, long_b = got["by_2048"], got["by_500"]
    assert long_a[0] == long_b[0] and all(len(t) == LONG for t in long_a[0])
    assert [t[:2048] for t in long_a[0]] == gen_text
    np.testing.assert_allclose(long_a[1], long_b[1], rtol=1e-4)
    assert all(lp < g for lp, g in zip(long_a[1], gen_lp))  # 5000 characters cost more than 2048


@pytest.fixture(scope="module")
def export_loaded(export_base):
    """tf.saved_model.load of the export in this process (tests only call its signatures)."""
    return tf.saved_model.load(str(export_base / "1"))


@pytest.fixture(scope="module")
def stream_server(export_base):
    """`tfchargen serve` in this process on the export, behind a fault-injecting proxy."""
    from faults import FaultProxy

    from tfchargen.serving.server import Server

    with Server(str(export_base), "chargen", port=0, grpc_port=0) as server, \
            FaultProxy(server.rest_url, server.grpc_target) as proxy:
        yield server, proxy


@pytest.mark.slow
def test_in_process_states_continue_on_the_export_and_foreign_ones_are_refused(export_loaded, tmp_path):
    tmp_path.joinpath("same").mkdir()
    same = gen_lib.Generator(*reversed(random_model(tmp_path / "same", eos_bias=-30.0)))
    other = gen_lib.Generator(*reversed(random_model(tmp_path / "other", seed=5, eos_bias=-30.0)))
    cont = export_loaded.signatures["continue"]
    kw = controls(2, max_length=20, temperature=[0.0, 1.0], seed=[0, 4])
    tensors = gen_lib.ControlTensors(**kw)
    state = same.start(tf.constant(["Today ", "fox"]), tensors)[contract.STATE]
    exported = cont(state_bytes=state, **kw)
    local = same.continue_(state, tensors)
    assert list(exported["continuation"].numpy()) == list(local["continuation"].numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="another model"):
        cont(state_bytes=other.start(tf.constant(["Today ", "fox"]), tensors)[contract.STATE], **kw)


@pytest.mark.slow
def test_saved_model_cli_runs_start(fresh_runs):
    r = fresh_runs["saved_model_cli"]
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Result for output key state_bytes" in r.stdout and "Result for output key continuation" in r.stdout


@pytest.mark.slow
def test_cli_stream_prints_the_same_text_as_one_call_and_passes_2048(jobs):
    one, streamed, long, two_prompts, big_chunk = (jobs[0][name].wait(600) for name in CLI_RUNS)
    assert one.returncode == 0 and streamed.returncode == 0, streamed.stderr[-2000:]
    assert streamed.stdout == one.stdout and len(one.stdout) == len("Today ") + 300 + 1
    assert long.returncode == 0 and long.stdout.startswith(one.stdout[:-1]) and len(long.stdout) == 6 + 3000 + 1
    bad = two_prompts
    assert bad.returncode == 2 and "--stream prints one text" in bad.stderr and "Traceback" not in bad.stderr
    bad = big_chunk
    assert bad.returncode == 2 and "--chunk must be in 1..2048" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_client_stream_retries_a_chunk_without_repeating_text(stream_server, export_loaded, protocol):
    from tfchargen.serving.client import GrpcClient, RestClient

    _, proxy = stream_server  # the module's server, behind its proxy
    proxy.reset()
    client = (RestClient(proxy.rest_url, backoff=0.01, sse=False) if protocol == "rest"  # start/continue
              else GrpcClient(proxy.grpc_target, backoff=0.01))
    with client:
        kw = dict(controls=contract.Controls(max_length=120, temperature=1.0, seed=9), chunk=16)
        clean = list(client.stream("Today ", **kw))
        it = client.stream("Today ", **kw)
        faulty = [next(it), next(it)]
        proxy.fail_next = 2  # the next chunk's first two attempts fail: UNAVAILABLE
        calls = proxy.calls
        faulty += list(it)
        assert proxy.calls - calls == len(clean) - 2 + 2
    if protocol == "rest":  # :stream: one request, retried until it answers
        proxy.fail_next, calls = 2, proxy.calls
        assert list(RestClient(proxy.rest_url, backoff=0.01).stream("Today ", **kw)) == clean
        assert proxy.calls - calls == 3
    assert faulty == clean and len(clean) == 8
    assert len("".join(clean)) == 6 + 120
    one = export_loaded.signatures["generate"](prompt=tf.constant(["Today "]),
                                               **controls(1, 120, temperature=1.0, seed=9))
    assert "".join(clean) == one["text"].numpy()[0].decode()


@pytest.mark.slow
def test_state_fuzzer_short_run(jobs):
    started, out = jobs
    r = started["fuzz_state"].wait(900)  # tests/fuzz/fuzz_state.py, 120 cases
    summary = json.loads(out.read_text())
    assert r.returncode == 0 and summary["unexpected"] == 0, summary["failures"]
    assert summary["outcomes"].get("exact", 0) > 5 and summary["outcomes"].get("invalid_argument", 0) > 40
