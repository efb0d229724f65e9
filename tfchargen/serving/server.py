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

from tfchargen.serving import monitoring
from tfchargen.serving.config import LIMITS, ServerConfig, add_arguments
from tfchargen.serving.errors import log
from tfchargen.serving.grpc_service import grpc_server
from tfchargen.serving.manager import ModelManager
from tfchargen.serving.model_config import ModelSpec, read_model_config
from tfchargen.serving.models import Models
from tfchargen.serving.transport import RestServer

__all__ = ["Server", "ServerConfig", "add_arguments", "main"]


class Server:
    """REST + gRPC over one model's versions, or over every model of a ``--model_config_file``.

    Args:
        model: export base or version directory (None with ``models``).
        name: model name (default: the base folder's name).
        **options: the other :class:`ServerConfig` fields (host, port, grpc_port, versions,
            max_batch, batch_timeout_ms, batch_threads, poll_seconds, read_timeout_s, models,
            metrics_path, xla, health, ...); ``port``/``grpc_port`` 0 = any free port, None = off.

    >>> with Server("models/chargen", port=0, grpc_port=0) as s:  # doctest: +SKIP
    ...     RestClient(s.rest_url, s.name).generate(["Today "])
    """

    def __init__(self, model: str | None, name: str | None = None, **options):
        self.config = config = ServerConfig(model, name, **options)
        limits = config.limits()
        self.name, self.host = config.model_name, config.host
        self.manager = self.models = Models([self._manager(s) for s in self._specs()], self._manager,
                                            config.allow_unavailable_labels)
        self._http, self.port, self._grpc, self.grpc_port, self._health = None, None, None, None, None
        try:  # bind first: a port in use fails in a second, before the models load
            if config.port is not None:
                self._http = _rest_server(config, self.models, limits)
                self._http.metrics_path = config.metrics_path
                self.port = self._http.server_address[1]
            if config.grpc_port is not None:
                self._grpc, self.grpc_port = grpc_server(self.models, f"{config.host}:{config.grpc_port}", limits)
                if config.health:
                    self._health = monitoring.add_health(self._grpc)
        except OSError:
            if self._http:
                self._http.server_close()
            raise
        host = f"[{config.host}]" if ":" in config.host else config.host
        self.rest_url = f"http://{host}:{self.port}" if self._http else None
        self.grpc_target = f"{host}:{self.grpc_port}" if self.grpc_port else None
        self._thread = None

    def _specs(self) -> list:
        config = self.config
        if config.models:
            return list(config.models)
        return [ModelSpec(self.name, config.model, config.versions)]

    def _manager(self, spec: ModelSpec) -> ModelManager:
        config = self.config
        return ModelManager(spec.base_path, spec.name, spec.policy, config.poll_seconds, labels=spec.labels,
                            warmup=config.warmup, xla=config.xla, **config.batching())

    @classmethod
    def from_config(cls, config: ServerConfig) -> "Server":
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})

    def start(self) -> "Server":
        try:
            self.models.load_initial()
        except Exception:
            self.models.stop()
            if self._http:
                self._http.server_close()
            if self._grpc:
                self._grpc.stop(None)
            raise
        self.models.start_polling()
        if self.config.model_config_file and self.config.config_poll_seconds > 0:
            self.models.watch_config(lambda: read_model_config(self.config.model_config_file),
                                     self.config.config_poll_seconds)
        if self._grpc:
            self._grpc.start()
            if self._health:
                monitoring.set_serving(self._health, True)
        if self._http:
            self._thread = threading.Thread(target=self._http.serve_forever, name="rest", daemon=True)
            self._thread.start()
        return self

    def stop(self, grace_s: float = LIMITS["shutdown_grace_s"]) -> None:
        """Refuses new requests (503), lets in-flight ones finish (up to ``grace_s``), stops."""
        if self._health:
            monitoring.set_serving(self._health, False)
        if self._http:
            self._http.draining.set()
        grpc_done = self._grpc.stop(grace_s) if self._grpc else None
        deadline = time.monotonic() + grace_s
        while self._http and self._http.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._http:
            self._http.shutdown()
            self._http.server_close()
        if grpc_done is not None:
            grpc_done.wait(max(0.0, deadline - time.monotonic()))
        self.models.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _rest_server(config: ServerConfig, models, limits) -> RestServer:
    try:
        return RestServer((config.host, config.port), monitoring.RestHandler, models, limits)
    except OSError as e:
        raise OSError(f"cannot listen on {config.host}:{config.port} (REST): {e.strerror or e}") from None


def main(args, config: ServerConfig | None = None) -> int:
    """Runs ``tfchargen serve`` (flags of :func:`add_arguments`, or their ``config``) until
    SIGTERM or Ctrl-C."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = Server.from_config(config or ServerConfig.from_args(args)).start()
    served = "; ".join(f"{name} version {', '.join(str(v) for v in sorted(m.servables()))}"
                       for name, m in server.models.managers().items())
    where = [f"REST {server.rest_url} (page: {server.rest_url}/)"] if server.rest_url else []
    where += [f"gRPC {server.grpc_target}"] if server.grpc_target else []
    log(f"tfchargen serve: {served} on {', '.join(where)}")
    stop.wait()
    log("tfchargen serve: stopping (in-flight requests finish)")
    server.stop()
    log("tfchargen serve: stopped")
    return 0
