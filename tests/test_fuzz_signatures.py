"""Property tests of the exported signatures with hostile inputs (hypothesis, derandomized).

Every call must return outputs that keep the README's contract or raise InvalidArgumentError
with the documented message of a control it broke; it must never crash the process, hang or
return malformed outputs. The checks are shared with the standalone fuzzer
``tests/fuzz/fuzz_signatures.py`` (10,000 seeded cases; a short run of it is a test here).
"""

import json
import math
import os
import subprocess
import sys

import fuzz_signatures as fz  # tests/fuzz, on the path by pyproject.toml's pythonpath
import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, Background
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfchargen.generation.seeds import row_seed

pytestmark = pytest.mark.slow

DEFAULT_MAX_LENGTH = 12  # tiny_model's --default-max-length
# The fuzzer's time bounds catch calls whose cost runs away (a hang, work quadratic in an
# input), not a slow machine: on shared cores a call can take several times its quiet time.
TIME_SLACK = 20.0
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def standalone_fuzzer(tiny_model, tmp_path_factory):
    """tests/fuzz/fuzz_signatures.py's short run in a fresh process, started in the background
    at the module's first test (the in-process properties run meanwhile): (job, its JSON)."""
    out = tmp_path_factory.mktemp("fuzz") / "fuzz.json"
    job = Background([sys.executable, ROOT / "tests" / "fuzz" / "fuzz_signatures.py", "--model", tiny_model,
                      "--cases", os.environ.get("TFCHARGEN_FUZZ_CASES", "150"), "--seed", "7",
                      "--default-max-length", DEFAULT_MAX_LENGTH, "--time-slack", TIME_SLACK, "--json", out],
                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    yield job, out
    job.kill()


@pytest.fixture(scope="module")
def model(version_dir):
    return fz.Model.cached(str(version_dir))


# -- strategies -------------------------------------------------------------------------------
hostile = st.lists(st.sampled_from(fz.HOSTILE), max_size=6).map(b"".join)
unicode_text = st.text(st.characters(codec="utf-8"), max_size=40).map(lambda s: s.encode("utf-8"))
# Lone surrogates cannot be UTF-8 encoded by Python's strict codec: as raw bytes they are
# invalid UTF-8 that the model must replace, not choke on.
surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=8).map(
    lambda s: s.encode("utf-8", "surrogatepass"))
prompts = st.one_of(st.just(b""), st.binary(max_size=64), unicode_text, hostile, surrogates,
                    st.sampled_from([p.encode() for p in fz.NEWS]))
batches = st.lists(prompts, max_size=6)

usual_max_length = st.integers(0, 40)
any_int32 = st.integers(-(2**31), 2**31 - 1)
f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)


@st.composite
def controls(draw, batch, max_length=usual_max_length, temperature=None, top_k=None, top_p=None):
    """Per-row controls; by default valid ones with extremes now and then."""
    temperature = temperature if temperature is not None else st.one_of(st.sampled_from([0.0, 0.5, 1.0]),
                                           st.floats(0, 3.3999999521443642e+38, width=32), st.just(-0.0))
    top_k = top_k if top_k is not None else st.one_of(st.just(0), st.integers(0, 2**31 - 1))
    top_p = top_p if top_p is not None else st.one_of(st.just(1.0), st.floats(fz.FLT_MIN, 1.0, width=32))
    rows = lambda s: draw(st.lists(s, min_size=batch, max_size=batch))  # noqa: E731
    return dict(max_length=rows(max_length), temperature=rows(temperature), top_k=rows(top_k),
                top_p=rows(top_p), seed=rows(st.integers(-(2**63), 2**63 - 1)))


def call_checked(model, signature, prompts, ctrl=None):
    """Runs one call through the fuzzer's classification; fails on anything unexpected."""
    import random

    outcome, detail, seconds, _ = fz.run_case(model, signature, prompts, ctrl, DEFAULT_MAX_LENGTH,
                                              slack=TIME_SLACK, rng=random.Random(0))
    assert not outcome.startswith("unexpected"), f"{outcome}: {detail}"
    return outcome


# -- properties -------------------------------------------------------------------------------
@SETTINGS
@given(data=st.data(), batch=batches)
def test_generate_with_hostile_prompts_and_valid_controls(model, data, batch):
    ctrl = data.draw(controls(len(batch)))
    assert call_checked(model, "generate", batch, ctrl) == "ok"


@SETTINGS
@given(data=st.data(), batch=batches.filter(len))
def test_generate_with_any_controls_is_ok_or_invalid_argument(model, data, batch):
    n = len(batch)
    ctrl = data.draw(controls(n, max_length=st.one_of(usual_max_length, any_int32), temperature=f32,
                              top_k=st.one_of(st.just(0), any_int32), top_p=f32))
    if data.draw(st.integers(0, 19)) == 0:  # now and then a control of another length
        name = data.draw(st.sampled_from(sorted(ctrl)))
        ctrl[name] = ctrl[name][: data.draw(st.integers(0, n - 1))] if n > 1 else ctrl[name] * 2
    call_checked(model, "generate", batch, ctrl)


@SETTINGS
@given(batch=batches)
def test_score_with_hostile_text(model, batch):
    assert call_checked(model, "score", batch) == "ok"


@SETTINGS
@given(batch=batches)
def test_serving_default_with_hostile_prompts(model, batch):
    assert call_checked(model, "serving_default", batch) == "ok"


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(data=st.data(), batch=st.lists(prompts, min_size=2, max_size=6))
def test_a_seeded_row_is_the_same_alone_and_in_any_batch(model, data, batch):
    ctrl = data.draw(controls(len(batch), max_length=st.integers(0, 30),
                              temperature=st.floats(0.0625, 3.0, width=32)))
    ctrl["seed"] = [s or 1 for s in ctrl["seed"]]
    out = model.call("generate", batch, ctrl)
    i = data.draw(st.integers(0, len(batch) - 1))
    alone = model.call("generate", [batch[i]], {k: [v[i]] for k, v in ctrl.items()})
    assert alone["text"][0] == out["text"][i]
    assert alone["log_prob"][0] == pytest.approx(out["log_prob"][i], rel=1e-4, abs=1e-4)


# -- explicit edge cases ----------------------------------------------------------------------
LONG = [b"x" * 100_000, "\u0301".encode() * 100_000, "😀".encode() * 50_000, b"\xff" * 100_000,
        b"Today " * 20_000 + b"\x00"]


def test_100k_character_prompts_in_every_signature(model):
    ctrl = dict(max_length=[5] * 5, temperature=[0.0, 1.0, 0.5, 0.0, 1.0], top_k=[0] * 5, top_p=[1.0] * 5,
                seed=[0, 3, 0, 0, 9])
    for signature in ("generate", "serving_default", "score"):
        assert call_checked(model, signature, LONG, ctrl if signature == "generate" else None) == "ok"
    scored = model.call("score", LONG[:1], None)
    assert int(scored["num_chars"][0]) == fz.MAX_PROMPT  # only the last 4096 characters are scored


def test_empty_batches_and_empty_strings(model):
    empty = dict(max_length=[], temperature=[], top_k=[], top_p=[], seed=[])
    for signature in ("generate", "serving_default", "score"):
        assert call_checked(model, signature, [], empty if signature == "generate" else None) == "ok"
    out = model.call("score", [b"", b""], None)
    assert out["num_chars"].tolist() == [0, 0] and out["nats_per_char"].tolist() == [0.0, 0.0]
    with pytest.raises(tf.errors.InvalidArgumentError, match="one value per prompt"):
        model.call("generate", [], dict(empty, seed=[1]))


@pytest.mark.parametrize("name,value", [
    ("max_length", 2**31 - 1), ("max_length", -(2**31)), ("max_length", fz.CAP + 1),
    ("top_k", -(2**31)), ("temperature", math.nan), ("temperature", -math.inf), ("temperature", math.inf),
    ("top_p", math.nan), ("top_p", 0.0), ("top_p", -0.0), ("top_p", float(np.nextafter(np.float32(1), 2))),
])
def test_extreme_controls_are_invalid_argument_with_their_name(model, name, value):
    ctrl = dict(max_length=[3, 3], temperature=[0.5, 0.5], top_k=[0, 0], top_p=[1.0, 1.0], seed=[1, 2])
    ctrl[name] = [ctrl[name][0], value]
    with pytest.raises(tf.errors.InvalidArgumentError, match=name):
        model.call("generate", [b"Today ", b"x"], ctrl)


def test_extreme_valid_controls(model):
    """The largest int32 top_k, int64 seeds at both ends, temperatures from subnormal to 3.4e38."""
    temps = [1e-45, fz.FLT_MIN, 1e-6, 1e30, 3.4e38, -0.0]
    n = len(temps)
    ctrl = dict(max_length=[fz.CAP, 0, 17, 40, 5, 1], temperature=temps, top_k=[2**31 - 1, 0, 1, 0, 5, 0],
                top_p=[1.0, 1e-30, 0.5, 1.0, 1.0, fz.FLT_MIN], seed=[2**63 - 1, -(2**63), -1, 0, 2**32, 1])
    assert call_checked(model, "generate", [b"Today "] * n, ctrl) == "ok"


def test_the_standalone_fuzzer_in_ci(standalone_fuzzer):
    """A short seeded run of tests/fuzz/fuzz_signatures.py in a fresh process (the full run is
    10,000 cases: benchmarks/results/fuzz_signatures.json). It starts with the known hard
    cases, among them max_length 2**31-1, which used to abort the whole process
    (std::bad_alloc from a TensorArray allocated before the control checks ran). Time bounds
    get TIME_SLACK on shared CI cores."""
    job, out = standalone_fuzzer
    r = job.wait(600)
    summary = json.loads(out.read_text()) if out.exists() else {}
    assert r.returncode == 0, (summary.get("failures"), r.stderr[-3000:])
    assert summary["unexpected"] == 0 and summary["outcomes"]["ok"] > summary["cases"] // 2
    assert any(k.startswith("invalid_argument") for k in summary["outcomes"])


# -- the C client (export/c/tfchargen-c) on a small fuzz sample -------------------------------
def test_c_client_fuzz_sample(model, c_client):
    """6 random cases through tfchargen-c (argv cannot hold NUL: those bytes are dropped):
    seeded and greedy rows byte-identical to the Python signature, invalid controls one line
    with the graph's message and exit 1, never a crash."""
    import random

    rng = random.Random(11)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    cases = []
    for i in range(6):
        prompts = [fz.random_prompt(rng).replace(b"\x00", b"")[:3000] or b"x" for _ in range(rng.randint(1, 4))]
        ctrl = fz.random_controls(rng, 1, model.vocab_size)
        if i < 2:  # the first two: invalid on purpose
            ctrl[["max_length", "temperature"][i]] = [[fz.CAP + 1, float("nan")][i]]
        c = {k: v[0] if v else 0 for k, v in ctrl.items()}
        flags = ["--max-length", str(c["max_length"]), "--temperature", repr(float(np.float32(c["temperature"]))),
                 "--top-k", str(c["top_k"]), "--top-p", repr(float(np.float32(c["top_p"]))), "--seed", str(c["seed"])]
        cases.append((prompts, c, subprocess.Popen([str(c_client), *flags, str(model.path), *prompts],
                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)))
    for prompts, c, proc in cases:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode in (0, 1, 2), (proc.returncode, err[-500:])  # a signal would be negative
        reasons = fz.expected_errors(len(prompts), {k: [v] * len(prompts) for k, v in c.items()})
        if proc.returncode != 0:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("tfchargen-c: "), err
            assert reasons or fz.maybe_flushed({"top_p": [c["top_p"]]}), (c, lines)
            assert any(fz.MESSAGES[r] in lines[0] for r in reasons | {"top_p"}), (c, lines)
            continue
        assert not reasons, (c, "accepted")
        n = len(prompts)
        want = model.call("generate", prompts, {k: [v] * n for k, v in c.items()}
                          | {"seed": [row_seed(c["seed"], i) for i in range(n)]})  # the client's row seeds
        fz.check_generate(model, prompts, [c["max_length"]] * n, want)
        got = out.split(b"\n")[:-1]
        assert len(got) == n and [g.decode("utf-8") for g in got]  # valid UTF-8
        if c["seed"] != 0 or float(np.float32(c["temperature"])) == 0:
            assert got == list(want["text"]), c
