"""`tfchargen serve`: TensorFlow Serving's Predict API for an exported model, on one machine.

    tfchargen serve --model models/chargen            # REST :8501, gRPC :8500, page at /

It loads the newest version under an export base (or the versions ``--versions`` asks for),
polls the base for versions ``tfchargen export`` writes, replays each new version's warmup
records before it answers requests, and unloads versions that leave the disk (manager.py,
servable.py). It speaks TF Serving's protocols, so every client of TF Serving
(``tfchargen.serving.client``, the C and Go clients, ``curl``) works unchanged:

* REST (rest.py over transport.py; TF Serving's ``api_rest.md``, ``util/json_tensor.cc``
  in json_tensor.py): ``GET /v1/models/NAME[/versions/N]`` (status), ``GET .../metadata``
  (signature_def), ``POST /v1/models/NAME[/versions/N]:predict`` with row (``instances``) or
  columnar (``inputs``) JSON, ``{"b64": ...}`` strings; errors ``{"error": "..."}`` with TF
  Serving's status -> HTTP mapping (errors.py). ``POST ...:stream`` (ours, not TF Serving's;
  stream.py) takes a ``generate`` request and answers its text as server-sent events, chunk
  by chunk, when the model has ``start``/``continue`` signatures (404 otherwise). ``GET /``
  is a page to try the model.
* gRPC (grpc_service.py): ``tensorflow.serving.PredictionService`` (Predict,
  GetModelMetadata) and ``ModelService/GetModelStatus`` with the ``tensorflow-serving-api``
  protos; errors are gRPC statuses with TensorFlow's code and message.

Request batching (batching.py): concurrent ``generate``/``serving_default`` requests are
merged into one call of at most ``--max-batch`` rows, which closes once no request has joined
it for ``--batch-timeout-ms``, grouped by ``max_length`` bucket. Sampling is per row, so a request
returns exactly what it returns alone. ``--max-batch 1`` turns batching off (every request
runs on its own, concurrently).

Limits (config.py, LIMITS): the body of a REST request, rows per request, concurrent
connections/RPCs, and how long a client may take to send its request.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time

from tfchargen.serving.config import LIMITS, ServerConfig, add_arguments
from tfchargen.serving.errors import log
from tfchargen.serving.grpc_service import grpc_server
from tfchargen.serving.manager import ModelManager
from tfchargen.serving.rest import RestHandler
from tfchargen.serving.transport import RestServer

__all__ = ["Server", "ServerConfig", "add_arguments", "main"]


class Server:
    """REST + gRPC over one model's versions.

    Args:
        model: export base or version directory.
        name: model name (default: the base folder's name).
        **options: the other :class:`ServerConfig` fields (host, port, grpc_port, versions,
            max_batch, batch_timeout_ms, batch_threads, poll_seconds, read_timeout_s);
            ``port``/``grpc_port`` 0 = any free port, ``grpc_port=None`` = no gRPC.

    >>> with Server("models/chargen", port=0, grpc_port=0) as s:  # doctest: +SKIP
    ...     RestClient(s.rest_url, s.name).generate(["Today "])
    """

    def __init__(self, model: str, name: str | None = None, **options):
        self.config = config = ServerConfig(model, name, **options)
        limits = config.limits()
        self.name, self.host = config.model_name, config.host
        self.manager = ModelManager(config.model, self.name, config.versions, config.poll_seconds, **config.batching())
        try:  # bind first: a port in use fails in a second, before the model loads
            self._http = RestServer((config.host, config.port), RestHandler, self.manager, limits)
        except OSError as e:
            raise OSError(f"cannot listen on {config.host}:{config.port} (REST): {e.strerror or e}") from None
        self.port = self._http.server_address[1]
        self._grpc, self.grpc_port = None, None
        if config.grpc_port is not None:
            try:
                self._grpc, self.grpc_port = grpc_server(self.manager, f"{config.host}:{config.grpc_port}", limits)
            except OSError:
                self._http.server_close()
                raise
        self.rest_url = f"http://{config.host}:{self.port}"
        self.grpc_target = f"{config.host}:{self.grpc_port}" if self.grpc_port else None
        self._thread = None

    @classmethod
    def from_config(cls, config: ServerConfig) -> "Server":
        return cls(**dataclasses.asdict(config))

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


def main(args) -> int:
    """Runs ``tfchargen serve`` (flags of :func:`add_arguments`) until SIGTERM or Ctrl-C."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = Server.from_config(ServerConfig.from_args(args)).start()
    versions = ", ".join(str(v) for v in sorted(server.manager.servables()))
    grpc_part = f", gRPC {server.grpc_target}" if server.grpc_target else ""
    log(f"tfchargen serve: {server.name} version {versions} on REST {server.rest_url}{grpc_part} "
        f"(page: {server.rest_url}/)")
    stop.wait()
    log("tfchargen serve: stopping (in-flight requests finish)")
    server.stop()
    log("tfchargen serve: stopped")
    return 0
