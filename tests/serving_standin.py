"""A STAND-IN for TensorFlow Serving, for tests and benchmarks only. It is not TF Serving.

No ``tensorflow_model_server`` binary can be installed where these tests run (and docker has
no engine), so the clients are tested against this: a gRPC ``PredictionService`` (grpcio) and
a REST endpoint (``http.server``) that load the exported SavedModel and run the requested
signature, following TF Serving's documented protocol as exactly as we can:

* gRPC: ``tensorflow.serving.PredictionService/Predict`` and ``ModelService/GetModelStatus``
  with the protos from ``tensorflow-serving-api``; errors are gRPC statuses carrying the
  TensorFlow error's code and message.
* REST (``api_rest.md`` and ``util/json_tensor.cc`` of tensorflow/serving):
  ``POST /v1/models/NAME[/versions/N]:predict`` with row (``instances``) or columnar
  (``inputs``) JSON, ``{"b64": ...}`` strings, NaN/Infinity tokens; row replies
  ``{"predictions": [...]}`` (a list of objects keyed by output name when there are several
  outputs), columnar replies ``{"outputs": {...}}``; output strings as JSON strings unless the
  output's name ends in ``_bytes``; errors ``{"error": "..."}`` with TF Serving's status ->
  HTTP mapping (InvalidArgument 400, NotFound 404, Unavailable 503 ...);
  ``GET /v1/models/NAME[/versions/N]`` answers like GetModelStatus.

It can simulate UNAVAILABLE for the next K predict calls (``fail_next``) and a slow server
(``delay_s``) to test retries and timeouts. Run it by hand with
``python tests/serving_standin.py --model models/chargen --rest-port 8501 --grpc-port 8500``.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

# TF Serving's http_server.cc ToHTTPStatusCode.
HTTP_STATUS = {"OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
               "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
               "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
               "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401}
_CODE_BY_NUMBER = {c.value[0]: c.name for c in grpc.StatusCode}


class StandinError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _latest(path: str) -> tuple[str, int]:
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path, int(os.path.basename(os.path.normpath(path)))
    versions = sorted(int(d) for d in os.listdir(path) if d.isdigit())
    if not versions:
        raise FileNotFoundError(f"{path} holds no model versions")
    return os.path.join(path, str(versions[-1])), versions[-1]


class StandinModel:
    """One loaded SavedModel version, run the way TF Serving's Predict runs it."""

    def __init__(self, model: str, model_name: str = "chargen"):
        self.path, self.version = _latest(model)
        self.model_name = model_name
        self.loaded = tf.saved_model.load(self.path)
        self.signatures = dict(self.loaded.signatures)
        self.inputs = {name: fn.structured_input_signature[1] for name, fn in self.signatures.items()}
        self._lock = threading.Lock()
        self.unavailable_left = 0
        self.delay_s = 0.0
        self.predict_calls = 0

    # -- fault injection
    def fail_next(self, k: int) -> None:
        """The next ``k`` predict calls (REST or gRPC) answer UNAVAILABLE."""
        with self._lock:
            self.unavailable_left = k

    def reset(self) -> None:
        with self._lock:
            self.unavailable_left, self.delay_s, self.predict_calls = 0, 0.0, 0

    # -- the servable
    def check_spec(self, name: str, version: int | None) -> None:
        if name != self.model_name or (version is not None and version != self.version):
            which = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise StandinError("NOT_FOUND", f"Servable not found for request: {which}")

    def signature(self, signature_name: str):
        name = signature_name or "serving_default"
        if name not in self.signatures:
            raise StandinError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        return name

    def status(self, name: str, version: int | None) -> dict:
        self.check_spec(name, version)
        return {"model_version_status": [{"version": str(self.version), "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}

    def predict(self, name: str, version: int | None, signature_name: str, tensors: dict) -> dict:
        with self._lock:
            self.predict_calls += 1
            if self.unavailable_left > 0:
                self.unavailable_left -= 1
                raise StandinError("UNAVAILABLE", "stand-in: simulated UNAVAILABLE (model server overloaded)")
            delay = self.delay_s
        if delay:
            time.sleep(delay)
        self.check_spec(name, version)
        sig = self.signature(signature_name)
        specs = self.inputs[sig]
        if set(tensors) != set(specs):
            extra, missing = sorted(set(tensors) - set(specs)), sorted(set(specs) - set(tensors))
            raise StandinError("INVALID_ARGUMENT", f"input size does not match signature: {len(tensors)}!="
                               f"{len(specs)} len({{{', '.join(sorted(tensors))}}}) != len({{"
                               f"{', '.join(sorted(specs))}}}). Sent extra: {{{', '.join(extra)}}}. "
                               f"Missing but required: {{{', '.join(missing)}}}.")
        args = {}
        for key, spec in specs.items():
            value = tensors[key]
            if isinstance(value, tf.Tensor):
                if value.dtype != spec.dtype:
                    raise StandinError("INVALID_ARGUMENT", f"Expects arg[{key}] to be {spec.dtype.name} but "
                                       f"{value.dtype.name} is provided")
                args[key] = value
            else:
                args[key] = tf.constant(value, spec.dtype)
        try:
            out = self.signatures[sig](**args)
        except tf.errors.OpError as e:
            raise StandinError(_CODE_BY_NUMBER.get(e.error_code, "UNKNOWN"), e.message) from None
        return {k: v.numpy() for k, v in out.items()}


# ----------------------------------------------------------------------------------------- gRPC


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, model: StandinModel):
        self.model = model

    def Predict(self, request, context):
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        try:
            tensors = {}
            for key, proto in request.inputs.items():
                tensors[key] = tf.constant(tf.make_ndarray(proto), tf.as_dtype(proto.dtype))
            out = self.model.predict(spec.name, version, spec.signature_name, tensors)
        except StandinError as e:
            context.abort(getattr(grpc.StatusCode, e.code), e.message)
        reply = predict_pb2.PredictResponse()
        reply.model_spec.name = spec.name
        reply.model_spec.version.value = self.model.version
        reply.model_spec.signature_name = spec.signature_name or "serving_default"
        for key, value in out.items():
            reply.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return reply


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, model: StandinModel):
        self.model = model

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        try:
            self.model.check_spec(spec.name, spec.version.value if spec.HasField("version") else None)
        except StandinError as e:
            context.abort(getattr(grpc.StatusCode, e.code), e.message)
        reply = get_model_status_pb2.GetModelStatusResponse()
        status = reply.model_version_status.add()
        status.version = self.model.version
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return reply


# ----------------------------------------------------------------------------------------- REST
# JSON <-> tensors following tensorflow_serving/util/json_tensor.cc.


def _is_b64(v) -> bool:
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def _json_scalar(v, dtype: tf.DType):
    bad = StandinError("INVALID_ARGUMENT", f"JSON Value: {json.dumps(v)} Type: {type(v).__name__} is not of "
                       f"expected type: {dtype.name}")
    if dtype == tf.string:
        if _is_b64(v):
            try:
                return base64.b64decode(v["b64"], validate=True)
            except ValueError:
                raise StandinError("INVALID_ARGUMENT", "Unable to base64 decode") from None
        if isinstance(v, str):
            return v.encode("utf-8")
        raise bad
    if dtype == tf.bool:
        if isinstance(v, bool):
            return v
        raise bad
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad
    if dtype.is_integer:  # rapidjson IsInt()/IsInt64(): a JSON 1.0 is a double, not an int
        if not isinstance(v, int) or not dtype.min <= v <= dtype.max:
            raise bad
        return v
    if dtype == tf.float32 and math.isfinite(v) and abs(v) > np.finfo(np.float32).max:
        raise StandinError("INVALID_ARGUMENT", f"Cannot convert JSON value: {v} to float without loss of precision.")
    return v


def _json_tensor(value, dtype: tf.DType):
    def conv(v):
        return [conv(x) for x in v] if isinstance(v, list) else _json_scalar(v, dtype)
    converted = conv(value)
    if dtype == tf.string:
        arr = np.array(converted, dtype=object)
        return tf.constant(arr if arr.ndim else converted, tf.string)
    try:
        return tf.constant(np.array(converted, dtype=dtype.as_numpy_dtype), dtype)
    except ValueError:
        raise StandinError("INVALID_ARGUMENT", f"JSON Value: {json.dumps(value)} is not a dense tensor") from None


def request_tensors(body: dict, specs: dict) -> tuple[dict, str]:
    """A predict request body -> ({input name: tensor}, "row" | "columnar")."""
    if "instances" in body and "inputs" in body:
        raise StandinError("INVALID_ARGUMENT", "JSON Value: ... Not formatted correctly expecting only one of "
                           "'inputs' or 'instances' keys to exist")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise StandinError("INVALID_ARGUMENT", "Excepting 'instances' to be an list/array")
        if not instances:
            raise StandinError("INVALID_ARGUMENT", "No values in 'instances' array")
        objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if not objects and len(specs) > 1:
            raise StandinError("INVALID_ARGUMENT", "instances is a plain list, but expecting list of objects as "
                               "multiple input tensors required as per tensorinfo_map")
        if not objects:
            name = next(iter(specs))
            return {name: _json_tensor(instances, specs[name].dtype)}, "row"
        columns = {name: [] for name in specs}
        for i, item in enumerate(instances):
            if not isinstance(item, dict) or _is_b64(item):
                raise StandinError("INVALID_ARGUMENT", f"Expecting object but got list at item {i} of input list")
            if set(item) != set(specs):
                raise StandinError("INVALID_ARGUMENT", f"Failed to process element: {i} of 'instances' list. "
                                   f"JSON object: {json.dumps(item)} keys must be equal to: "
                                   f"{','.join(sorted(specs))}")
            for name in specs:
                columns[name].append(item[name])
        return {name: _json_tensor(columns[name], specs[name].dtype) for name in specs}, "row"
    if "inputs" in body:
        inputs = body["inputs"]
        if not isinstance(inputs, dict) or _is_b64(inputs):
            if len(specs) > 1:
                raise StandinError("INVALID_ARGUMENT", "inputs is a plain value/list, but expecting an object as "
                                   "multiple input tensors required as per tensorinfo_map")
            name = next(iter(specs))
            return {name: _json_tensor(inputs, specs[name].dtype)}, "columnar"
        tensors = {}
        for name, spec in specs.items():
            if name not in inputs:
                raise StandinError("INVALID_ARGUMENT", f"Missing named input: {name} in 'inputs' object.")
            tensors[name] = _json_tensor(inputs[name], spec.dtype)
        return tensors, "columnar"
    raise StandinError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")


def _json_out(name: str, value):
    if isinstance(value, np.ndarray):
        return [_json_out(name, v) for v in value]
    if isinstance(value, bytes):
        if name.endswith("_bytes"):
            return {"b64": base64.b64encode(value).decode("ascii")}
        # TF Serving writes the bytes as they are; the exported model's strings are valid UTF-8.
        return value.decode("utf-8", "replace")
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(str(value))  # shortest repr that round-trips the float32, as TF Serving writes it
    return value


def response_json(out: dict, fmt: str) -> dict:
    if fmt == "columnar":
        if len(out) == 1:
            (name, value), = out.items()
            return {"outputs": _json_out(name, value)}
        return {"outputs": {k: _json_out(k, v) for k, v in out.items()}}
    batch = {len(v) for v in out.values()}
    if len(batch) != 1:
        raise StandinError("INVALID_ARGUMENT", "Tensor name: ... has inconsistent batch size")
    columns = {k: _json_out(k, v) for k, v in out.items()}
    if len(out) == 1:
        return {"predictions": next(iter(columns.values()))}
    return {"predictions": [{k: columns[k][i] for k in columns} for i in range(batch.pop())]}


_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(:predict)?$")


def _handler(model: StandinModel):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                pass

        def _error(self, e: StandinError) -> None:
            self._reply(HTTP_STATUS.get(e.code, 500), {"error": e.message})

        def do_GET(self):
            m = _PATH.match(self.path)
            if not m or m.group(3):
                return self._reply(404, {"error": f"Malformed request: GET {self.path}"})
            try:
                self._reply(200, model.status(m.group(1), int(m.group(2)) if m.group(2) else None))
            except StandinError as e:
                self._error(e)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            m = _PATH.match(self.path)
            if not m or not m.group(3):
                return self._reply(404, {"error": f"Malformed request: POST {self.path}"})
            name, version = m.group(1), int(m.group(2)) if m.group(2) else None
            try:
                if not body:
                    raise StandinError("INVALID_ARGUMENT", "JSON Parse error: The document is empty")
                try:
                    doc = json.loads(body.decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as e:
                    raise StandinError("INVALID_ARGUMENT", f"JSON Parse error: {e}") from None
                if not isinstance(doc, dict):
                    raise StandinError("INVALID_ARGUMENT", f"JSON Value: {body[:100]!r} Is not object")
                signature_name = doc.get("signature_name", "")
                if not isinstance(signature_name, str):
                    raise StandinError("INVALID_ARGUMENT", "'signature_name' key must be a string value.")
                model.check_spec(name, version)
                tensors, fmt = request_tensors(doc, model.inputs[model.signature(signature_name)])
                out = model.predict(name, version, signature_name, tensors)
                self._reply(200, response_json(out, fmt))
            except StandinError as e:
                self._error(e)

    return Handler


class Standin:
    """Both endpoints over one loaded model, on 127.0.0.1 (port 0 = any free port)."""

    def __init__(self, model: str | StandinModel, model_name: str = "chargen", rest_port: int = 0,
                 grpc_port: int = 0, workers: int = 8):
        self.model = model if isinstance(model, StandinModel) else StandinModel(model, model_name)
        self._http = ThreadingHTTPServer(("127.0.0.1", rest_port), _handler(self.model))
        self._http.daemon_threads = True
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(self.model),
                                                                            self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self.model), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port(f"127.0.0.1:{grpc_port}")
        self.rest_port = self._http.server_address[1]
        self.rest_url = f"http://127.0.0.1:{self.rest_port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self._thread = None

    def start(self) -> "Standin":
        self._grpc.start()
        self._thread = threading.Thread(target=self._http.serve_forever, name="standin-rest", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._grpc.stop(grace=None)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="A stand-in for TF Serving (tests and benchmarks only).")
    p.add_argument("--model", required=True, help="export base (latest version) or a version directory")
    p.add_argument("--model-name", default="chargen")
    p.add_argument("--rest-port", type=int, default=8501)
    p.add_argument("--grpc-port", type=int, default=8500)
    args = p.parse_args(argv)
    server = Standin(args.model, args.model_name, args.rest_port, args.grpc_port).start()
    print(f"stand-in (not TF Serving): REST {server.rest_url}  gRPC {server.grpc_target}  "
          f"model {args.model_name} version {server.model.version}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
