"""`tfchargen serve` as users run it: a subprocess on free ports over a real tiny export,
called over REST and gRPC (status, metadata, row and columnar predict, errors and their
codes), a new version exported while it serves, batching under 16 concurrent clients
compared with the SavedModel in this process, hostile requests, SIGTERM, and the page in
a headless browser."""

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

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from conftest import ROOT, run_cli
import fuzz_server  # tests/fuzz is on pytest's pythonpath (pyproject.toml)
from tfchargen import contract
from tfchargen import warmup as warmup_lib
from tfchargen.client import GrpcClient, RestClient, ServingError

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`python -m tfchargen serve ...` in a subprocess; waits until it answers."""

    def __init__(self, model, *flags, name="chargen"):
        self.port, self.grpc_port = free_port(), free_port()
        self.lines, self.name = [], name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfchargen", "serve", "--model", str(model), "--model-name", name,
             "--port", str(self.port), "--grpc-port", str(self.grpc_port), *map(str, flags)],
            cwd=ROOT, stderr=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(180):
            self.stop()
            raise AssertionError("server did not start:\n" + "\n".join(self.lines[-30:]))
        self.url, self.target = f"http://127.0.0.1:{self.port}", f"127.0.0.1:{self.grpc_port}"

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if " on REST " in line:
                self._ready.set()
        self._ready.set()

    def log(self, pattern) -> list[str]:
        return [line for line in self.lines if re.search(pattern, line)]

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
def server(base):
    s = Serve(base, "--poll-seconds", 0.5, "--read-timeout", 2)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return tf.saved_model.load(str(tiny_model / "1"))


def local(loaded, rows):
    """The SavedModel's generate signature in this process, each row ALONE."""
    outs = []
    for r in rows:
        out = loaded.signatures["generate"](
            prompt=tf.constant([r["prompt"]]), **{k: tf.constant([r[k]], tf.as_dtype(contract.GENERATE_INPUTS[k]))
                                                  for k in contract.CONTROLS})
        outs.append({k: v.numpy()[0] for k, v in out.items()})
    return outs


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
    want = local(loaded, rows)
    status, row_reply = http_json("POST", f"{server.url}/v1/models/chargen:predict",
                                  {"signature_name": "generate", "instances": rows})
    assert status == 200
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    status, col_reply = http_json("POST", f"{server.url}/v1/models/chargen/versions/1:predict",
                                  {"signature_name": "generate", "inputs": columns})
    assert status == 200
    for i, w in enumerate(want):
        assert row_reply["predictions"][i]["text"] == w["text"].decode()
        assert col_reply["outputs"]["text"][i] == w["text"].decode()
        assert col_reply["outputs"]["num_chars"][i] == w["num_chars"]
        assert np.float32(row_reply["predictions"][i]["log_prob"]) == w["log_prob"]
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
        ("POST", f"{u}/chargen:predict", [1, 2], 400, "not an object"),
        ("POST", f"{u}/chargen:predict", {"instances": [7]}, 400, "is not of expected type: string"),
        ("POST", f"{u}/chargen:predict", {"signature_name": "generate", "inputs": {"prompt": ["x"]}}, 400,
         "Missing named input: "),
        ("POST", f"{u}/chargen:predict", {"signature_name": "generate", "instances": [
            {"prompt": "x", "max_length": 5, "temperature": 1.0, "top_k": 0, "top_p": 2.0, "seed": 0}]}, 400,
         contract.MSG_TOP_P),
        ("POST", f"{u}/chargen:predict", {"signature_name": "nope", "instances": ["x"]}, 400,
         'Serving signature key "nope" not found'),
        ("POST", f"{u}/other:predict", {"instances": ["x"]}, 404, "Servable not found for request: Latest(other)"),
        ("POST", f"{u}/chargen/versions/9:predict", {"instances": ["x"]}, 404, "Specific(chargen, 9)"),
        ("GET", f"{u}/chargen/versions/9", None, 404, "Servable not found"),
        ("GET", f"{server.url}/nowhere", None, 404, "Malformed request"),
        ("POST", f"{u}/chargen:stream", {"prompt": "x"}, 404, "no streaming signatures"),
    ]
    for method, url, body, want_status, want_text in cases:
        status, reply = http_json(method, url, body)
        assert status == want_status and want_text in reply["error"], (url, body, status, reply)
    # A body over the limit is refused from its Content-Length, unread.
    status, reply = fuzz_server._post(urllib.parse.urlsplit(server.url), "/v1/models/chargen:predict", b"",
                                      content_length=(8 << 20) + 1)
    assert status == 413 and "over the limit" in json.loads(reply)["error"]
    g = GrpcClient(server.target, retries=0)
    with pytest.raises(ServingError, match=r"INVALID_ARGUMENT.*top_p must be in"):
        g.generate(["x"], top_p=2.0)
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


def test_a_new_version_is_loaded_warmed_up_and_switched_to_without_failing_requests(server, base, tiny_run):
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
        r = run_cli("export", "--run-dir", tiny_run, "--export-base", base, "--default-max-length", 3,
                    "--default-temperature", 0)
        assert r.returncode == 0, r.stderr[-2000:]
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
    records = len(warmup_lib.read_warmup(str(base / "2")))
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
    r = run_cli("serve", "--model", tmp_path / "missing")
    assert r.returncode == 2 and "tfchargen serve: error: no such model directory" in r.stderr
    assert "Traceback" not in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = run_cli("serve", "--model", tiny_model, "--port", s.getsockname()[1], "--grpc-port", 0)
    assert r.returncode == 2 and "tfchargen serve: error: cannot listen on 127.0.0.1" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("serve", "--model", empty, "--port", 0, "--grpc-port", 0)
    assert r.returncode == 2 and "no version of" in r.stderr
    r = run_cli("serve", "--model", tiny_model, "--versions", "x")
    assert r.returncode == 2 and "expected latest, all or comma-separated" in r.stderr


def test_sigterm_finishes_in_flight_requests_and_exits_0(tiny_model):
    s = Serve(tiny_model, "--versions", "all")
    results = []

    def long_request():
        try:
            c = RestClient(s.url, retries=0, timeout=120)
            results.append(c.generate(["Today "], max_length=2048, temperature=1.5, seed=3)["num_chars"][0])
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


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install -y chromium)")
def test_the_page_generates_in_a_headless_browser(server, loaded, tmp_path):
    status, html = http("GET", server.url + "/")
    assert status == 200 and b"<textarea" in html
    assert not re.search(rb'(src|href)\s*=|@import|https?://', html)  # self-contained: nothing from elsewhere
    want = local(loaded, [dict(prompt="On Sunday ", max_length=40, temperature=0.0, top_k=0, top_p=1.0, seed=0)])[0]
    # The page reads its controls from the query string and presses Generate itself.
    url = f"{server.url}/?prompt=On%20Sunday%20&temperature=0&max_length=40&run=generate"
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                        f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r'<textarea id="output" readonly="" data-done="1">(.*?)</textarea>', r.stdout, re.S)
    assert m, r.stdout[-2000:] + r.stderr[-2000:]
    import html as html_lib
    assert html_lib.unescape(m.group(1)) == want["text"].decode()
    assert server.log(r"^POST /v1/models/chargen:stream 404")  # tried streaming, fell back to :predict
    shot = tmp_path / "serve.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                    f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1000,820",
                    f"--screenshot={shot}", f"{server.url}/?seed=7&max_length=60&run=table"],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    if os.environ.get("TFCHARGEN_SAVE_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "serve.png")
