"""Clients for a TF Serving model server running the exported chargen SavedModel.

    RestClient("http://localhost:8501", "chargen")    POST /v1/models/NAME[/versions/N]:predict
    GrpcClient("localhost:8500", "chargen")           PredictionService.Predict

Both have the same methods: ``predict(inputs, signature_name)`` (any signature; inputs are
lists or numpy arrays batched on dimension 0), ``generate(prompts, controls)`` and
``score(texts)`` (the SavedModel's signatures), ``stream(prompt, controls, chunk=...)`` (an
iterator of text chunks: ``start`` then ``continue``; RestClient asks ``tfchargen serve``'s
``:stream`` first, one request for the whole stream), ``status()``. ``controls`` is a
``tfchargen.contract.Controls`` (the sampling controls; unset ones take the serving
defaults). Outputs are numpy arrays like a local SavedModel's ``.numpy()`` results: string
tensors as ``bytes`` objects.

Failures raise :class:`ServingError` with the server's own error text (e.g. the
InvalidArgument a graph raises for ``top_p=2``). Connection failures and UNAVAILABLE
(gRPC) / HTTP 503 (REST: TF Serving maps UNAVAILABLE, e.g. a full batching queue or a model
still loading, to 503) are retried ``retries`` times with exponential backoff; a timeout is
not retried (the server may still be working on the request).

REST follows TF Serving's documented JSON mapping: strings are sent as JSON strings when
they are valid UTF-8 and as ``{"b64": ...}`` otherwise (or always, ``always_b64=True``);
output strings come back as JSON strings, or as ``{"b64": ...}`` for outputs whose name ends
in ``_bytes``; both are decoded. Only the standard library is used for HTTP
(``http.client``); connections are kept alive and reused between requests.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
import urllib.parse

import numpy as np

from tfchargen import contract
from tfchargen.contract import DEFAULT_CHUNK, Controls

# Private names here: helpers of this module's code, not part of the clients' API.
from tfchargen.serving.json_tensor import as_bytes as _as_bytes
from tfchargen.serving.json_tensor import from_json as _from_json
from tfchargen.serving.json_tensor import json_value as _json_value
from tfchargen.serving.json_tensor import message_json


def _numpy_dtype(name: str):
    """A contract dtype name as numpy's: strings are ``bytes`` objects."""
    return object if name == "string" else np.dtype(name)


# numpy dtypes of the exported signatures' inputs and outputs, by name (contract.SIGNATURES).
_DTYPES = {name: _numpy_dtype(dtype) for specs in contract.SIGNATURES.values() for spec in specs
           for name, dtype in spec.items()}


class ServingError(RuntimeError):
    """A request the server refused or could not answer. ``code`` is the gRPC status name
    (``INVALID_ARGUMENT``, ``UNAVAILABLE`` ...) or ``HTTP <status>``; ``retryable`` says
    whether it was a transient failure (retries exhausted)."""

    def __init__(self, message: str, code: str | None = None, retryable: bool = False):
        super().__init__(message)
        self.code = code
        self.retryable = retryable


def _controls(controls: Controls | None, values: dict) -> Controls:
    """A call's controls: ``controls`` (or the defaults) with the keyword ``values`` over it;
    a keyword that names no control is a TypeError, as for any function."""
    unknown = set(values) - set(contract.CONTROLS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    return (controls or Controls()).replace(**values)


def _backoff(attempt: int, base: float, cap: float = 2.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * 2 ** attempt))


class _Client:
    model_name: str
    version: int | None

    def predict(self, inputs: dict, signature_name: str = "serving_default") -> dict[str, np.ndarray]:
        raise NotImplementedError

    def generate(self, prompts, controls: Controls | None = None, **control_values):
        """The ``generate`` signature. The controls come as a ``Controls`` or as keywords
        (``max_length=60, seed=[1, 2]``; keywords override the ``Controls``' fields). Each is
        a scalar (used for every prompt) or a list with one value per prompt (the server
        refuses another number of values); None takes the serving default."""
        controls = _controls(controls, control_values)
        prompts = [_as_bytes(p) for p in prompts]
        n = len(prompts)
        inputs = {"prompt": prompts, **controls.rows(n, strict=False)}
        if n == 0:  # TF Serving refuses an empty "instances" list; the answer is known anyway
            return {k: np.zeros([0], _DTYPES[k]) for k in contract.GENERATE_OUTPUTS}
        return self.predict(inputs, "generate")

    def score(self, texts):
        """The ``score`` signature: nats_per_char, log_prob, num_chars per text."""
        texts = [_as_bytes(t) for t in texts]
        if not texts:
            return {k: np.zeros([0], _DTYPES[k]) for k in contract.SCORE_OUTPUTS}
        return self.predict({"text": texts}, "score")

    def stream(self, prompt, controls: Controls | None = None, chunk: int = DEFAULT_CHUNK, **control_values):
        """Iterates over one prompt's text, chunk by chunk (str): the first chunk starts with
        the prompt, ``"".join(...)`` is the whole text. Runs ``start`` and then ``continue``
        (tfchargen/generation/streaming.py); the controls as in :meth:`generate`, and
        ``max_length`` may exceed one call's 2048. Every request has this client's timeout
        and retries: a retried chunk is the same chunk, never repeated text.
        """
        from tfchargen.generation.streaming import chunks

        controls = _controls(controls, control_values)
        for out in chunks(lambda signature, inputs: self.predict(inputs, signature), [_as_bytes(prompt)],
                          controls, chunk):
            yield out["text"][0].decode("utf-8")

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------------------- REST


def _column(name: str, values: list) -> np.ndarray:
    values = _from_json(values)
    dtype = _DTYPES.get(name)
    if dtype is object or (values and isinstance(values[0], bytes)):
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.asarray(values, dtype=dtype)


def _sse(resp, url: str):
    """(event name or None, data as JSON) of each server-sent event, as it arrives."""
    event, data = None, []
    try:
        for raw in resp:
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                if data:
                    yield event, json.loads("\n".join(data))
                event, data = None, []
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
    except (OSError, http.client.HTTPException) as e:
        raise ServingError(f"POST {url}: the stream broke off: {e!r}", "UNAVAILABLE") from e
    if data:
        yield event, json.loads("\n".join(data))


class RestClient(_Client):
    """TF Serving's REST API (default port 8501).

    ``request_format`` is ``"columnar"`` (``{"inputs": {name: [...]}}``, the default, compact)
    or ``"row"`` (``{"instances": [{name: value, ...}, ...]}``, or a plain list when the
    signature has one input). ``timeout`` is seconds per attempt. ``sse=False`` makes
    :meth:`stream` use ``start``/``continue`` on ``:predict`` even where ``:stream`` exists.
    """

    def __init__(self, url: str, model_name: str = "chargen", version: int | None = None,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 0.1,
                 request_format: str = "columnar", always_b64: bool = False, sse: bool = True):
        if "://" not in url:
            url = "http://" + url
        if request_format not in ("columnar", "row"):
            raise ValueError("request_format must be 'columnar' or 'row'")
        self.url, self.model_name, self.version = url.rstrip("/"), model_name, version
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.request_format, self.always_b64, self.sse = request_format, always_b64, sse
        self._idle: list[http.client.HTTPConnection] = []  # kept-alive connections, one per caller at a time
        self._lock = threading.Lock()

    def _model_url(self) -> str:
        url = f"{self.url}/v1/models/{self.model_name}"
        return url if self.version is None else f"{url}/versions/{int(self.version)}"

    def _connection(self, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        """(a connection to the server, whether it served a request before)."""
        if not fresh:
            with self._lock:
                if self._idle:
                    return self._idle.pop(), True
        parts = urllib.parse.urlsplit(self.url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return cls(parts.hostname, parts.port, timeout=self.timeout), False

    def _send(self, method: str, url: str, data: bytes | None, fresh: bool):
        """One request -> (response, its connection); a kept-alive connection the server
        has closed meanwhile is replaced once, which is not a retry."""
        target = urllib.parse.urlsplit(url)
        path = target.path + (f"?{target.query}" if target.query else "")
        headers = {"Content-Type": "application/json"}
        while True:
            conn, reused = self._connection(fresh)
            try:
                conn.request(method, path, body=data, headers=headers)
                return conn.getresponse(), conn
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if not reused:
                    raise
            except BaseException:
                conn.close()
                raise

    def _request(self, method: str, url: str, body: dict | None = None, keep: list | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(_backoff(attempt - 1, self.backoff))
            try:
                resp, conn = self._send(method, url, data, fresh=keep is not None)
                if keep is not None and resp.status == 200:  # the caller reads the body (and closes it)
                    keep.append(resp)
                    return {}
                try:
                    payload = resp.read()
                except BaseException:
                    conn.close()
                    raise
            except (socket.timeout, TimeoutError) as e:
                raise ServingError(f"{method} {url}: no answer within {self.timeout:g} s (timeout)",
                                   "DEADLINE_EXCEEDED") from e
            except (ConnectionRefusedError, socket.gaierror) as e:
                last = ServingError(f"{method} {url}: cannot connect: {e}", "UNAVAILABLE", True)
                continue
            except (OSError, http.client.HTTPException) as e:
                last = ServingError(f"{method} {url}: connection failed: {e!r}", "UNAVAILABLE", True)
                continue
            if resp.will_close or keep is not None:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
            if resp.status == 200:
                return json.loads(payload.decode("utf-8"))
            text = payload.decode("utf-8", "replace")
            try:
                message = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                message = text
            if resp.status == 503:
                last = ServingError(f"{method} {url}: HTTP 503 (unavailable): {message}", "HTTP 503", True)
                continue
            raise ServingError(f"{method} {url}: HTTP {resp.status}: {message}", f"HTTP {resp.status}")
        raise ServingError(f"{last} (gave up after {self.retries + 1} attempts)", last.code, True)

    def close(self):
        """Closes the kept-alive connections (the client stays usable: it opens new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def predict(self, inputs: dict, signature_name: str = "serving_default") -> dict[str, np.ndarray]:
        names = list(inputs)
        body = {"signature_name": signature_name}
        if self.request_format == "columnar":
            body["inputs"] = {k: _json_value(v, self.always_b64) for k, v in inputs.items()}
        else:
            cols = {k: _json_value(v, self.always_b64) for k, v in inputs.items()}
            n = len(cols[names[0]])
            if any(len(c) != n for c in cols.values()):
                raise ValueError("row format needs every input to have the same batch size")
            body["instances"] = (cols[names[0]] if len(names) == 1
                                 else [{k: cols[k][i] for k in names} for i in range(n)])
        reply = self._request("POST", self._model_url() + ":predict", body)
        if "outputs" in reply:
            out = reply["outputs"]
            if not isinstance(out, dict) or set(out) == {"b64"}:  # a single output, unnamed
                out = {"output": out}
            return {k: _column(k, v) for k, v in out.items()}
        rows = reply.get("predictions")
        if rows is None:
            raise ServingError(f"unexpected reply from {self.url}: {str(reply)[:200]}")
        if rows and isinstance(rows[0], dict) and set(rows[0]) != {"b64"}:
            return {k: _column(k, [r[k] for r in rows]) for k in rows[0]}
        return {"output": _column("output", rows)}

    def status(self) -> dict:
        """GET /v1/models/NAME[/versions/N]: the GetModelStatusResponse as JSON."""
        return self._request("GET", self._model_url())

    def stream(self, prompt, controls: Controls | None = None, chunk: int = DEFAULT_CHUNK, **control_values):
        """Like :meth:`_Client.stream`, through ``POST ...:stream`` (server-sent events, one
        request) when the server has it: ``tfchargen serve`` does, TF Serving does not (400
        "Malformed request"), nor does a model without ``start``/``continue`` (404); those
        stream through ``start``/``continue`` on ``:predict``, with its per-chunk retries.
        ``:stream`` is retried like any request until its first event arrives; a connection
        lost after that is a ServingError (the text so far has been yielded)."""
        controls = _controls(controls, control_values)
        if not self.sse:
            yield from super().stream(prompt, controls, chunk)
            return
        inputs = {"prompt": [_json_value(_as_bytes(prompt), self.always_b64)]}
        inputs.update({k: [_json_value(v, False)] for k, v in controls.resolved().items()})
        body = {"signature_name": "generate", "inputs": inputs, "chunk": chunk}
        url = self._model_url() + ":stream"
        try:
            resp = self._open("POST", url, body)
        except ServingError as e:
            unknown_verb = e.code == "HTTP 400" and "Malformed request" in str(e)
            if not (unknown_verb or e.code in ("HTTP 404", "HTTP 501")) or "Servable not found" in str(e):
                raise
            yield from super().stream(prompt, controls, chunk)
            return
        with resp:
            for event, data in _sse(resp, url):
                if event == "error":
                    raise ServingError(f"POST {url}: {data.get('error')}", "STREAM")
                if event is None and "text" in data:
                    yield data["text"]

    def _open(self, method: str, url: str, body: dict):
        """The open response of a request (for reading as it arrives), with _request's retries."""
        holder = []
        self._request(method, url, body, keep=holder)
        return holder[0]


# --------------------------------------------------------------------------------------- gRPC


class GrpcClient(_Client):
    """TF Serving's gRPC PredictionService (default port 8500). ``target`` is ``host:port``
    (a ``grpc://`` prefix is accepted). ``timeout`` is the deadline per attempt in seconds."""

    def __init__(self, target: str, model_name: str = "chargen", version: int | None = None,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 0.1,
                 max_message_bytes: int = 256 << 20):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self._grpc = grpc
        self.target = target.split("://", 1)[1] if "://" in target else target
        self.model_name, self.version = model_name, version
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._channel = grpc.insecure_channel(self.target, options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)])
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def _call(self, method, request, what: str):
        grpc = self._grpc
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(_backoff(attempt - 1, self.backoff))
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as e:
                code, details = e.code(), e.details()
                if code == grpc.StatusCode.UNAVAILABLE:
                    last = ServingError(f"{what} at {self.target}: UNAVAILABLE: {details}", code.name, True)
                    continue
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise ServingError(f"{what} at {self.target}: no answer within {self.timeout:g} s "
                                       f"(timeout, DEADLINE_EXCEEDED)", code.name) from None
                raise ServingError(f"{what} at {self.target}: {code.name}: {details}", code.name) from None
        raise ServingError(f"{last} (gave up after {self.retries + 1} attempts)", last.code, True)

    def _spec(self, spec, signature_name: str | None = None):
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = int(self.version)
        if signature_name is not None:
            spec.signature_name = signature_name

    def predict(self, inputs: dict, signature_name: str = "serving_default") -> dict[str, np.ndarray]:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature_name)
        for name, value in inputs.items():
            if _DTYPES.get(name) is object or (len(value) and isinstance(value[0], (str, bytes))):
                value = np.array([_as_bytes(v) for v in value], dtype=object)
            else:
                value = np.asarray(value, dtype=_DTYPES.get(name))
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        reply = self._call(self._stub.Predict, request, f"Predict({self.model_name}, {signature_name})")
        return {k: tf.make_ndarray(v) for k, v in reply.outputs.items()}

    def status(self) -> dict:
        """ModelService.GetModelStatus as a dict like the REST status reply."""
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        reply = self._call(stub.GetModelStatus, request, f"GetModelStatus({self.model_name})")
        return message_json(reply)

    def close(self):
        self._channel.close()


def connect(server: str, model_name: str = "chargen", protocol: str | None = None, **kwargs) -> _Client:
    """A client for ``server``: ``http(s)://...`` -> REST, ``grpc://host:port`` -> gRPC;
    ``protocol`` ("rest" or "grpc") overrides the guess (a bare ``host:port`` is REST)."""
    if protocol is None:
        protocol = "grpc" if server.startswith("grpc://") else "rest"
    if protocol == "rest":
        return RestClient(server, model_name, **kwargs)
    if protocol == "grpc":
        return GrpcClient(server, model_name, **kwargs)
    raise ValueError(f"unknown protocol {protocol!r} (rest or grpc)")
