"""`tfchargen serve` as a drop-in tensorflow_model_server: its flags, its text-proto config
files (ModelServerConfig with several models, version policies and labels;
BatchingParameters; MonitoringConfig), the XLA rule, the gRPC health service, and the files
in serving/ run unchanged. The fast tests read files and flags; the slow ones serve random-weight
exports over real ports."""

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
import urllib.request

import numpy as np
import pytest
from helpers import ROOT

from tfchargen.cli import app
from tfchargen.serving import batching, model_config, tf_flags
from tfchargen.serving.config import ServerConfig, add_arguments

SERVING = ROOT / "serving"


def parse(*flags):
    import argparse

    return add_arguments(argparse.ArgumentParser()).parse_args([str(f) for f in flags])


def write(path, text):
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------- files and flags (fast)


def test_the_serving_files_read_as_tf_servings_text_protos():
    (spec,) = model_config.read_model_config(str(SERVING / "models.config"))
    assert (spec.name, spec.base_path, spec.policy, spec.labels) == ("chargen", "/models/chargen", ("latest", 2), {})
    b = model_config.read_batching_parameters(str(SERVING / "batching_parameters.txt"))
    assert (b.max_batch_size, b.batch_timeout_micros, b.num_batch_threads, b.max_enqueued_batches) == (256, 2000, 4, 8)
    assert b.allowed_batch_sizes == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert model_config.read_monitoring_config(str(SERVING / "monitoring.config")) == "/monitoring/prometheus/metrics"


def test_model_config_policies_and_labels(tmp_path):
    path = write(tmp_path / "m.config", """model_config_list {
      config { name: "a" base_path: "/x/a" model_platform: "tensorflow"
               model_version_policy { specific { versions: 3 versions: 1 } }
               version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 3 } }
      config { name: "b" base_path: "/x/b" model_version_policy { all {} } }
      config { name: "c" base_path: "/x/c" } }""")
    a, b, c = model_config.read_model_config(path)
    assert (a.policy, a.labels) == ((1, 3), {"stable": 1, "canary": 3})
    assert (b.policy, c.policy) == ("all", ("latest", 1))


@pytest.mark.parametrize("kind, text, message", [
    ("model", 'model_config_list { config { name: "a" base_path: "/a" } config { name: "a" base_path: "/b" } }',
     "Illegal to list model a multiple times in config list"),
    ("model", 'model_config_list { config { name: "a" base_path: "models/a" } }',
     "Expected model a to have an absolute path or URI; got base_path()=models/a"),
    ("model", 'model_config_list { config { name: "a" base_path: "/a" model_platform: "pytorch" } }',
     "model_platform 'pytorch' is not served"),
    ("model", 'model_config_list { config { nam: "a" } }', "is not a ModelServerConfig text proto"),
    ("model", "", "no model in model_config_list"),
    ("batching", "max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 4",
     "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8"),
    ("batching", "max_batch_size { value: 4 } allowed_batch_sizes: 4 allowed_batch_sizes: 2 allowed_batch_sizes: 4",
     "allowed_batch_sizes entries must be monotonically increasing"),
    ("batching", "max_batch_size: 8", "is not a BatchingParameters text proto"),
    ("monitoring", 'prometheus_config { enable: true path: "metrics" }', "path must start with /"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, kind, text, message):
    read = {"model": model_config.read_model_config, "batching": model_config.read_batching_parameters,
            "monitoring": model_config.read_monitoring_config}[kind]
    with pytest.raises(ValueError) as e:
        read(write(tmp_path / "f.txt", text))
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_tf_serving_flags_mean_what_they_mean_in_tensorflow_model_server(tmp_path):
    base = str(tmp_path)
    ours = ServerConfig.from_args(parse("--model", base, "--port", 9001))
    assert (ours.port, ours.grpc_port, ours.host, ours.max_batch, ours.xla) == (9001, 8500, "127.0.0.1", 64, True)
    tfs = ServerConfig.from_args(parse("--model_base_path", base, "--port=9001"))
    assert (tfs.grpc_port, tfs.port, tfs.host, tfs.max_batch, tfs.xla, tfs.metrics_path) == \
        (9001, None, "0.0.0.0", 1, False, None)
    assert (tfs.model_name, tfs.poll_seconds, tfs.warmup, tfs.health) == ("default", 1, True, False)
    batching_file = write(tmp_path / "b.txt", "max_batch_size { value: 4 } max_enqueued_batches { value: 2 }")
    tfs = ServerConfig.from_args(parse(
        "--model_base_path", base, "--model_name", "m", "--rest_api_port", 9002, "--enable_batching",
        f"--batching_parameters_file={batching_file}", "--xla_cpu_compilation_enabled=true",
        "--enable_grpc_healthcheck_service=true", "--file_system_poll_wait_seconds=0", "--enable_model_warmup=false"))
    assert (tfs.model_name, tfs.port, tfs.grpc_port, tfs.max_batch, tfs.max_enqueued_batches, tfs.batch_timeout_ms) \
        == ("m", 9002, 8500, 4, 2, 0)
    assert (tfs.xla, tfs.health, tfs.poll_seconds, tfs.warmup) == (True, True, 0, False)
    assert ServerConfig.from_args(parse("--model_base_path", base, "--enable_batching")).max_batch == 1000


@pytest.mark.parametrize("flags, message", [
    (["--model_base_path", "/nowhere/x"], "no such export base: /nowhere/x"),
    (["--model_base_path", "relative"], "Expected model default to have an absolute path or URI"),
    (["--model_base_path", "BASE", "--grpc-port", "1"], "replace --grpc-port (use --port)"),
    (["--model_base_path", "BASE", "--max-batch", "4"], "replace --max-batch"),
    (["--model_base_path", "BASE", "--port=0"], "At least one of server_options.grpc_port"),
    (["--model_base_path", "BASE", "--batching_parameters_file=x"], "without setting server_options.enable_batching"),
    (["--model_config_file=/nowhere.config"], "--model_config_file: cannot read /nowhere.config"),
    (["--enable_batching=maybe", "--model_base_path", "BASE"], "expected true or false"),
])
def test_bad_tf_serving_command_lines_are_one_line_errors_exit_2(tmp_path, capsys, flags, message):
    flags = [f.replace("BASE", str(tmp_path)) for f in flags]
    assert app.main(["serve", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfchargen serve: ") and message in err and "\n" not in err, err


def test_version_prints_tensorflow_model_servers_two_lines(capsys):
    assert app.main(["serve", "--version"]) == 0
    out = capsys.readouterr().out
    assert re.match(r"TensorFlow ModelServer: tfchargen serve \S+\nTensorFlow Library: 2\.", out), out
    assert tf_flags.version_text().count("\n") == 1


def test_a_full_queue_is_refused_at_once_and_batches_pad_to_allowed_sizes():
    seen, gate = [], threading.Event()

    def fn(inputs):
        gate.wait(10)
        seen.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}

    b = batching.Batcher(fn, max_batch=4, timeout_s=0.001, threads=1, max_enqueued_batches=1,
                         allowed_batch_sizes=(2, 4))
    try:
        first = b.submit({"x": np.array([1])})  # taken by the one thread, which waits at the gate
        time.sleep(0.2)
        queued = [b.submit({"x": np.array([i])}) for i in (2, 3, 4)]  # one batch of 3 rows waits
        with pytest.raises(batching.QueueFull, match=batching.QUEUE_FULL):
            b.submit({"x": np.array([5, 6])})  # would need a second batch
        with pytest.raises(batching.QueueFull):
            b.submit({"x": np.array([1, 2, 3, 4])})  # a batch of its own
        gate.set()
        assert first.result(10)["y"].tolist() == [2]
        assert [f.result(10)["y"].tolist() for f in queued] == [[4], [6], [8]]
    finally:
        gate.set()
        b.stop()
    assert seen == [2, 4]  # 1 row padded to 2, 3 rows to 4; each request got only its rows


def test_labels_follow_server_cores_rule():
    from tfchargen.serving.models import check_labels

    check_labels("m", {"a": 1, "b": 2}, {1, 2}, {}, False)
    check_labels("m", {"a": 1, "c": 9}, {1}, {"a": 1}, True)  # a new label may name any version
    for labels, existing, allow in (({"c": 9}, {}, False), ({"a": 9}, {"a": 1}, True)):  # a moved one may not
        with pytest.raises(ValueError, match="Request to assign label to version 9 of model m, which is not"):
            check_labels("m", labels, {1, 2}, existing, allow)


# ------------------------------------------------------------------- real servers (slow)


@pytest.fixture(scope="module")
def exports(never_ending_model, never_ending_xla):
    """{"plain": version dir, "xla": version dir}: one random-weight model (that never ends a
    text: every row runs to its max_length) exported plain and with jit_compile (`tfchargen
    export --xla`)."""
    return {"plain": str(never_ending_model / "1"), "xla": str(never_ending_xla / "1")}


def base_of(tmp_path, name, **versions):
    """An export base ``tmp_path/name`` holding the given versions (copies of export dirs)."""
    for v, src in versions.items():
        shutil.copytree(src, tmp_path / name / v.lstrip("v"))
    return str(tmp_path / name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def generate_body(prompt="Today ", max_length=20):
    return {"signature_name": "generate", "instances": [
        {"prompt": prompt, "max_length": max_length, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 1}]}


def grpc_call(target, method, request):
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = (model_service_pb2_grpc.ModelServiceStub if method == "GetModelStatus"
                else prediction_service_pb2_grpc.PredictionServiceStub)(channel)
        return getattr(stub, method)(request, timeout=60)


def health(target, service=""):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def start(*flags, host="127.0.0.1"):
    """An in-process Server of tensorflow_model_server's flags (ports: free ones)."""
    from tfchargen.serving.server import Server

    args = parse(f"--port={free_port()}", f"--rest_api_port={free_port()}", "--host", host, *flags)
    return Server.from_config(ServerConfig.from_args(args)).start()


def status(server, name):
    code, body = http("GET", f"{server.rest_url}/v1/models/{name}")
    return code, {int(s["version"]): s["state"] for s in json.loads(body).get("model_version_status", [])} \
        if code == 200 else json.loads(body)["error"]


@pytest.mark.slow
def test_two_models_of_one_config_with_labels_health_metrics_and_reload(exports, tmp_path):
    from tensorflow_serving.apis import get_model_status_pb2

    from tfchargen.serving.errors import ServerError

    a = base_of(tmp_path, "a", v1=exports["plain"], v2=exports["plain"])
    b = base_of(tmp_path, "b", v7=exports["plain"])
    text = """model_config_list {
      config { name: "chargen" base_path: "%s" model_platform: "tensorflow"
               model_version_policy { specific { versions: 1 versions: 2 } }
               version_labels { key: "stable" value: %d } version_labels { key: "canary" value: 2 } }
      %s }"""
    other = f'config {{ name: "other" base_path: "{b}" }}'
    config = write(tmp_path / "models.config", text % (a, 1, other))
    monitoring = write(tmp_path / "monitoring.config", 'prometheus_config { enable: true path: "/metrics/here" }')
    server = start(f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1",
                   f"--monitoring_config_file={monitoring}", "--enable_grpc_healthcheck_service=true",
                   "--enable_batching=true", "--enable_model_warmup=false",
                   "--allow_version_labels_for_unavailable_models=true")
    try:
        assert status(server, "chargen") == (200, {2: "AVAILABLE", 1: "AVAILABLE"})
        assert status(server, "other") == (200, {7: "AVAILABLE"})
        assert status(server, "nope") == (404, "Could not find any versions of model nope")
        code, html = http("GET", f"{server.rest_url}/", None)
        assert code == 200 and 'const modelNames = ["chargen", "other"];' in html  # the page's model picker
        code, body = http("POST", f"{server.rest_url}/v1/models/nope:predict", generate_body())
        assert (code, json.loads(body)) == (404, {"error": "Servable not found for request: Latest(nope)"})
        texts = {name: json.loads(http("POST", f"{server.rest_url}/v1/models/{name}:predict", generate_body())[1])
                 for name in ("chargen", "other")}
        assert texts["chargen"] == texts["other"] and texts["chargen"]["predictions"][0]["num_chars"] == 20
        models = server.models
        assert [models.get("chargen", label=x).version for x in ("stable", "canary")] == [1, 2]
        assert models.metadata("chargen", label="canary").model_spec.version.value == 2
        for name in ("chargen", "nope"):  # ServerCore resolves the label before the name
            with pytest.raises(ServerError) as e:
                models.get(name, label="beta")
            assert (e.value.code, e.value.message) == ("INVALID_ARGUMENT", "Unrecognized servable version label: beta")
        # GetModelStatusImpl ignores version_label: every version.
        assert [s.version for s in models.status("chargen", label="beta").model_version_status] == [2, 1]
        with pytest.raises(ServerError, match="^Could not find version 9 of model chargen$"):
            models.status("chargen", 9)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "other"
        assert [s.version for s in grpc_call(server.grpc_target, "GetModelStatus", request).model_version_status] == [7]
        assert [health(server.grpc_target, s) for s in ("", "ModelService", "PredictionService")] == ["SERVING"] * 3
        code, metrics = http("GET", f"{server.rest_url}/metrics/here")
        assert code == 200 and 'model="other",version="7",signature="generate"' in metrics, metrics
        assert http("GET", f"{server.rest_url}/monitoring/prometheus/metrics")[0] == 404

        write(tmp_path / "models.config", text % (a, 2, ""))  # "other" goes, "stable" moves to 2
        deadline = time.monotonic() + 60
        while status(server, "other")[0] != 404 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert status(server, "other") == (404, "Could not find any versions of model other")
        assert models.get("chargen", label="stable").version == 2
    finally:
        server.stop()


@pytest.mark.slow
def test_labels_at_start_need_allow_version_labels_for_unavailable_models(exports, tmp_path):
    from tfchargen.serving.errors import ServerError

    a = base_of(tmp_path, "a", v1=exports["plain"])
    config = write(tmp_path / "models.config", f"""model_config_list {{ config {{ name: "chargen" base_path: "{a}"
        version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "next" value: 5 }} }} }}""")
    with pytest.raises(ValueError, match="Request to assign label to version 5 of model chargen, which is not "
                                         "currently available for inference"):
        start(f"--model_config_file={config}", "--enable_model_warmup=false")
    server = start(f"--model_config_file={config}", "--enable_model_warmup=false",
                   "--allow_version_labels_for_unavailable_models")
    try:
        assert server.models.get("chargen", label="stable").version == 1
        with pytest.raises(ServerError, match=r"^Servable not found for request: Specific\(chargen, 5\)$"):
            server.models.get("chargen", label="next")
    finally:
        server.stop()


@pytest.mark.slow
def test_an_xla_export_loads_only_with_xla_cpu_compilation_enabled(exports, tmp_path):
    base = base_of(tmp_path, "xla", v1=exports["xla"])
    with pytest.raises(ValueError) as e:
        start(f"--model_base_path={base}", "--model_name=chargen", "--enable_model_warmup=false")
    assert "requires XLA compilation" in str(e.value) and "--xla_cpu_compilation_enabled=true" in str(e.value)
    server = start(f"--model_base_path={base}", "--model_name=chargen", "--xla_cpu_compilation_enabled=true",
                   "--enable_model_warmup=false")
    try:
        code, body = http("POST", f"{server.rest_url}/v1/models/chargen:predict", generate_body())
        assert code == 200 and json.loads(body)["predictions"][0]["num_chars"] == 20, body
    finally:
        server.stop()


@pytest.mark.slow
def test_a_full_batch_queue_answers_503_as_tf_serving(exports, tmp_path):
    base = base_of(tmp_path, "a", v1=exports["plain"])
    params = write(tmp_path / "batching.txt", "max_batch_size { value: 2 } batch_timeout_micros { value: 0 } "
                   "num_batch_threads { value: 1 } max_enqueued_batches { value: 1 }")
    server = start(f"--model_base_path={base}", "--model_name=chargen", "--enable_batching=true",
                   f"--batching_parameters_file={params}", "--enable_model_warmup=false")
    replies = []
    try:
        def send(i):
            replies.append(http("POST", f"{server.rest_url}/v1/models/chargen:predict",
                                generate_body(f"Row {i} ", max_length=2048)))
        threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        server.stop()
    codes = sorted(code for code, _ in replies)
    assert codes[0] == 200 and codes[-1] == 503, codes
    assert all(json.loads(body) == {"error": batching.QUEUE_FULL} for code, body in replies if code == 503)
    assert all(json.loads(body)["predictions"][0]["num_chars"] == 2048 for code, body in replies if code == 200)


def compose_flags() -> list[str]:
    """The flags serving/docker-compose.yml gives tensorflow_model_server (its x-serving command)."""
    text = (SERVING / "docker-compose.yml").read_text()
    block = text[text.index("  command:"):text.index("  volumes:")]
    return re.findall(r"^\s+- (--\S+)\s*$", block, re.M)


@pytest.mark.slow
def test_the_serving_files_start_tfchargen_serve_with_tf_servings_flags(exports, tmp_path):
    """The compose file's flags, unchanged but for what docker itself maps: the mounts (/config
    is serving/, /models/chargen the export base) and the published ports."""
    from tensorflow_serving.apis import get_model_status_pb2

    flags = compose_flags()
    k8s = (SERVING / "k8s.yaml").read_text()
    assert flags and all(f"- {flag}\n" in k8s for flag in flags)  # the Deployment runs the same
    base = base_of(tmp_path, "chargen", v1=exports["plain"], v2=exports["plain"], v3=exports["plain"])
    (tmp_path / "config").mkdir()
    for f in SERVING.iterdir():
        text = f.read_text().replace('base_path: "/models/chargen"', f'base_path: "{base}"')
        (tmp_path / "config" / f.name).write_text(text)
    assert (tmp_path / "config" / "models.config").read_text() != (SERVING / "models.config").read_text()
    grpc_port, rest_port = free_port(), free_port()
    ports = {"--port=8500": f"--port={grpc_port}", "--rest_api_port=8501": f"--rest_api_port={rest_port}"}
    argv = [ports.get(f, f).replace("=/config/", f"={tmp_path}/config/") for f in flags]
    proc = subprocess.Popen([sys.executable, "-m", "tfchargen", "serve", *argv], cwd=ROOT, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if " on REST " in line or "tfchargen serve: error" in line:
                break
        assert " on REST " in lines[-1], "".join(lines[-20:])
        threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
        url = f"http://127.0.0.1:{rest_port}"
        code, body = http("GET", f"{url}/v1/models/chargen")
        assert code == 200 and [s["version"] for s in json.loads(body)["model_version_status"]] == ["3", "2"], body
        code, body = http("POST", f"{url}/v1/models/chargen/versions/2:predict", generate_body())
        assert code == 200 and json.loads(body)["predictions"][0]["num_chars"] == 20, body
        assert "tfchargen_batches_total" in http("GET", f"{url}/monitoring/prometheus/metrics")[1]
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "chargen"
        assert len(grpc_call(f"127.0.0.1:{grpc_port}", "GetModelStatus", request).model_version_status) == 2
        if "--enable_grpc_healthcheck_service=true" in flags:
            assert health(f"127.0.0.1:{grpc_port}") == "SERVING"
        shutil.copytree(exports["plain"], tmp_path / "staging")  # then renamed in whole, as export does
        os.rename(tmp_path / "staging", f"{base}/4")  # latest { num_versions: 2 }: 4 and 3 serve
        deadline, versions = time.monotonic() + 120, None
        while versions != ["4", "3"] and time.monotonic() < deadline:
            time.sleep(1)
            versions = [s["version"] for s in json.loads(http("GET", f"{url}/v1/models/chargen")[1])
                        ["model_version_status"] if s["state"] == "AVAILABLE"]
        assert versions == ["4", "3"], "".join(lines[-20:])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines[-20:])
