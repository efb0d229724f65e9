"""`tfchargen serve`: TensorFlow Serving's Predict API for an exported model, on one machine.

    tfchargen serve --model models/chargen            # REST :8501, gRPC :8500, page at /

It loads the newest version under an export base (or the versions ``--versions`` asks for),
polls the base for versions ``tfchargen export`` writes, replays each new version's warmup
records before it answers requests, and unloads versions that leave the disk. It speaks TF
Serving's protocols, so every client of TF Serving (``tfchargen.serving.client``, the C and Go
clients, ``curl``) works unchanged:

* REST (TF Serving's ``api_rest.md``, ``util/json_tensor.cc``):
  ``GET /v1/models/NAME[/versions/N]`` (status), ``GET .../metadata`` (signature_def),
  ``POST /v1/models/NAME[/versions/N]:predict`` with row (``instances``) or columnar
  (``inputs``) JSON, ``{"b64": ...}`` strings; errors ``{"error": "..."}`` with TF Serving's
  status -> HTTP mapping. ``POST ...:stream`` (ours, not TF Serving's) takes a ``generate``
  request and answers its text as server-sent events, chunk by chunk, when the model has
  ``start``/``continue`` signatures (404 otherwise; :func:`sse_events`). ``GET /`` is a page
  to try the model.
* gRPC: ``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata) and
  ``ModelService/GetModelStatus`` with the ``tensorflow-serving-api`` protos; errors are gRPC
  statuses with TensorFlow's code and message.

Request batching (batching.py): concurrent ``generate``/``serving_default`` requests are
merged into one call of at most ``--max-batch`` rows, which closes once no request has joined
it for ``--batch-timeout-ms``, grouped by ``max_length`` bucket. Sampling is per row, so a request
returns exactly what it returns alone. ``--max-batch 1`` turns batching off (every request
runs on its own, concurrently).

Limits (LIMITS below): the body of a REST request, rows per request, concurrent
connections/RPCs, and how long a client may take to send its request.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from tfchargen import contract
from tfchargen.savedmodel import locate
from tfchargen.serving.batching import DEFAULT_TIMEOUT_MS, Batcher, Stopped, max_length_bucket
from tfchargen.serving.client import message_json

# Documented limits: a request over one of them gets its error, never a crash or a hang.
LIMITS = dict(
    max_body_bytes=8 << 20,   # a REST body (HTTP 413 above) or a gRPC message
    max_rows=1024,            # rows per request (InvalidArgument above)
    max_connections=256,      # concurrent REST connections (a :stream holds one; so does a kept-alive
                              # idle one, until read_timeout_s) and gRPC calls (503 / RESOURCE_EXHAUSTED above)
    read_timeout_s=30.0,      # a client must send its whole request within this (then 408); an idle
                              # kept-alive connection is closed after it
    shutdown_grace_s=10.0,    # on SIGTERM, in-flight requests get this long to finish
)
POLL_SECONDS = 1.0  # how often the export base is listed (TF Serving's file_system_poll_wait_seconds)
BATCHED_SIGNATURES = ("serving_default", "generate")
STREAM_SIGNATURES = ("start", "continue")

# TF Serving's http_server.cc ToHTTPStatusCode.
HTTP_STATUS = {"OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
               "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
               "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
               "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401}
# TensorFlow's error codes (tf.errors.*.error_code) by number, as gRPC status names.
TF_CODES = {0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
            6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
            10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
            15: "DATA_LOSS", 16: "UNAUTHENTICATED"}


class ServerError(Exception):
    """A request's failure as TF Serving reports it: a status code name and a message.

    Args:
        code: a gRPC/TensorFlow status name, e.g. ``"INVALID_ARGUMENT"``.
        message: the text the client sees.

    >>> ServerError("NOT_FOUND", "Servable not found").http_status
    404
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ one version


def signature_def_map(path: str):
    """The SavedModel's SignatureDefMap (the ``serve`` MetaGraph), as TF Serving reports it."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    (meta,) = [m for m in sm.meta_graphs if "serve" in m.meta_info_def.tags]
    out = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in meta.signature_def.items():
        out.signature_def[key].CopyFrom(sig)
    return out


class Servable:
    """One loaded SavedModel version, run the way TF Serving's Predict runs it.

    Args:
        path: the version's directory.
        version: its number.
        max_batch, batch_timeout_s, batch_threads: request batching (batching.py;
            ``max_batch`` 1 = off).

    >>> s = Servable("models/chargen/1", 1)  # doctest: +SKIP
    >>> s.predict("generate", {"prompt": np.array([b"Today "], object), ...})  # doctest: +SKIP
    """

    def __init__(self, path: str, version: int, max_batch: int = 64, batch_timeout_s: float = DEFAULT_TIMEOUT_MS / 1000,
                 batch_threads: int = 2):
        import tensorflow as tf

        self.tf = tf
        self.path, self.version = path, version
        self.loaded = tf.saved_model.load(path)
        self.signatures = dict(self.loaded.signatures)
        self.inputs = {name: {k: spec.dtype for k, spec in fn.structured_input_signature[1].items()}
                       for name, fn in self.signatures.items()}
        self.signature_defs = signature_def_map(path)
        self.batchers = {}
        if max_batch > 1:
            for name in BATCHED_SIGNATURES:
                if name not in self.signatures:
                    continue
                bucket = max_length_bucket if "max_length" in self.inputs[name] else (lambda inputs: 0)
                self.batchers[name] = Batcher(self._caller(name), max_batch, batch_timeout_s, batch_threads,
                                              bucket, name=f"v{version}-{name}")

    def _caller(self, name: str):
        tf, fn, dtypes = self.tf, self.signatures[name], self.inputs[name]

        def call(inputs: dict) -> dict:
            try:
                out = fn(**{k: tf.constant(v, dtypes[k]) for k, v in inputs.items()})
            except tf.errors.OpError as e:
                raise ServerError(TF_CODES.get(e.error_code, "UNKNOWN"), e.message) from None
            return {k: v.numpy() for k, v in out.items()}
        return call

    def signature(self, name: str) -> str:
        name = name or "serving_default"
        if name not in self.signatures:
            raise ServerError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        return name

    def has_streaming(self) -> bool:
        return all(name in self.signatures for name in STREAM_SIGNATURES)

    def predict(self, signature_name: str, inputs: dict) -> dict:
        """Checks ``inputs`` ({name: np.ndarray}) against the signature, then runs it."""
        name = self.signature(signature_name)
        inputs = check_inputs(inputs, self.inputs[name])
        if name in self.batchers:
            try:
                return self.batchers[name].submit(inputs).result()
            except Stopped as e:
                raise ServerError("UNAVAILABLE", str(e)) from None
        return self._caller(name)(inputs)

    def warm_up(self) -> int:
        """Replays ``assets.extra/tf_serving_warmup_requests`` (if any); returns the count."""
        from tfchargen.savedmodel import warmup

        if not os.path.exists(os.path.join(self.path, warmup.WARMUP_DIR, warmup.WARMUP_FILE)):
            return 0
        logs = warmup.read_warmup(self.path)
        for record in logs:
            request = record.predict_log.request
            inputs = {k: self.tf.make_ndarray(v) for k, v in request.inputs.items()}
            self._caller(self.signature(request.model_spec.signature_name))(inputs)
        return len(logs)

    def stop(self) -> None:
        for b in self.batchers.values():
            b.stop()


def check_inputs(inputs: dict, dtypes: dict) -> dict:
    """The signature's inputs as [B] numpy arrays of its dtypes, or a ServerError.

    Refuses here what would otherwise fail inside a merged batch (wrong names, dtypes,
    shapes, mismatched batch sizes, controls the graph's checks refuse), with TF Serving's
    or the graph's own message.
    """
    if set(inputs) != set(dtypes):
        extra, missing = sorted(set(inputs) - set(dtypes)), sorted(set(dtypes) - set(inputs))
        raise ServerError("INVALID_ARGUMENT", f"input size does not match signature: {len(inputs)}!="
                          f"{len(dtypes)} len({{{', '.join(sorted(inputs))}}}) != len({{"
                          f"{', '.join(sorted(dtypes))}}}). Sent extra: {{{', '.join(extra)}}}. "
                          f"Missing but required: {{{', '.join(missing)}}}.")
    out = {}
    for key, dtype in dtypes.items():
        value = inputs[key]
        if value.ndim != 1:
            raise ServerError("INVALID_ARGUMENT", f"Expects arg[{key}] to be a vector (shape [-1]) but shape "
                              f"{list(value.shape)} is provided")
        if dtype.name == "string":
            if value.dtype != object or not all(isinstance(v, bytes) for v in value):
                raise ServerError("INVALID_ARGUMENT", f"Expects arg[{key}] to be string but "
                                  f"{_dtype_name(value)} is provided")
        elif np.dtype(dtype.as_numpy_dtype) != value.dtype:
            raise ServerError("INVALID_ARGUMENT", f"Expects arg[{key}] to be {dtype.name} but "
                              f"{_dtype_name(value)} is provided")
        out[key] = value
    rows = {len(v) for v in out.values()}
    if len(rows) > 1:
        bad = next(k for k, v in out.items() if len(v) != len(out[next(iter(out))]))
        raise ServerError("INVALID_ARGUMENT", contract.MSG_ONE_PER_PROMPT.format(name=bad))
    n = rows.pop() if rows else 0
    if n > LIMITS["max_rows"]:
        raise ServerError("INVALID_ARGUMENT", f"{n} rows in one request; at most {LIMITS['max_rows']}")
    if n and set(contract.CONTROLS) <= set(out):  # the graph's own checks, before batching
        err = _controls_error(out)
        if err:
            raise ServerError("INVALID_ARGUMENT", f"assertion failed: [{err}]")
    return out


def _controls_error(inputs: dict) -> str | None:
    """The message of the first control check any row fails, in the graph's order."""
    t, p = inputs["temperature"], inputs["top_p"]
    bad_t, bad_p = t[~(np.isfinite(t) & (t >= 0))], p[~((p > 0) & (p <= 1))]
    for kwargs in (dict(max_length=int(inputs["max_length"].min())),
                   dict(max_length=int(inputs["max_length"].max())),
                   dict(temperature=float(bad_t[0])) if len(bad_t) else {},
                   dict(top_k=int(inputs["top_k"].min())),
                   dict(top_p=float(bad_p[0])) if len(bad_p) else {}):
        err = contract.control_error(**kwargs)
        if err:
            return err
    return None


def _dtype_name(value: np.ndarray) -> str:
    if value.dtype == object:
        return "string" if all(isinstance(v, bytes) for v in value.flat) else "mixed"
    import tensorflow as tf

    return tf.as_dtype(value.dtype).name


# ------------------------------------------------------------------------------ versions


def parse_versions(text: str):
    """``--versions``: "latest" -> "latest", "all" -> "all", "3,5" -> (3, 5).

    >>> parse_versions("2,1")
    (1, 2)
    """
    if text in ("latest", "all"):
        return text
    try:
        numbers = tuple(sorted({int(v) for v in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected latest, all or comma-separated version numbers, "
                                         f"got {text!r}") from None
    if not numbers or min(numbers) < 0:
        raise argparse.ArgumentTypeError(f"version numbers must be >= 0, got {text!r}")
    return numbers


class ModelManager:
    """The served versions of one model: loads, warms up, switches and unloads them.

    Args:
        base: an export base (``models/chargen``) or a single version's directory.
        name: the model name clients ask for.
        policy: "latest", "all" or a tuple of version numbers (``--versions``).
        servable_kwargs: passed to :class:`Servable` (batching).

    >>> m = ModelManager("models/chargen", "chargen").load_initial()  # doctest: +SKIP
    >>> m.get(None).version  # doctest: +SKIP
    1
    """

    def __init__(self, base: str, name: str, policy="latest", poll_seconds: float = POLL_SECONDS,
                 **servable_kwargs):
        self.base, self.name, self.policy, self.poll_seconds = base, name, policy, poll_seconds
        self.servable_kwargs = servable_kwargs
        self.single = os.path.exists(os.path.join(base, "saved_model.pb"))
        self._servables: dict[int, Servable] = {}
        self._states: dict[int, tuple[str, str]] = {}  # version -> (state, error message)
        self._failed: set[int] = set()  # versions that did not load: not retried until they change
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def _wanted(self) -> dict[int, str]:
        if self.single:
            name = os.path.basename(os.path.normpath(self.base))
            return {int(name) if name.isdigit() else 1: self.base}
        found = locate.complete_versions(self.base)
        if self.policy == "latest":
            ok = sorted(v for v in found if v not in self._failed)
            return {ok[-1]: found[ok[-1]]} if ok else {}
        if self.policy == "all":
            return found
        return {v: p for v, p in found.items() if v in self.policy}

    def poll(self) -> None:
        """One pass: load wanted versions that are not loaded, unload the others."""
        wanted = self._wanted()
        for version in sorted(set(wanted) - set(self._servables) - self._failed):
            self._load(version, wanted[version])
        if self.policy == "latest":  # keep the newest that loaded
            wanted = dict(sorted((v, p) for v, p in wanted.items() if v in self._servables)[-1:]) or \
                dict(sorted(self._servables.items())[-1:])
        for version in sorted(set(self._servables) - set(wanted)):
            if self.policy == "latest" and not (set(wanted) & set(self._servables)):
                continue  # nothing newer loaded: keep serving what we have
            self._unload(version)
        self._failed &= set(locate.complete_versions(self.base)) | ({next(iter(wanted))} if self.single and wanted else set())

    def _load(self, version: int, path: str) -> None:
        with self._lock:
            self._states[version] = ("LOADING", "")
        t = time.monotonic()
        try:
            servable = Servable(path, version, **self.servable_kwargs)
            replayed = servable.warm_up()
        except Exception as e:  # a damaged or foreign version: report it, keep serving the others
            from tfchargen.common.errors import one_line

            message = one_line(e)
            with self._lock:
                self._states[version] = ("END", message)
                self._failed.add(version)
            log(f"tfchargen serve: version {version} failed to load: {message}")
            return
        with self._lock:
            self._servables[version] = servable
            self._states[version] = ("AVAILABLE", "")
        log(f"tfchargen serve: loaded {self.name} version {version} ({replayed} warmup requests, "
            f"{time.monotonic() - t:.1f} s)")

    def _unload(self, version: int) -> None:
        with self._lock:
            servable = self._servables.pop(version)
            self._states[version] = ("END", "")
        servable.stop()  # queued requests still run; callers holding it finish with it
        log(f"tfchargen serve: unloaded {self.name} version {version}")

    def load_initial(self) -> "ModelManager":
        self.poll()
        if not self._servables:
            errors = [m for s, m in self._states.values() if m]
            raise ValueError(f"no version of {self.base} could be loaded" + (f": {errors[-1]}" if errors else
                             " (no numbered version directory holds a saved_model.pb)"))
        return self

    def start_polling(self) -> None:
        if self.single:
            return

        def loop():
            while not self._stop.wait(self.poll_seconds):
                try:
                    self.poll()
                except Exception as e:  # never let the poller die: the next pass retries
                    log(f"tfchargen serve: polling {self.base} failed: {e!r}")
        self._thread = threading.Thread(target=loop, name="version-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        for servable in list(self._servables.values()):
            servable.stop()

    def servables(self) -> dict[int, Servable]:
        with self._lock:
            return dict(self._servables)

    def get(self, name: str, version: int | None) -> Servable:
        with self._lock:
            if name == self.name:
                if version is None and self._servables:
                    return self._servables[max(self._servables)]
                if version in self._servables:
                    return self._servables[version]
        which = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise ServerError("NOT_FOUND", f"Servable not found for request: {which}")

    def status(self, name: str, version: int | None):
        """A GetModelStatusResponse (every known version, or the one asked for)."""
        from tensorflow_serving.apis import get_model_status_pb2

        with self._lock:
            states = dict(self._states)
        if name != self.name or (version is not None and version not in states):
            which = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise ServerError("NOT_FOUND", f"Could not find any versions of model {name}" if version is None
                              else f"Servable not found for request: {which}")
        reply = get_model_status_pb2.GetModelStatusResponse()
        enum = get_model_status_pb2.ModelVersionStatus.State
        for v in sorted(states, reverse=True):
            if version is not None and v != version:
                continue
            state, message = states[v]
            status = reply.model_version_status.add(version=v, state=enum.Value(state))
            if message:
                status.status.error_code = 2  # UNKNOWN
                status.status.error_message = message
        return reply

    def metadata(self, name: str, version: int | None):
        """A GetModelMetadataResponse with the version's signature_def."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        servable = self.get(name, version)
        reply = get_model_metadata_pb2.GetModelMetadataResponse()
        reply.model_spec.name = name
        reply.model_spec.version.value = servable.version
        reply.metadata["signature_def"].Pack(servable.signature_defs)
        return reply


# ------------------------------------------------------------------------------ REST
# JSON <-> tensors following tensorflow_serving/util/json_tensor.cc.


def _is_b64(v) -> bool:
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def _json_scalar(v, dtype):
    bad = ServerError("INVALID_ARGUMENT", f"JSON Value: {json.dumps(v)[:200]} Type: {type(v).__name__} is not of "
                      f"expected type: {dtype.name}")
    if dtype.name == "string":
        if _is_b64(v):
            try:
                return base64.b64decode(v["b64"], validate=True)
            except ValueError:
                raise ServerError("INVALID_ARGUMENT", "Unable to base64 decode") from None
        if isinstance(v, str):
            return v.encode("utf-8", "surrogatepass")
        raise bad
    if dtype.name == "bool":
        if isinstance(v, bool):
            return v
        raise bad
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad
    if dtype.is_integer:  # rapidjson IsInt()/IsInt64(): a JSON 1.0 is a double, not an int
        if not isinstance(v, int) or not dtype.min <= v <= dtype.max:
            raise bad
        return v
    if dtype.name == "float32" and math.isfinite(v) and abs(v) > np.finfo(np.float32).max:
        raise ServerError("INVALID_ARGUMENT", f"Cannot convert JSON value: {v} to float without loss of precision.")
    return v


def json_tensor(value, dtype) -> np.ndarray:
    """A JSON value (a list, or a scalar) -> a numpy array of ``dtype`` (a tf.DType)."""
    def conv(v):
        return [conv(x) for x in v] if isinstance(v, list) else _json_scalar(v, dtype)
    converted = conv(value)
    if dtype.name == "string":
        if not isinstance(converted, list):
            arr = np.empty((), object)
            arr[()] = converted
            return arr
        arr = np.empty(len(converted), object)
        arr[:] = converted
        if any(isinstance(v, list) for v in converted):  # nested: let numpy find a dense shape
            try:
                arr = np.array(converted, dtype=object)
            except ValueError:
                raise ServerError("INVALID_ARGUMENT", "JSON Value is not a dense tensor") from None
        return arr
    try:
        return np.array(converted, dtype=dtype.as_numpy_dtype)
    except ValueError:
        raise ServerError("INVALID_ARGUMENT", f"JSON Value: {json.dumps(value)[:200]} is not a dense tensor") from None


def request_tensors(body: dict, dtypes: dict) -> tuple[dict, str]:
    """A predict request body -> ({input name: np.ndarray}, "row" | "columnar")."""
    if "instances" in body and "inputs" in body:
        raise ServerError("INVALID_ARGUMENT", "Not formatted correctly expecting only one of "
                          "'inputs' or 'instances' keys to exist")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise ServerError("INVALID_ARGUMENT", "Excepting 'instances' to be an list/array")
        if not instances:
            raise ServerError("INVALID_ARGUMENT", "No values in 'instances' array")
        objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if not objects and len(dtypes) > 1:
            raise ServerError("INVALID_ARGUMENT", "instances is a plain list, but expecting list of objects as "
                              "multiple input tensors required as per tensorinfo_map")
        if not objects:
            name = next(iter(dtypes))
            return {name: json_tensor(instances, dtypes[name])}, "row"
        columns = {name: [] for name in dtypes}
        for i, item in enumerate(instances):
            if not isinstance(item, dict) or _is_b64(item):
                raise ServerError("INVALID_ARGUMENT", f"Expecting object but got list at item {i} of input list")
            if set(item) != set(dtypes):
                raise ServerError("INVALID_ARGUMENT", f"Failed to process element: {i} of 'instances' list. "
                                  f"JSON object: {json.dumps(item)[:200]} keys must be equal to: "
                                  f"{','.join(sorted(dtypes))}")
            for name in dtypes:
                columns[name].append(item[name])
        return {name: json_tensor(columns[name], dtypes[name]) for name in dtypes}, "row"
    if "inputs" in body:
        inputs = body["inputs"]
        if not isinstance(inputs, dict) or _is_b64(inputs):
            if len(dtypes) > 1:
                raise ServerError("INVALID_ARGUMENT", "inputs is a plain value/list, but expecting an object as "
                                  "multiple input tensors required as per tensorinfo_map")
            name = next(iter(dtypes))
            return {name: json_tensor(inputs, dtypes[name])}, "columnar"
        tensors = {}
        for name, dtype in dtypes.items():
            if name not in inputs:
                raise ServerError("INVALID_ARGUMENT", f"Missing named input: {name} in 'inputs' object.")
            tensors[name] = json_tensor(inputs[name], dtype)
        extra = sorted(set(inputs) - set(dtypes))
        if extra:
            tensors.update({k: np.zeros([0]) for k in extra})  # check_inputs names them
        return tensors, "columnar"
    raise ServerError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")


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
    """Outputs -> TF Serving's reply: ``{"outputs": ...}`` (columnar) or ``{"predictions": ...}``."""
    if fmt == "columnar":
        if len(out) == 1:
            (name, value), = out.items()
            return {"outputs": _json_out(name, value)}
        return {"outputs": {k: _json_out(k, v) for k, v in out.items()}}
    columns = {k: _json_out(k, v) for k, v in out.items()}
    if len(out) == 1:
        return {"predictions": next(iter(columns.values()))}
    n = len(next(iter(columns.values())))
    return {"predictions": [{k: columns[k][i] for k in columns} for i in range(n)]}




def status_json(reply) -> dict:
    out = message_json(reply)
    for s in out.get("model_version_status", []):
        s.setdefault("status", {}).setdefault("error_message", "")
        s["status"].setdefault("error_code", "OK")
    return out


def metadata_json(reply) -> dict:
    from tensorflow_serving.apis import get_model_metadata_pb2

    sigs = get_model_metadata_pb2.SignatureDefMap()
    reply.metadata["signature_def"].Unpack(sigs)
    return {"model_spec": {"name": reply.model_spec.name, "signature_name": "",
                           "version": str(reply.model_spec.version.value)},
            "metadata": {"signature_def": message_json(sigs)}}


METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's default path for its metrics


def metrics_text(manager: ModelManager) -> str:
    """Batching counters in Prometheus' text format: merged calls and the rows they held."""
    lines = ["# TYPE tfchargen_batches_total counter", "# TYPE tfchargen_batched_rows_total counter"]
    for version, servable in sorted(manager.servables().items()):
        for signature, b in sorted(servable.batchers.items()):
            labels = f'model="{manager.name}",version="{version}",signature="{signature}"'
            lines += [f"tfchargen_batches_total{{{labels}}} {b.batches}",
                      f"tfchargen_batched_rows_total{{{labels}}} {b.rows}"]
    return "\n".join(lines) + "\n"


_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(?:(/metadata)|:(predict|stream))?$")


def page(model_name: str) -> bytes:
    """The page at ``/`` (page.html), told the served model's name."""
    from importlib import resources

    html = resources.files(__package__).joinpath("page.html").read_text("utf-8")
    return html.replace('/*MODEL_NAME*/"chargen"', json.dumps(model_name).replace("<", "\\u003c")).encode()


class RestServer(ThreadingHTTPServer):
    """``http.server`` with a bound on concurrent connections and the model manager."""

    daemon_threads = True
    request_queue_size = LIMITS["max_connections"]  # listen backlog: socketserver's 5 drops bursts of connects
    allow_reuse_address = True  # SO_REUSEADDR: restart at once; on Linux a second listener still fails

    def __init__(self, address, manager: ModelManager, limits=LIMITS):
        self.manager, self.limits = manager, limits
        self.slots = threading.BoundedSemaphore(limits["max_connections"])
        self.draining = threading.Event()
        self.in_flight = 0
        self.in_flight_lock = threading.Lock()
        super().__init__(address, RestHandler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(_raw_reply(503, {"error": f"too many connections (at most "
                                                          f"{self.limits['max_connections']})"}))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def _raw_reply(status: int, payload: dict) -> bytes:
    from http import HTTPStatus

    body = json.dumps(payload).encode()
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class RestHandler(BaseHTTPRequestHandler):
    """TF Serving's REST API over :class:`ModelManager`; one log line per request."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"  # even an unreadable request line gets a status line
    server_version = "tfchargen-serve"
    server: RestServer

    def setup(self):
        self.timeout = self.server.limits["read_timeout_s"]  # a slow or silent client is cut off
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
        # holds the body back until the client's delayed ACK on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):  # our own line per request instead (see _done)
        pass

    def send_error(self, code, message=None, explain=None):
        """http.server's protocol errors (bad request line, headers too long) as JSON."""
        self.command = self.command or "-"
        self.path = getattr(self, "path", "") or "-"
        self._send(code, {"error": message or explain or "bad request"}, close=True)

    def handle_one_request(self):
        self._t0, self._rows, self._status = time.monotonic(), 0, None
        try:  # http.server itself closes a connection idle past the timeout
            super().handle_one_request()
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True

    def _send(self, status: int, payload, content_type="application/json", close=False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        self._status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if close or self.server.draining.is_set():
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (ConnectionError, BrokenPipeError, TimeoutError):  # the client gave up
            self.close_connection = True
        self._done()

    def _error(self, e: ServerError, close=False) -> None:
        self._send(e.http_status, {"error": e.message}, close=close)

    def _done(self) -> None:
        ms = (time.monotonic() - self._t0) * 1000
        log(f"{self.command} {self.path[:200]} {self._status} rows={self._rows} {ms:.1f}ms")

    def _begin(self) -> bool:
        with self.server.in_flight_lock:
            if self.server.draining.is_set():
                self._error(ServerError("UNAVAILABLE", "the server is shutting down"), close=True)
                return False
            self.server.in_flight += 1
        return True

    def _end(self) -> None:
        with self.server.in_flight_lock:
            self.server.in_flight -= 1

    def do_GET(self):
        if self.path.split("?", 1)[0] in ("/", "/index.html"):  # the page reads its query string itself
            return self._send(200, page(self.server.manager.name), "text/html; charset=utf-8")
        if self.path == METRICS_PATH:
            return self._send(200, metrics_text(self.server.manager).encode(), "text/plain; version=0.0.4")
        m = _PATH.match(self.path)
        if not m or m.group(4):
            return self._send(404, {"error": f"Malformed request: GET {self.path[:200]}"})
        if not self._begin():
            return
        try:
            name, version = m.group(1), int(m.group(2)) if m.group(2) else None
            if m.group(3):
                self._send(200, metadata_json(self.server.manager.metadata(name, version)))
            else:
                self._send(200, status_json(self.server.manager.status(name, version)))
        except ServerError as e:
            self._error(e)
        finally:
            self._end()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise _HttpError(411, "chunked bodies are not accepted: send Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _HttpError(400, "Content-Length is not a number") from None
        if length < 0:
            raise _HttpError(400, "Content-Length is negative")
        if length > self.server.limits["max_body_bytes"]:
            raise _HttpError(413, f"request body of {length} bytes is over the limit of "
                                  f"{self.server.limits['max_body_bytes']} bytes")
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise _HttpError(408, f"the request body was not received within "
                                  f"{self.server.limits['read_timeout_s']:g} s") from None
        if len(body) < length:
            raise ConnectionError("the client closed the connection mid-body")
        return body

    def do_POST(self):
        try:
            body = self._read_body()
        except _HttpError as e:  # the body was not read: this connection cannot be reused
            return self._send(e.status, {"error": e.message}, close=True)
        m = _PATH.match(self.path)
        if not m or not m.group(4):
            return self._send(404, {"error": f"Malformed request: POST {self.path[:200]}"})
        if not self._begin():
            return
        try:
            name, version = m.group(1), int(m.group(2)) if m.group(2) else None
            doc = parse_json_body(body)
            servable = self.server.manager.get(name, version)
            if m.group(4) == "stream":
                return self._stream(servable, doc)
            signature_name = doc.get("signature_name", "")
            if not isinstance(signature_name, str):
                raise ServerError("INVALID_ARGUMENT", "'signature_name' key must be a string value.")
            tensors, fmt = request_tensors(doc, servable.inputs[servable.signature(signature_name)])
            self._rows = len(next(iter(tensors.values()))) if tensors else 0
            out = servable.predict(signature_name, tensors)
            self._send(200, response_json(out, fmt))
        except ServerError as e:
            self._error(e)
        finally:
            self._end()

    def _stream(self, servable: Servable, doc: dict) -> None:
        """``:stream``: ``generate``'s request answered as server-sent events, chunk by chunk,
        through the model's ``start``/``continue`` signatures (:func:`stream_request`,
        :func:`sse_events`). A bad request is a JSON error before any event; the connection
        closes after the last event. A client that goes away stops its generation."""
        if not servable.has_streaming():
            raise ServerError("NOT_FOUND", f"{self.server.manager.name} version {servable.version} has no "
                              f"streaming signatures ({', '.join(STREAM_SIGNATURES)}): use :predict")
        inputs, chunk = stream_request(doc, servable.inputs[servable.signature("generate")])
        self._rows = len(inputs["prompt"])
        events = sse_events(lambda name, x: servable.predict(name, _typed(x, servable.inputs[name])), inputs, chunk)
        first = next(events)  # runs `start`: its error is still an HTTP error
        self._status = 200
        sent = 0
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")  # the body ends when the connection does
            self.close_connection = True
            self.end_headers()
            self.wfile.write(first)
            sent += 1
            for event in events:
                if self.server.draining.is_set():
                    self.wfile.write(sse_event({"error": "the server is shutting down"}, "error"))
                    break
                self.wfile.write(event)
                sent += 1
        except ServerError as e:  # a later chunk failed: the client gets it as the last event
            self._write_quietly(sse_event({"error": e.message}, "error"))
        except (ConnectionError, TimeoutError):  # the client went away (or stopped reading)
            self._status = 499  # nginx's "client closed request", as TF Serving's CANCELLED
        finally:
            events.close()  # no more chunks are computed for this client
            self._rows = f"{self._rows} events={sent}"
            self._done()

    def _write_quietly(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except (ConnectionError, TimeoutError):
            pass

    do_HEAD = do_GET


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def parse_json_body(body: bytes) -> dict:
    if not body:
        raise ServerError("INVALID_ARGUMENT", "JSON Parse error: The document is empty")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ServerError("INVALID_ARGUMENT", f"JSON Parse error: {str(e)[:200]}") from None
    if not isinstance(doc, dict):
        raise ServerError("INVALID_ARGUMENT", "JSON Value: the request body is not an object")
    return doc


# ------------------------------------------------------------------------------ :stream


def stream_request(doc: dict, dtypes: dict) -> tuple[dict, int]:
    """A ``:stream`` body -> (``generate``'s inputs as [B] arrays, chunk size).

    The body is a ``generate`` ``:predict`` body (``instances`` or ``inputs``;
    ``signature_name``, if given, must be ``generate``) plus an optional top-level ``"chunk"``
    (new characters per event, default streaming.DEFAULT_CHUNK). ``max_length`` may exceed
    MAX_NEW_CHARS: only each chunk is bound by it.

    >>> import tensorflow as tf
    >>> dtypes = {k: tf.as_dtype(v) for k, v in contract.GENERATE_INPUTS.items()}
    >>> row = dict(prompt="Today ", max_length=3000, temperature=0.8, top_k=0, top_p=1.0, seed=7)
    >>> inputs, chunk = stream_request({"instances": [row], "chunk": 64}, dtypes)
    >>> inputs["max_length"].tolist(), chunk
    ([3000], 64)
    """
    from tfchargen.generation.streaming import DEFAULT_CHUNK

    doc = dict(doc)
    signature_name = doc.pop("signature_name", "generate")
    if signature_name not in ("generate", ""):
        raise ServerError("INVALID_ARGUMENT", f":stream runs the generate signature (start/continue), "
                          f"not {str(signature_name)[:100]!r}")
    chunk = doc.pop("chunk", DEFAULT_CHUNK)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= contract.MAX_NEW_CHARS:
        raise ServerError("INVALID_ARGUMENT", f"'chunk' must be an integer in 1..{contract.MAX_NEW_CHARS}, "
                          f"got {json.dumps(chunk)[:100]}")
    tensors, _ = request_tensors(doc, dtypes)
    # The graph's checks, on max_length as the first chunk asks for it.
    first = dict(tensors)
    length = first.get("max_length")
    if isinstance(length, np.ndarray) and length.ndim == 1 and length.dtype == np.int32:
        first["max_length"] = np.minimum(length, contract.MAX_NEW_CHARS).astype(np.int32)
    if not len(check_inputs(first, dtypes)["prompt"]):
        raise ServerError("INVALID_ARGUMENT", "no rows to stream")
    return tensors, chunk


def _typed(inputs: dict, dtypes: dict) -> dict:
    """streaming.chunks' inputs (lists or arrays) as the signature's numpy dtypes."""
    out = {}
    for k, v in inputs.items():
        if dtypes[k].name == "string":
            arr = np.empty(len(v), object)
            arr[:] = list(v)
            out[k] = arr
        else:
            out[k] = np.asarray(v, dtype=dtypes[k].as_numpy_dtype)
    return out


def sse_event(data: dict, event: str | None = None) -> bytes:
    """One server-sent event: ``event: NAME`` (optional), ``data: JSON``, a blank line.

    >>> sse_event({"index": 0, "num_chars": 3}, "done")
    b'event: done\\ndata: {"index": 0, "num_chars": 3}\\n\\n'
    """
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode("utf-8")


def sse_events(predict, inputs: dict, chunk: int):
    """The events of one ``:stream`` request: per chunk, one ``data`` event per row that
    produced text, ``{"index", "text", "continuation", "num_chars"}`` (the first chunk's
    ``text`` starts with the row's normalized prompt, so the ``text`` fields concatenated are
    ``generate``'s ``text``); then one ``event: done`` per row with its totals,
    ``{"index", "num_chars", "ended_with_eos", "log_prob"}``. Chunks come from
    :func:`tfchargen.generation.streaming.chunks` over ``predict(signature, inputs)``.
    """
    from tfchargen.generation.streaming import chunks

    n = len(inputs["prompt"])
    controls = {k: inputs[k] for k in contract.CONTROLS}
    total = np.zeros(n, np.int64)
    log_prob = np.zeros(n, np.float64)
    ended = np.zeros(n, bool)
    for i, out in enumerate(chunks(predict, list(inputs["prompt"]), chunk=chunk, **controls)):
        total += out["num_chars"]
        log_prob += out["log_prob"]
        ended |= out["ended_with_eos"]
        for row in range(n):
            if out["num_chars"][row] or (i == 0 and out["text"][row]):
                yield sse_event({"index": row, "text": out["text"][row].decode("utf-8", "replace"),
                                 "continuation": out["continuation"][row].decode("utf-8", "replace"),
                                 "num_chars": int(out["num_chars"][row])})
    for row in range(n):
        yield sse_event({"index": row, "num_chars": int(total[row]), "ended_with_eos": bool(ended[row]),
                         "log_prob": float(np.float32(log_prob[row]))}, "done")


# ------------------------------------------------------------------------------ gRPC


def grpc_server(manager: ModelManager, address: str, limits=LIMITS):
    """A grpc.Server with PredictionService and ModelService; returns (server, port)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

    def logged(method: str, fn):
        def call(request, context):
            t0, rows, code = time.monotonic(), 0, "OK"
            try:
                reply, rows = fn(request)
                return reply
            except ServerError as e:
                code = e.code
                context.abort(getattr(grpc.StatusCode, e.code), e.message)
            finally:
                log(f"GRPC {method} {code} rows={rows} {(time.monotonic() - t0) * 1000:.1f}ms")
        return call

    def spec_of(request):
        spec = request.model_spec
        return spec.name, spec.version.value if spec.HasField("version") else None

    def predict(request):
        name, version = spec_of(request)
        servable = manager.get(name, version)
        tensors = {}
        for key, proto in request.inputs.items():
            try:
                tensors[key] = tf.make_ndarray(proto)
            except (TypeError, ValueError) as e:
                raise ServerError("INVALID_ARGUMENT", f"input {key} is not a valid TensorProto: {e}") from None
        rows = len(next(iter(tensors.values()))) if tensors and next(iter(tensors.values())).ndim else 0
        out = servable.predict(request.model_spec.signature_name, tensors)
        reply = predict_pb2.PredictResponse()
        reply.model_spec.name = name
        reply.model_spec.version.value = servable.version
        reply.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        wanted = set(request.output_filter) or set(out)
        for key, value in out.items():
            if key in wanted:
                reply.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return reply, rows

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        Predict = staticmethod(logged("Predict", predict))
        GetModelMetadata = staticmethod(logged("GetModelMetadata",
                                               lambda r: (manager.metadata(*spec_of(r)), 0)))

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        GetModelStatus = staticmethod(logged("GetModelStatus", lambda r: (manager.status(*spec_of(r)), 0)))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=limits["max_connections"],
                                                    thread_name_prefix="grpc"),
                         maximum_concurrent_rpcs=limits["max_connections"],
                         options=[("grpc.max_receive_message_length", limits["max_body_bytes"]),
                                  ("grpc.max_send_message_length", 64 << 20),
                                  ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"cannot listen on {address} (gRPC): {e}") from None
    if not port:
        raise OSError(f"cannot listen on {address} (gRPC): address in use or unavailable")
    return server, port


# ------------------------------------------------------------------------------ the server


class Server:
    """REST + gRPC over one model's versions. ``port``/``grpc_port`` 0 = any free port
    (``grpc_port=None`` = no gRPC).

    Args:
        model: export base or version directory.
        name: model name (default: the base folder's name).
        host: address to bind (127.0.0.1 unless told).
        versions: "latest", "all" or a tuple of version numbers.
        max_batch, batch_timeout_ms, batch_threads: request batching (batching.py).

    >>> with Server("models/chargen", port=0, grpc_port=0) as s:  # doctest: +SKIP
    ...     RestClient(s.rest_url, s.name).generate(["Today "])
    """

    def __init__(self, model: str, name: str | None = None, host: str = "127.0.0.1", port: int = 8501,
                 grpc_port: int | None = 8500, versions="latest", max_batch: int = 64,
                 batch_timeout_ms: float = DEFAULT_TIMEOUT_MS, batch_threads: int = 2, poll_seconds: float = POLL_SECONDS,
                 read_timeout_s: float = LIMITS["read_timeout_s"]):
        if not os.path.isdir(model):
            raise FileNotFoundError(f"no such model directory: {model}")
        if max_batch < 1 or batch_timeout_ms < 0 or batch_threads < 1:
            raise ValueError("--max-batch and --batch-threads must be >= 1 and --batch-timeout-ms >= 0")
        if read_timeout_s <= 0:
            raise ValueError("--read-timeout must be > 0")
        limits = {**LIMITS, "read_timeout_s": read_timeout_s}
        self.name = name or os.path.basename(os.path.normpath(model))
        self.host = host
        self.manager = ModelManager(model, self.name, versions, poll_seconds, max_batch=max_batch,
                                    batch_timeout_s=batch_timeout_ms / 1000, batch_threads=batch_threads)
        try:  # bind first: a port in use fails in a second, before the model loads
            self._http = RestServer((host, port), self.manager, limits)
        except OSError as e:
            raise OSError(f"cannot listen on {host}:{port} (REST): {e.strerror or e}") from None
        self.port = self._http.server_address[1]
        self._grpc, self.grpc_port = None, None
        if grpc_port is not None:
            try:
                self._grpc, self.grpc_port = grpc_server(self.manager, f"{host}:{grpc_port}", limits)
            except OSError:
                self._http.server_close()
                raise
        self.rest_url = f"http://{host}:{self.port}"
        self.grpc_target = f"{host}:{self.grpc_port}" if self.grpc_port else None
        self._thread = None

    def start(self) -> "Server":
        try:
            self.manager.load_initial()
        except Exception:
            self._http.server_close()
            if self._grpc:
                self._grpc.stop(None)
            raise
        self.manager.start_polling()
        if self._grpc:
            self._grpc.start()
        self._thread = threading.Thread(target=self._http.serve_forever, name="rest", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace_s: float = LIMITS["shutdown_grace_s"]) -> None:
        """Refuses new requests (503), lets in-flight ones finish (up to ``grace_s``), stops."""
        self._http.draining.set()
        grpc_done = self._grpc.stop(grace_s) if self._grpc else None
        deadline = time.monotonic() + grace_s
        while self._http.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        self._http.shutdown()
        self._http.server_close()
        if grpc_done is not None:
            grpc_done.wait(max(0.0, deadline - time.monotonic()))
        self.manager.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``tfchargen serve`` flags."""
    p.description = ("Serve an export base with TF Serving's REST and gRPC APIs (and a page at /), with "
                     "request batching; new versions are loaded as they appear.")
    p.add_argument("--model", required=True, help="export base (e.g. models/chargen) or one version's directory")
    p.add_argument("--model-name", help="the name clients use (default: the base folder's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8501, help="REST port (default 8501; 0 = any free port)")
    p.add_argument("--grpc-port", type=int, default=8500, help="gRPC port (default 8500; 0 = off)")
    p.add_argument("--versions", type=parse_versions, default="latest",
                   help="latest (default), all, or comma-separated version numbers")
    p.add_argument("--max-batch", type=int, default=64, help="rows per merged batch (default 64; 1 = no batching)")
    p.add_argument("--batch-timeout-ms", type=float, default=DEFAULT_TIMEOUT_MS,
                   help=f"a batch closes once no request has joined it for this long (default {DEFAULT_TIMEOUT_MS:g})")
    p.add_argument("--batch-threads", type=int, default=2, help="batches run at once (default 2)")
    p.add_argument("--poll-seconds", type=float, default=POLL_SECONDS,
                   help=f"how often to look for new versions (default {POLL_SECONDS:g})")
    p.add_argument("--read-timeout", type=float, default=LIMITS["read_timeout_s"],
                   help=f"seconds a client has to send its request (default {LIMITS['read_timeout_s']:g}; then 408)")
    return p


def main(args) -> int:
    """Runs ``tfchargen serve`` until SIGTERM or Ctrl-C."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = Server(args.model, args.model_name, args.host, args.port, args.grpc_port or None, args.versions,
                    args.max_batch, args.batch_timeout_ms, args.batch_threads, args.poll_seconds,
                    args.read_timeout).start()
    versions = ", ".join(str(v) for v in sorted(server.manager.servables()))
    grpc_part = f", gRPC {server.grpc_target}" if server.grpc_target else ""
    log(f"tfchargen serve: {server.name} version {versions} on REST {server.rest_url}{grpc_part} "
        f"(page: {server.rest_url}/)")
    stop.wait()
    log("tfchargen serve: stopping (in-flight requests finish)")
    server.stop()
    log("tfchargen serve: stopped")
    return 0
