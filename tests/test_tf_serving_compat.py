"""TF Serving compatibility, proven without the tensorflow_model_server binary.

No TF Serving binary can be installed here, so: the SignatureDefs are checked against what
TF Serving's Predict API and request batching need; the warmup file is read back and
replayed through the SavedModel (TF2 loader and the session loader TF Serving uses) in a
fresh process; the server config files are parsed as the protos TF Serving reads. The
REST/gRPC clients against `tfchargen serve`, which follows TF Serving's documented wire
formats, are tests/test_client.py's; `tfchargen serve` itself is tests/test_serve.py's.
None of this runs TF Serving itself.
"""

import json
import os
import subprocess
import sys

import pytest
from google.protobuf import text_format
from helpers import ROOT

from tfchargen.savedmodel import warmup as warmup_lib
from tfchargen.serving import model_config

SIGNATURES = ("serving_default", "generate", "score", "start", "continue")
SERVING = ROOT / "serving"

def signature_defs(version_dir):
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    (mg,) = [m for m in sm.meta_graphs if "serve" in m.meta_info_def.tags]
    return mg.signature_def


# ------------------------------------------------------------------------- SavedModel contract


@pytest.mark.slow
def test_signatures_are_predict_and_batched_on_dimension_0(version_dir):
    sigs = signature_defs(version_dir)
    assert set(SIGNATURES) <= set(sigs)
    for name in SIGNATURES:
        sig = sigs[name]
        assert sig.method_name == "tensorflow/serving/predict", name
        for kind, tensors in (("input", sig.inputs), ("output", sig.outputs)):
            for key, info in tensors.items():
                dims = [d.size for d in info.tensor_shape.dim]
                assert not info.tensor_shape.unknown_rank and dims == [-1], f"{name} {kind} {key}: {dims}"


@pytest.mark.slow
def test_warmup_file_has_a_request_per_signature_matching_its_inputs(version_dir):
    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    assert path.is_file()
    logs = warmup_lib.read_warmup(str(version_dir))
    assert 0 < len(logs) <= 1000 and len(logs) == len(warmup_lib.read_warmup(str(path)))
    sigs = signature_defs(version_dir)
    seen = set()
    for log in logs:
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        name = request.model_spec.signature_name
        want = {k: v.dtype for k, v in sigs[name].inputs.items()}
        assert {k: v.dtype for k, v in request.inputs.items()} == want, name
        sizes = {tuple(d.size for d in t.tensor_shape.dim) for t in request.inputs.values()}
        assert len(sizes) == 1
        seen.add((name, sizes.pop()[0]))
    assert seen == {(s, b) for s in SIGNATURES for b in warmup_lib.DEFAULT_BATCH_SIZES}


REPLAY = r"""
import json, sys
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
path = sys.argv[1]
logs = []
for record in tf.data.TFRecordDataset(path + "/assets.extra/tf_serving_warmup_requests"):
    log = prediction_log_pb2.PredictionLog()
    log.ParseFromString(record.numpy())
    logs.append(log.predict_log.request)
result = {"tf2": [], "session": []}
m = tf.saved_model.load(path)
for req in logs:
    sig = req.model_spec.signature_name
    out = m.signatures[sig](**{k: tf.constant(tf.make_ndarray(v)) for k, v in req.inputs.items()})
    result["tf2"].append([sig, {k: list(v.shape) for k, v in out.items()}])
# The way TF Serving runs a warmup request: graph + session from the session-based loader.
with tf.Graph().as_default() as g, tf.compat.v1.Session(graph=g) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
    for req in logs:
        sig = meta.signature_def[req.model_spec.signature_name]
        feed = {sig.inputs[k].name: tf.make_ndarray(v) for k, v in req.inputs.items()}
        out = sess.run({k: v.name for k, v in sig.outputs.items()}, feed)
        result["session"].append([req.model_spec.signature_name, {k: list(v.shape) for k, v in out.items()}])
print(json.dumps(result))
"""


@pytest.mark.slow
def test_warmup_replays_through_the_savedmodel_in_a_fresh_process(version_dir):
    r = subprocess.run([sys.executable, "-c", REPLAY, str(version_dir)], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    logs = warmup_lib.read_warmup(str(version_dir))
    outputs = {name: set(sig.outputs) for name, sig in signature_defs(version_dir).items()}
    for loader in ("tf2", "session"):
        assert len(result[loader]) == len(logs)
        for (sig, shapes), log in zip(result[loader], logs):
            batch = log.predict_log.request.inputs[next(iter(log.predict_log.request.inputs))].tensor_shape.dim[0].size
            assert set(shapes) == outputs[sig] and all(s == [batch] for s in shapes.values()), (loader, sig, shapes)


# -------------------------------------------------------------------------- server config files


def test_server_config_files_parse_as_tf_serving_protos():
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse((SERVING / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "chargen" and model.base_path == "/models/chargen" and model.model_platform == "tensorflow"
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert model.model_version_policy.latest.num_versions == 2
    assert "specific" in (SERVING / "models.config").read_text()  # the rollback recipe

    # BatchingParameters and MonitoringConfig as the server declares them (TF Serving's field numbers)
    classes = model_config._classes()
    batching_cls, monitoring_cls = classes["BatchingParameters"], classes["MonitoringConfig"]
    b = text_format.Parse((SERVING / "batching_parameters.txt").read_text(), batching_cls())
    sizes = list(b.allowed_batch_sizes)
    assert sizes == sorted(set(sizes)) and sizes[-1] == b.max_batch_size.value  # TF Serving's requirements
    assert b.num_batch_threads.value >= 1 and b.batch_timeout_micros.value >= 0 and b.max_enqueued_batches.value >= 1
    m = text_format.Parse((SERVING / "monitoring.config").read_text(), monitoring_cls())
    assert m.prometheus_config.enable and m.prometheus_config.path == "/monitoring/prometheus/metrics"

    compose = (SERVING / "docker-compose.yml").read_text()
    for flag in ("--model_config_file=/config/models.config", "--enable_batching=true",
                 "--batching_parameters_file=/config/batching_parameters.txt",
                 "--monitoring_config_file=/config/monitoring.config", "--enable_model_warmup=true"):
        assert flag in compose and flag in (SERVING / "k8s.yaml").read_text(), flag
    assert "read_only: true" in compose and "127.0.0.1}:8501:8501" in compose
    assert "tensorflow/serving:${TF_SERVING_TAG:-latest}-gpu" in compose
    assert "path: /v1/models/chargen" in (SERVING / "k8s.yaml").read_text()
