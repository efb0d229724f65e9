"""What `tfchargen serve` serves and how: the documented limits, :class:`ServerConfig` (one
field per flag) and the flags that build it."""

from __future__ import annotations

import argparse
import dataclasses
import os

from tfchargen.serving.batching import DEFAULT_TIMEOUT_MS
from tfchargen.serving.model_config import METRICS_PATH

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


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """One server's settings; refused at once if one is out of range.

    Args:
        model: export base or version directory (None with ``models``).
        name: model name clients use (default: the base folder's name, :attr:`model_name`).
        host: address to bind (127.0.0.1 unless told).
        port, grpc_port: REST and gRPC ports; 0 = any free port; None = that API is off.
        versions: "latest", "all" or a tuple of version numbers (:func:`parse_versions`).
        max_batch, batch_timeout_ms, batch_threads: request batching (batching.py; ``max_batch``
            1 = off).
        poll_seconds: how often the export base is listed for new versions.
        read_timeout_s: seconds a client has to send its request (LIMITS).
        models: ModelSpecs (model_config.py) to serve instead of ``model``: a
            ``--model_config_file``'s models, each with its version policy and labels.
        model_config_file, config_poll_seconds: the file to re-read every
            ``config_poll_seconds`` (0 = never).
        max_enqueued_batches, allowed_batch_sizes: BatchingParameters (batching.py).
        metrics_path: where REST serves the Prometheus metrics (None = nowhere).
        xla: load versions that need XLA (``--xla_cpu_compilation_enabled``).
        health: serve ``grpc.health.v1.Health`` (``--enable_grpc_healthcheck_service``).
        warmup: replay warmup records (``--enable_model_warmup``).
        allow_unavailable_labels: ``--allow_version_labels_for_unavailable_models``.

    >>> ServerConfig(".", "chargen", port=0).limits()["read_timeout_s"]
    30.0
    >>> ServerConfig(".", max_batch=0)
    Traceback (most recent call last):
    ...
    ValueError: --max-batch and --batch-threads must be >= 1 and --batch-timeout-ms >= 0
    """

    model: str | None
    name: str | None = None
    host: str = "127.0.0.1"
    port: int | None = 8501
    grpc_port: int | None = 8500
    versions: object = "latest"
    max_batch: int = 64
    batch_timeout_ms: float = DEFAULT_TIMEOUT_MS
    batch_threads: int = 2
    poll_seconds: float = POLL_SECONDS
    read_timeout_s: float = LIMITS["read_timeout_s"]
    models: tuple = ()
    model_config_file: str | None = None
    config_poll_seconds: float = 0.0
    max_enqueued_batches: int | None = None
    allowed_batch_sizes: tuple = ()
    metrics_path: str | None = METRICS_PATH
    xla: bool = True
    health: bool = False
    warmup: bool = True
    allow_unavailable_labels: bool = False

    def __post_init__(self):
        if not self.models and not os.path.isdir(self.model or ""):
            raise FileNotFoundError(f"no such model directory: {self.model}")
        if self.port is None and self.grpc_port is None:
            raise ValueError("neither a REST nor a gRPC port: nothing to serve on")
        if self.max_batch < 1 or self.batch_timeout_ms < 0 or self.batch_threads < 1:
            raise ValueError("--max-batch and --batch-threads must be >= 1 and --batch-timeout-ms >= 0")
        if self.read_timeout_s <= 0:
            raise ValueError("--read-timeout must be > 0")

    @property
    def model_name(self) -> str:
        if self.models:
            return self.models[0].name
        return self.name or os.path.basename(os.path.normpath(self.model))

    def limits(self) -> dict:
        return {**LIMITS, "read_timeout_s": self.read_timeout_s}

    def batching(self) -> dict:
        """The Servable's batching arguments."""
        return dict(max_batch=self.max_batch, batch_timeout_s=self.batch_timeout_ms / 1000,
                    batch_threads=self.batch_threads, max_enqueued_batches=self.max_enqueued_batches,
                    allowed_batch_sizes=self.allowed_batch_sizes)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ServerConfig":
        """The config of parsed :func:`add_arguments` flags: tensorflow_model_server's when any
        of its flags is given (tf_flags.py), else ours (``--grpc-port 0`` = no gRPC)."""
        from tfchargen.serving import tf_flags

        if tf_flags.given(args):
            return cls(**tf_flags.config_fields(args))
        if args.model is None:
            raise ValueError("--model is required (or tensorflow_model_server's --model_base_path or "
                             "--model_config_file)")
        return cls(args.model, args.model_name, host=args.host or "127.0.0.1", port=8501 if args.port is None
                   else args.port, grpc_port=8500 if args.grpc_port is None else args.grpc_port or None,
                   versions=args.versions or "latest", max_batch=_or(args.max_batch, 64),
                   batch_timeout_ms=_or(args.batch_timeout_ms, DEFAULT_TIMEOUT_MS),
                   batch_threads=_or(args.batch_threads, 2), poll_seconds=_or(args.poll_seconds, POLL_SECONDS),
                   read_timeout_s=args.read_timeout)


def _or(value, default):
    return default if value is None else value


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``tfchargen serve`` flags."""
    p.description = ("Serve an export base with TF Serving's REST and gRPC APIs (and a page at /), with "
                     "request batching; new versions are loaded as they appear.")
    p.allow_abbrev = False  # --model is not --model_name, as in tensorflow_model_server
    p.add_argument("--model", help="export base (e.g. models/chargen) or one version's directory")
    p.add_argument("--model-name", help="the name clients use (default: the base folder's name)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 with "
                   "tensorflow_model_server's flags, as it binds)")
    p.add_argument("--port", type=int, help="REST port (default 8501; 0 = any free port); with "
                   "tensorflow_model_server's flags: its gRPC port (see --rest_api_port)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default 8500; 0 = off)")
    p.add_argument("--versions", type=parse_versions,
                   help="latest (default), all, or comma-separated version numbers")
    p.add_argument("--max-batch", type=int, help="rows per merged batch (default 64; 1 = no batching)")
    p.add_argument("--batch-timeout-ms", type=float,
                   help=f"a batch closes once no request has joined it for this long (default {DEFAULT_TIMEOUT_MS:g})")
    p.add_argument("--batch-threads", type=int, help="batches run at once (default 2)")
    p.add_argument("--poll-seconds", type=float,
                   help=f"how often to look for new versions (default {POLL_SECONDS:g})")
    p.add_argument("--read-timeout", type=float, default=LIMITS["read_timeout_s"],
                   help=f"seconds a client has to send its request (default {LIMITS['read_timeout_s']:g}; then 408)")
    from tfchargen.serving import tf_flags

    tf_flags.add_arguments(p)
    return p
