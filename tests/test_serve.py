"""`tfchargen serve` as users run it: a subprocess on free ports over a real tiny export,
called over REST and gRPC (status, metadata, row and columnar predict, errors and their
codes), a new version exported while it serves, batching under 16 concurrent clients
compared with the SavedModel in this process, hostile requests, SIGTERM, `:stream`'s
server-sent events, and the page in a headless browser."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent import futures

import fuzz_server  # tests/fuzz is on pytest's pythonpath (pyproject.toml)
import grpc
import numpy as np
import pytest
import tensorflow as tf
from browser import CHROMIUM, page_generate
from helpers import ROOT, run_clis, skip_or_fail
from tensorflow.core.framework import types_pb2

from tfchargen import contract
from tfchargen.contract import Controls
from tfchargen.savedmodel import warmup as warmup_lib
from tfchargen.serving.client import GrpcClient, RestClient, ServingError

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`python -m tfchargen serve ...` in a subprocess; waits until it answers (with
    ``wait=False``, until ``wait_ready()``: servers started together load at once)."""

    def __init__(self, model, *flags, name="chargen", wait=True):
        self.port, self.grpc_port = free_port(), free_port()
        self.lines, self.name = [], name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfchargen", "serve", "--model", str(model), "--model-name", name,
             "--port", str(self.port), "--grpc-port", str(self.grpc_port), *map(str, flags)],
            cwd=ROOT, stderr=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        self.url, self.target = f"http://127.0.0.1:{self.port}", f"127.0.0.1:{self.grpc_port}"
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=180):
        if not self._ready.wait(timeout):
            self.stop()
            raise AssertionError("server did not start:\n" + "\n".join(self.lines[-30:]))
        return self

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if " on REST " in line:
                self._ready.set()
        self._ready.set()

    def log(self, pattern) -> list[str]:
        return [line for line in self.lines if re.search(pattern, line)]

    def settled_count(self, pattern, quiet_s=1.0, timeout_s=15.0) -> int:
        """How many log lines match once none has arrived for ``quiet_s``: a request logs after
        its client has its answer, and the lines reach this process through a pipe."""
        count, since, deadline = len(self.log(pattern)), time.monotonic(), time.monotonic() + timeout_s
        while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
            time.sleep(0.1)
            if len(self.log(pattern)) != count:
                count, since = len(self.log(pattern)), time.monotonic()
        return count

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def http(method, url, body=None, headers=None):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_json(method, url, body=None):
    status, data = http(method, url, body)
    return status, json.loads(data)


@pytest.fixture(scope="module")
def base(tiny_model, tmp_path_factory):
    """A copy of the tiny export base the tests may add versions to."""
    path = tmp_path_factory.mktemp("serve") / "chargen"
    shutil.copytree(tiny_model, path)
    return path


@pytest.fixture(scope="module")
def servers(base, tiny_model):
    """Both servers of this module, started at once: the one most tests call (on ``base``)
    and the one test_sigterm_finishes_in_flight_requests_and_exits_0 stops."""
    started = {"server": Serve(base, "--poll-seconds", 0.5, "--read-timeout", 2, wait=False),
               "to_stop": Serve(tiny_model, "--versions", "all", wait=False)}
    yield started
    for s in started.values():
        s.stop()


@pytest.fixture(scope="module")
def server(servers):
    return servers["server"].wait_ready()


@pytest.fixture(scope="module")
def loaded(tiny_loaded):
    return tiny_loaded


def local(loaded, rows):
    """The SavedModel's generate signature in this process, each row ALONE."""
    return [local_batch(loaded, [r])[0] for r in rows]


def local_batch(loaded, rows):
    """The SavedModel's generate signature in this process, the rows in ONE call (the batch
    a server runs for a request alone)."""
    out = loaded.signatures["generate"](
        prompt=tf.constant([r["prompt"] for r in rows]),
        **{k: tf.constant([r[k] for r in rows], tf.as_dtype(contract.GENERATE_INPUTS[k])) for k in contract.CONTROLS})
    out = {k: v.numpy() for k, v in out.items()}
    return [{k: v[i] for k, v in out.items()} for i in range(len(rows))]


def test_status_metadata_and_predict_row_columnar_grpc(server, loaded):
    status, body = http_json("GET", f"{server.url}/v1/models/chargen")
    assert status == 200 and body == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert http_json("GET", f"{server.url}/v1/models/chargen/versions/1")[1] == body

    status, meta = http_json("GET", f"{server.url}/v1/models/chargen/metadata")
    assert status == 200 and meta["model_spec"] == {"name": "chargen", "signature_name": "", "version": "1"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    for name, (inputs, outputs) in contract.SIGNATURES.items():
        assert sigs[name]["method_name"] == "tensorflow/serving/predict"
        got = {k: v["dtype"] for k, v in sigs[name]["inputs"].items()}
        assert got == {k: types_pb2.DataType.Name(tf.as_dtype(d).as_datatype_enum) for k, d in inputs.items()}, name
        assert set(sigs[name]["outputs"]) == set(outputs)

    rows = [dict(prompt=p, max_length=20, temperature=t, top_k=0, top_p=1.0, seed=s)
            for p, t, s in [("Today ", 0.0, 0), ("On Sunday ", 0.9, 5), ("", 1.2, 11)]]
    want, batched = local(loaded, rows), local_batch(loaded, rows)
    status, row_reply = http_json("POST", f"{server.url}/v1/models/chargen:predict",
                                  {"signature_name": "generate", "instances": rows})
    assert status == 200
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    status, col_reply = http_json("POST", f"{server.url}/v1/models/chargen/versions/1:predict",
                                  {"signature_name": "generate", "inputs": columns})
    assert status == 200
    for i, (w, b) in enumerate(zip(want, batched)):
        assert row_reply["predictions"][i]["text"] == w["text"].decode()
        assert col_reply["outputs"]["text"][i] == w["text"].decode()
        assert col_reply["outputs"]["num_chars"][i] == w["num_chars"]
        # float32 survives JSON exactly: the same batch in this process gives the same bits
        # (alone, a row's log-prob may differ in the last bits: the CPU matmul rounds by batch size).
        assert np.float32(row_reply["predictions"][i]["log_prob"]) == b["log_prob"]
        assert np.float32(col_reply["outputs"]["log_prob"][i]) == b["log_prob"]
        np.testing.assert_allclose(b["log_prob"], w["log_prob"], rtol=1e-5, atol=1e-4)
    # serving_default: one input, so the row format is a plain list; {"b64"} strings decode.
    status, reply = http_json("POST", f"{server.url}/v1/models/chargen:predict",
                              {"instances": [{"b64": "VG9kYXkg"}, "On Sunday "]})
    assert status == 200 and [p["text"][:len(w)] for p, w in zip(reply["predictions"], ["Today ", "On Sunday "])] \
        == ["Today ", "On Sunday "]

    g = GrpcClient(server.target)
    out = g.predict({k: [r[k] for r in rows] for k in rows[0]}, "generate")
    assert [t.decode() for t in out["text"]] == [w["text"].decode() for w in want]
    assert g.status()["model_version_status"][0]["state"] == "AVAILABLE"
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.target))
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "chargen"
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(req, timeout=30).metadata["signature_def"].Unpack(sig_map)
    assert set(contract.SIGNATURES) <= set(sig_map.signature_def)
    assert server.log(r"^POST /v1/models/chargen:predict 200 rows=3 [\d.]+ms$")
    assert server.log(r"^GRPC Predict OK rows=3 [\d.]+ms$")


def test_errors_have_tf_servings_codes(server):
    u = f"{server.url}/v1/models"
    cases = [  # (method, url, body, HTTP status, part of the error)
        ("POST", f"{u}/chargen:predict", b"{not json", 400, "JSON Parse error"),
        ("POST", f"{u}/chargen:predict", b"", 400, "document is empty"),
        ("POST", f"{u}/chargen:predict", [1, 2], 400, "Is not object"),
        ("POST", f"{u}/chargen:predict", {"instances": [7]}, 400, "is not of expected type: string"),
        ("POST", f"{u}/chargen:predict", {"signature_name": "generate", "inputs": {"prompt": ["x"]}}, 400,
         "Missing named input: "),
        ("POST", f"{u}/chargen:predict", {"signature_name": "generate", "instances": [
            {"prompt": "x", "max_length": 5, "temperature": 1.0, "top_k": 0, "top_p": 2.0, "seed": 0}]}, 400,
         contract.MSG_TOP_P),
        ("POST", f"{u}/chargen:predict", {"signature_name": "nope", "instances": ["x"]}, 400,
         'Serving signature name: "nope" not found in signature def'),
        ("POST", f"{u}/other:predict", {"instances": ["x"]}, 404, "Servable not found for request: Latest(other)"),
        ("POST", f"{u}/chargen/versions/9:predict", {"instances": ["x"]}, 404, "Specific(chargen, 9)"),
        ("GET", f"{u}/chargen/versions/9", None, 404, "Could not find version 9 of model chargen"),
        ("GET", f"{u}/chargen/nowhere", None, 400, "Malformed request: GET /v1/models/chargen/nowhere"),
        ("POST", f"{u}/chargen:classify", {"examples": [{"x": 1}]}, 400, "Expected one or two output Tensors"),
        ("PUT", f"{u}/chargen", {}, 400, "Malformed request: PUT /v1/models/chargen"),
        ("POST", f"{u}/chargen:stream", {"prompt": "x"}, 400, "Missing 'inputs' or 'instances' key"),
    ]
    for method, url, body, want_status, want_text in cases:
        status, reply = http_json(method, url, body)
        assert status == want_status and want_text in reply["error"], (url, body, status, reply)
    status, page = http("GET", f"{server.url}/nowhere")  # outside /v1/: TF Serving's (libevent's) 404 page
    assert status == 404 and b"<TITLE>404 Not Found</TITLE>" in page
    # A body over the limit is refused from its Content-Length, unread.
    status, reply = fuzz_server._post(urllib.parse.urlsplit(server.url), "/v1/models/chargen:predict", b"",
                                      content_length=(8 << 20) + 1)
    assert status == 413 and "over the limit" in json.loads(reply)["error"]
    g = GrpcClient(server.target, retries=0)
    with pytest.raises(ServingError, match=r"INVALID_ARGUMENT.*top_p must be in"):
        g.generate(["x"], Controls(top_p=2.0))
    with pytest.raises(ServingError, match="NOT_FOUND"):
        GrpcClient(server.target, model_name="other", retries=0).generate(["x"])
    with pytest.raises(ServingError, match="FAILED_PRECONDITION"):
        g.predict({"prompt": ["x"]}, "nope")
    with pytest.raises(ServingError, match="INVALID_ARGUMENT.*Missing but required: {max_length"):
        g.predict({"prompt": ["x"]}, "generate")
    assert http_json("GET", f"{server.url}/v1/models/chargen")[0] == 200  # still serving


def test_batching_is_invisible_under_16_concurrent_clients(server, loaded):
    # Seeded, greedy and unseeded rows, four max_length buckets, one and several rows per request.
    reqs = []
    for i in range(64):
        n = 1 + i % 3
        reqs.append([dict(prompt=["Today ", "On Sunday ", "Oil ", ""][(i + j) % 4], max_length=[5, 30, 70, 140][i % 4],
                          temperature=[0.0, 0.8, 1.3][(i + j) % 3], top_k=[0, 5][i % 2], top_p=[1.0, 0.9][j % 2],
                          seed=0 if (i + j) % 7 == 6 else 1000 + i * 3 + j) for j in range(n)])
    before = metrics(server)
    clients = [RestClient(server.url) if c % 2 else GrpcClient(server.target) for c in range(16)]

    def send(i):
        rows = reqs[i]
        return clients[i % 16].predict({k: [r[k] for r in rows] for k in rows[0]}, "generate")

    with futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(send, range(len(reqs))))
    after = metrics(server)
    for rows, out in zip(reqs, got):
        want = local(loaded, rows)
        for j, (r, w) in enumerate(zip(rows, want)):
            if r["seed"] == 0 and r["temperature"] > 0:  # unseeded: only the contract holds
                assert out["text"][j].startswith(r["prompt"].encode()) and out["num_chars"][j] <= r["max_length"]
                continue
            assert out["text"][j] == w["text"], (r, out["text"][j], w["text"])
            assert out["num_chars"][j] == w["num_chars"] and out["ended_with_eos"][j] == w["ended_with_eos"]
            np.testing.assert_allclose(out["log_prob"][j], w["log_prob"], rtol=1e-5, atol=1e-4)
    batches = after["batches"] - before["batches"]
    rows = after["rows"] - before["rows"]
    assert rows == sum(len(r) for r in reqs)
    assert batches < len(reqs), f"no request was merged: {batches} calls for {len(reqs)} requests"


def metrics(server) -> dict:
    status, text = http("GET", f"{server.url}/monitoring/prometheus/metrics")
    assert status == 200
    total = {"batches": 0, "rows": 0}
    for line in text.decode().splitlines():
        m = re.match(r'tfchargen_(batches|batched_rows)_total\{.*signature="generate".*\} (\d+)', line)
        if m:
            total["batches" if m.group(1) == "batches" else "rows"] += int(m.group(2))
    return total


def test_hostile_requests_1000_fuzzed_then_good_requests_succeed(server):
    result = fuzz_server.fuzz(server.url, "chargen", cases=1000, seed=1)
    assert result["violations"] == [], result["violations"][:5]
    assert result["by_kind"]["good_ok"] == 1000
    # A slow client (headers, then nothing) is cut off after --read-timeout with a 408.
    t = time.monotonic()
    reply = fuzz_server._raw(urllib.parse.urlsplit(server.url),
                             b"POST /v1/models/chargen:predict HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
    assert b" 408 " in reply.split(b"\r\n")[0] and time.monotonic() - t < 30
    assert http_json("GET", f"{server.url}/v1/models/chargen")[0] == 200


def test_the_rest_client_keeps_its_connection_and_replaces_one_the_server_closed(server):
    c = RestClient(server.url, retries=0)
    want = c.generate(["Today "], Controls(max_length=8, temperature=0.0))["text"]
    (conn,) = c._idle
    port = conn.sock.getsockname()[1]
    assert c.generate(["Today "], Controls(max_length=8, temperature=0.0))["text"] == want
    assert c._idle == [conn] and conn.sock.getsockname()[1] == port  # the same TCP connection
    time.sleep(3)  # past the server's --read-timeout: it closes the idle connection
    assert c.generate(["Today "], Controls(max_length=8, temperature=0.0))["text"] == want  # no retry needed
    c.close()


def test_a_new_version_is_loaded_warmed_up_and_switched_to_without_failing_requests(server, base, tiny_model_v2):
    """Version 2 (a `tfchargen export` of the run with a default max_length of 3, made in the
    background) appears in the served base under traffic the way the export publishes a
    version: written aside as `.tmp-*`, then renamed to its number (the rename is atomic)."""
    stop, failures, done = threading.Event(), [], [0]

    def traffic():
        c = RestClient(server.url, retries=0)
        while not stop.is_set():
            try:
                c.predict({"prompt": ["Today "]})
                done[0] += 1
            except ServingError as e:
                failures.append(str(e))

    threads = [threading.Thread(target=traffic) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        aside = base / f".tmp-{os.getpid()}"
        shutil.copytree(tiny_model_v2, aside)
        os.rename(aside, base / "2")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            versions = [s["version"] for s in http_json("GET", f"{server.url}/v1/models/chargen")[1]
                        ["model_version_status"] if s["state"] == "AVAILABLE"]
            if versions == ["2"]:
                break
            time.sleep(0.3)
        assert versions == ["2"], versions
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and done[0] > 0
    records = len(warmup_lib.read_warmup(str(base / "2")))  # every signature's, start and continue too
    assert records > 0 and server.log(rf"loaded chargen version 2 \({records} warmup requests")
    assert server.log(r"unloaded chargen version 1")
    out = RestClient(server.url).predict({"prompt": ["Today "]})  # version 2's default max_length 3
    assert out["num_chars"][0] <= 3
    # Version 2 removed from disk: version 1 comes back, 2 is unloaded.
    shutil.rmtree(base / "2")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not server.log("unloaded chargen version 2"):
        time.sleep(0.3)
    assert server.log("unloaded chargen version 2")
    status = http_json("GET", f"{server.url}/v1/models/chargen/versions/1")[1]
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_cli_errors_are_one_line_exit_2(tiny_model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with socket.socket() as s:  # a port in use while the commands run (all at once)
        s.bind(("127.0.0.1", 0))
        s.listen()
        missing, taken, no_version, bad_versions = run_clis(
            ["serve", "--model", tmp_path / "missing"],
            ["serve", "--model", tiny_model, "--port", s.getsockname()[1], "--grpc-port", 0],
            ["serve", "--model", empty, "--port", 0, "--grpc-port", 0],
            ["serve", "--model", tiny_model, "--versions", "x"])
    r = missing
    assert r.returncode == 2 and "tfchargen serve: error: no such model directory" in r.stderr
    assert "Traceback" not in r.stderr
    r = taken
    assert r.returncode == 2 and "tfchargen serve: error: cannot listen on 127.0.0.1" in r.stderr
    r = no_version
    assert r.returncode == 2 and "no version of" in r.stderr
    r = bad_versions
    assert r.returncode == 2 and "expected latest, all or comma-separated" in r.stderr


def test_sigterm_finishes_in_flight_requests_and_exits_0(servers):
    s = servers["to_stop"].wait_ready()
    results = []

    def long_request():
        try:
            c = RestClient(s.url, retries=0, timeout=120)
            results.append(c.generate(["Today "], Controls(max_length=2048, temperature=1.5, seed=3))["num_chars"][0])
        except ServingError as e:
            results.append(e.code)

    t = threading.Thread(target=long_request)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(60) == 0
    t.join()
    assert time.monotonic() - t0 < 30
    assert len(results) == 1 and (isinstance(results[0], (int, np.integer)) or results[0] == "HTTP 503"), results
    assert s.log("tfchargen serve: stopped")




def sse(body, url):
    """POST body to url's :stream -> (status, content type, [(event, data)] or the JSON error)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            status, ctype, raw = r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), json.loads(e.read())
    events = []
    for block in raw.split("\n\n"):
        if not block:
            continue
        lines = block.split("\n")
        name = next((line[6:].strip() for line in lines if line.startswith("event:")), None)
        events.append((name, json.loads("\n".join(line[5:] for line in lines if line.startswith("data:")))))
    return status, ctype, events


def by_row(events, n):
    """[(text, continuation, data events, done event)] per row of a :stream reply."""
    rows = []
    for i in range(n):
        data = [d for e, d in events if e is None and d["index"] == i]
        (done,) = [d for e, d in events if e == "done" and d["index"] == i]
        rows.append(("".join(d["text"] for d in data), "".join(d["continuation"] for d in data), data, done))
    return rows


def test_stream_events_concatenate_to_generate_for_rows_and_columns(server, loaded):
    rows = [dict(prompt=p, max_length=n, temperature=t, top_k=k, top_p=tp, seed=sd)
            for p, n, t, k, tp, sd in [("Today ", 40, 0.0, 0, 1.0, 0), ("On Sunday ", 33, 0.9, 5, 1.0, 5),
                                       ("", 25, 1.2, 0, 0.9, 11)]]
    want = local(loaded, rows)
    url = f"{server.url}/v1/models/chargen:stream"
    for body in ({"signature_name": "generate", "instances": rows, "chunk": 7},
                 {"inputs": {k: [r[k] for r in rows] for k in rows[0]}, "chunk": 7}):
        status, ctype, events = sse(body, url)
        assert status == 200 and ctype.startswith("text/event-stream"), (status, events)
        assert [e for e, _ in events[-3:]] == ["done"] * 3  # the totals come last
        for (text, continuation, data, done), w in zip(by_row(events, 3), want):
            assert text == w["text"].decode() and continuation == w["continuation"].decode()
            assert len(data) == -(-w["num_chars"] // 7) and all(d["num_chars"] <= 7 for d in data)
            assert done["num_chars"] == w["num_chars"] and done["ended_with_eos"] == w["ended_with_eos"]
            np.testing.assert_allclose(done["log_prob"], w["log_prob"], rtol=1e-5, atol=1e-4)
    # One row, the default chunk; generate's own max_length cap does not apply to a stream.
    status, _, events = sse({"instances": [dict(rows[0], max_length=2500)]}, url)
    (text, _, data, done), = by_row(events, 1)
    first = local(loaded, [dict(rows[0], max_length=2048)])[0]
    assert status == 200 and text.startswith(first["text"].decode())
    assert done["num_chars"] == 2500 or done["ended_with_eos"], done
    assert len(text) == len("Today ") + done["num_chars"] and len(data) == -(-done["num_chars"] // 32)
    assert server.log(r"^POST /v1/models/chargen:stream 200 rows=3 events=\d+ [\d.]+ms$")


def test_stream_refuses_bad_requests_before_any_event(server):
    url = f"{server.url}/v1/models/chargen:stream"
    row = dict(prompt="x", max_length=5, temperature=1.0, top_k=0, top_p=1.0, seed=0)
    for body, want in [({"instances": [dict(row, top_p=2.0)]}, contract.MSG_TOP_P),
                       ({"instances": [dict(row, max_length=-1)]}, contract.MSG_MAX_LENGTH_LOW),
                       ({"instances": [row], "chunk": 0}, "'chunk' must be an integer in 1..2048"),
                       ({"instances": [row], "chunk": 4096}, "'chunk' must be an integer in 1..2048"),
                       ({"instances": [row], "signature_name": "score"}, ":stream runs the generate signature"),
                       ({"instances": [{"prompt": "x"}]}, "keys must be equal to")]:
        status, ctype, reply = sse(body, url)
        assert status == 400 and ctype == "application/json" and want in reply["error"], (body, reply)
    status, _, reply = sse({"instances": [row]}, f"{server.url}/v1/models/other:stream")
    assert status == 404 and "Servable not found" in reply["error"]


def test_a_client_that_disconnects_mid_stream_leaves_the_server_serving(server):
    body = json.dumps({"instances": [dict(prompt="Today ", max_length=100_000, temperature=0.0, top_k=0,
                                          top_p=1.0, seed=0)], "chunk": 1}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
        s.sendall(b"POST /v1/models/chargen:stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        got = b""
        while b"\n\n" not in got.partition(b"\r\n\r\n")[2]:  # the headers and the first event
            data = s.recv(4096)
            assert data, got
            got += data
        assert b" 200 " in got.split(b"\r\n")[0] and b"text/event-stream" in got
    deadline = time.monotonic() + 60  # the server notices at its next writes and stops that stream
    while time.monotonic() < deadline and not server.log(r"^POST /v1/models/chargen:stream 499 "):
        time.sleep(0.2)
    (line,) = server.log(r"^POST /v1/models/chargen:stream 499 ")
    assert int(re.search(r"events=(\d+)", line).group(1)) < 100_000
    assert RestClient(server.url, retries=0).generate(["Today "], Controls(max_length=5))["num_chars"][0] <= 5
    status, _, events = sse({"instances": [dict(prompt="x", max_length=3, temperature=0.0, top_k=0, top_p=1.0,
                                                seed=0)]}, f"{server.url}/v1/models/chargen:stream")
    assert status == 200 and events[-1][0] == "done"


def test_generate_stream_through_the_server_prints_what_generate_prints(server):
    args = ["generate", "--server", server.url, "--prompt", "Today ", "--temperature", 0.9, "--seed", 21,
            "--max-length", 150]
    before = server.settled_count(r"^POST /v1/models/chargen:stream 200")  # earlier tests' streams logged
    one, streamed = run_clis(args, [*args, "--stream", "--chunk", 16])  # at once: only one streams
    assert one.returncode == 0 and streamed.returncode == 0, streamed.stderr[-2000:]
    assert streamed.stdout == one.stdout and len(one.stdout) > len("Today ") + 1
    assert server.settled_count(r"^POST /v1/models/chargen:stream 200") == before + 1  # one request, not 10
    # Streams as RestClient.stream yields them; the start/continue path gives the same chunks.
    kw = dict(controls=Controls(max_length=60, temperature=1.0, seed=4), chunk=16)
    assert list(RestClient(server.url).stream("Today ", **kw)) == list(RestClient(server.url, sse=False)
                                                                       .stream("Today ", **kw))


def test_stream_is_404_for_a_model_without_start_and_continue(loaded, tmp_path):
    from tfchargen.serving.server import Server

    base = tmp_path / "nostream"
    tf.saved_model.save(loaded, str(base / "1"), signatures={k: loaded.signatures[k]
                                                             for k in ("serving_default", "generate", "score")})
    with Server(str(base), "chargen", port=0, grpc_port=None) as s:
        row = dict(prompt="Today ", max_length=30, temperature=0.0, top_k=0, top_p=1.0, seed=0)
        status, _, reply = sse({"instances": [row]}, f"{s.rest_url}/v1/models/chargen:stream")
        assert status == 404 and "no streaming signatures (start, continue): use :predict" in reply["error"]
        # RestClient.stream falls back to start/continue... which this model lacks: a clear error.
        with pytest.raises(ServingError, match='Serving signature name: "start" not found in signature def'):
            list(RestClient(s.rest_url, retries=0).stream("Today "))
        if CHROMIUM is None:
            skip_or_fail("no chromium installed (apt-get install -y chromium); CI=true makes this a failure")
        text, chunks, status = page_generate(f"{s.rest_url}/?{urllib.parse.urlencode({**row, 'run': 'generate'})}",
                                             tmp_path / "profile")
        assert text == local(loaded, [row])[0]["text"].decode() and status.endswith("(:predict)") and chunks == 0



def test_the_page_streams_in_a_headless_browser(server, loaded, tmp_path):
    if CHROMIUM is None:
        skip_or_fail("no chromium installed (apt-get install -y chromium); CI=true makes this a failure")
    status, html = http("GET", server.url + "/")
    assert status == 200 and b"<textarea" in html
    assert not re.search(rb'(src|href)\s*=|@import|https?://', html)  # self-contained: nothing from elsewhere
    row = dict(prompt="On Sunday ", max_length=300, temperature=0.8, top_k=0, top_p=1.0, seed=7)
    want = local(loaded, [row])[0]
    # The page reads its controls from the query string and presses Generate itself.
    before = len(server.log(r"^POST /v1/models/chargen:stream 200"))
    query = urllib.parse.urlencode({**row, "run": "generate"})
    shot = tmp_path / "serve.png"
    text, chunks, status = page_generate(f"{server.url}/?{query}", tmp_path / "profile", shot)
    assert text == want["text"].decode(), status
    assert status.endswith("(:stream)") and chunks == -(-want["num_chars"] // 16) > 1  # arrived in pieces
    assert len(server.log(r"^POST /v1/models/chargen:stream 200")) == before + 1
    assert shot.exists() and shot.stat().st_size > 10_000
    if os.environ.get("TFCHARGEN_SAVE_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "serve.png")
