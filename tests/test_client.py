"""The Python clients (tfchargen.serving.client: RestClient, GrpcClient) and `tfchargen
generate --server` against `tfchargen serve` in this process, which follows TF Serving's
documented wire formats: REST row and columnar formats, gRPC, base64 strings, errors and
their codes, model status; retries and timeouts go through a fault-injecting proxy
(tests/faults.py). `tfchargen serve` as a command is tests/test_serve.py's.
"""

import json
import time

import numpy as np
import pytest
import tensorflow as tf
from faults import INJECTED, FaultProxy
from helpers import run_clis

from tfchargen import contract
from tfchargen.contract import Controls
from tfchargen.serving import client as client_lib
from tfchargen.serving.client import GrpcClient, RestClient, ServingError
from tfchargen.serving.server import Server


@pytest.fixture(scope="module")
def server(tiny_model):
    """`tfchargen serve` in this process (the subprocess and CLI are tests/test_serve.py's)."""
    with Server(str(tiny_model), "chargen", port=0, grpc_port=0) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(server):
    with FaultProxy(server.rest_url, server.grpc_target) as p:
        yield p


@pytest.fixture(autouse=True)
def _reset_proxy(request):
    yield
    if "proxy" in request.fixturenames:
        request.getfixturevalue("proxy").reset()


@pytest.fixture(scope="module")
def loaded(tiny_loaded):
    return tiny_loaded


def local_generate(loaded, prompts, max_length=30):
    """The SavedModel's generate signature, called directly (greedy)."""
    n = len(prompts)
    out = loaded.signatures["generate"](
        prompt=tf.constant(prompts), max_length=tf.fill([n], max_length), temperature=tf.zeros([n]),
        top_k=tf.zeros([n], tf.int32), top_p=tf.ones([n]), seed=tf.zeros([n], tf.int64))
    return {k: v.numpy() for k, v in out.items()}


PROMPTS = ["Today ", "On Sunday ", "", "日本 ☃"]


def clients(server, **kwargs):
    return {"rest-columnar": RestClient(server.rest_url, request_format="columnar", **kwargs),
            "rest-row": RestClient(server.rest_url, request_format="row", **kwargs),
            "grpc": GrpcClient(server.grpc_target, **kwargs)}


@pytest.mark.slow
def test_rest_row_columnar_and_grpc_give_the_local_greedy_text(server, loaded):
    want = local_generate(loaded, PROMPTS)
    want_score = {k: v.numpy() for k, v in loaded.signatures["score"](text=tf.constant(PROMPTS)).items()}
    for name, c in clients(server).items():
        got = c.generate(PROMPTS, Controls(max_length=30, temperature=0.0))
        assert list(got["text"]) == list(want["text"]), name
        assert list(got["continuation"]) == list(want["continuation"]), name
        assert list(got["num_chars"]) == list(want["num_chars"]), name
        assert list(got["ended_with_eos"]) == list(want["ended_with_eos"]), name
        np.testing.assert_array_equal(np.float32(got["log_prob"]), want["log_prob"])  # float32 round-trips
        s = c.score(PROMPTS)
        np.testing.assert_array_equal(np.float32(s["nats_per_char"]), want_score["nats_per_char"])
        assert list(s["num_chars"]) == list(want_score["num_chars"])
        # serving_default: one input, so the row format sends a plain list of strings.
        d = c.predict({"prompt": PROMPTS[:2]})
        assert [t.startswith(p.encode()) for t, p in zip(d["text"], PROMPTS)] == [True, True], name
        assert {k: len(v) for k, v in c.generate([]).items()} == dict.fromkeys(contract.GENERATE_OUTPUTS, 0)
        c.close()


@pytest.mark.slow
def test_non_utf8_prompt_goes_as_b64_and_comes_back_decoded(server, loaded):
    assert client_lib._json_value([b"To\xffday", "ok"], False) == [{"b64": "VG//ZGF5"}, "ok"]
    assert client_lib._json_value(["ok"], True) == [{"b64": "b2s="}]
    assert client_lib._from_json([{"b64": "VG//ZGF5"}, "é"]) == [b"To\xffday", "é".encode()]
    want = local_generate(loaded, [b"To\xffday"], max_length=10)["text"][0]
    assert want.decode("utf-8").startswith("To\ufffdday")
    for c in (RestClient(server.rest_url), RestClient(server.rest_url, request_format="row"),
              RestClient(server.rest_url, always_b64=True), GrpcClient(server.grpc_target)):
        assert c.generate([b"To\xffday"], Controls(max_length=10, temperature=0.0))["text"][0] == want
        # the controls as keywords make the same request; a misspelt one is refused
        assert c.generate([b"To\xffday"], max_length=10, temperature=0.0)["text"][0] == want
        with pytest.raises(TypeError, match="max_len"):
            c.generate(["x"], max_len=3)


@pytest.mark.slow
def test_retries_on_unavailable_then_succeed(proxy):
    for name, c in clients(proxy, retries=3, backoff=0.01).items():
        proxy.reset()
        proxy.fail_next = 2
        out = c.generate(["Today "], Controls(max_length=5, temperature=0.0))
        assert len(out["text"]) == 1 and proxy.calls == 3, name


@pytest.mark.slow
def test_exhausted_retries_give_a_clear_error(proxy):
    for name, c in clients(proxy, retries=1, backoff=0.01).items():
        proxy.reset()
        proxy.fail_next = 10
        with pytest.raises(ServingError, match=INJECTED + ".*gave up after 2 attempts") as e:
            c.generate(["Today "], Controls(max_length=5))
        assert e.value.retryable and e.value.code in ("UNAVAILABLE", "HTTP 503"), name
        assert proxy.calls == 2
    with pytest.raises(ServingError, match="cannot connect.*gave up after 2 attempts"):
        RestClient("http://127.0.0.1:9", retries=1, backoff=0.01).generate(["x"])
    with pytest.raises(ServingError, match="UNAVAILABLE.*gave up after 2 attempts"):
        GrpcClient("127.0.0.1:9", retries=1, backoff=0.01, timeout=5).generate(["x"])


@pytest.mark.slow
def test_invalid_control_is_an_error_with_the_graphs_message(server):
    for name, c in clients(server).items():
        with pytest.raises(ServingError, match=r"top_p must be in \(0, 1\]") as e:
            c.generate(["Today ", "x"], Controls(top_p=2.0))
        assert e.value.code in ("INVALID_ARGUMENT", "HTTP 400") and not e.value.retryable, name
    with pytest.raises(ServingError, match="HTTP 404.*Servable not found for request: Specific"):
        RestClient(server.rest_url, version=7).generate(["x"])
    with pytest.raises(ServingError, match="NOT_FOUND"):
        GrpcClient(server.grpc_target, model_name="other").generate(["x"])
    with pytest.raises(ServingError, match="(?s)HTTP 400.*one value per prompt"):
        RestClient(server.rest_url).generate(["a", "b"], Controls(seed=[1, 2, 3]))


@pytest.mark.slow
def test_timeout_is_honoured_and_not_retried(proxy):
    proxy.delay_s = 3.0
    for name, c in clients(proxy, timeout=0.5, retries=3).items():
        proxy.calls = 0
        t = time.monotonic()
        with pytest.raises(ServingError, match="timeout"):
            c.generate(["Today "], Controls(max_length=5))
        assert time.monotonic() - t < 2.0, name
        assert proxy.calls == 1, name


@pytest.mark.slow
def test_model_status(server):
    rest = RestClient(server.rest_url).status()
    assert rest["model_version_status"][0]["state"] == "AVAILABLE"
    assert rest["model_version_status"][0]["version"] == "1"
    grpc_status = GrpcClient(server.grpc_target).status()
    assert grpc_status["model_version_status"][0]["state"] == "AVAILABLE"


@pytest.mark.slow
def test_cli_generate_against_a_server(server, loaded):
    want = local_generate(loaded, ["Today ", "On Sunday "], max_length=20)
    addresses = (["--server", server.rest_url], ["--server", server.grpc_target, "--protocol", "grpc"])
    *answered, top_p, both = run_clis(  # all at once
        *[["generate", *address, "--model-name", "chargen", "--prompt", "Today ", "--prompt", "On Sunday ",
           "--max-length", 20, "--temperature", 0, "--json", "--timeout", 60] for address in addresses],
        ["generate", "--server", server.rest_url, "--top-p", 2],
        ["generate", "--server", server.rest_url, "--model", "x"])
    for r in answered:
        assert r.returncode == 0, r.stderr[-2000:]
        rows = [json.loads(line) for line in r.stdout.strip().splitlines()]
        assert [row["text"] for row in rows] == [t.decode() for t in want["text"]]
        assert [row["num_chars"] for row in rows] == list(want["num_chars"])
    r = top_p
    assert r.returncode == 2 and "top_p must be in (0, 1]" in r.stderr and "Traceback" not in r.stderr
    r = both
    assert r.returncode == 2 and "not allowed with argument" in r.stderr
