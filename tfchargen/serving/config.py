"""What `tfchargen serve` serves and how: the documented limits, :class:`ServerConfig` (one
field per flag) and the flags that build it."""

from __future__ import annotations

import argparse
import dataclasses
import os

from tfchargen.serving.batching import DEFAULT_TIMEOUT_MS

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
        model: export base or version directory.
        name: model name clients use (default: the base folder's name, :attr:`model_name`).
        host: address to bind (127.0.0.1 unless told).
        port, grpc_port: 0 = any free port; ``grpc_port=None`` = no gRPC.
        versions: "latest", "all" or a tuple of version numbers (:func:`parse_versions`).
        max_batch, batch_timeout_ms, batch_threads: request batching (batching.py; ``max_batch``
            1 = off).
        poll_seconds: how often the export base is listed for new versions.
        read_timeout_s: seconds a client has to send its request (LIMITS).

    >>> ServerConfig(".", "chargen", port=0).limits()["read_timeout_s"]
    30.0
    >>> ServerConfig(".", max_batch=0)
    Traceback (most recent call last):
    ...
    ValueError: --max-batch and --batch-threads must be >= 1 and --batch-timeout-ms >= 0
    """

    model: str
    name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8501
    grpc_port: int | None = 8500
    versions: object = "latest"
    max_batch: int = 64
    batch_timeout_ms: float = DEFAULT_TIMEOUT_MS
    batch_threads: int = 2
    poll_seconds: float = POLL_SECONDS
    read_timeout_s: float = LIMITS["read_timeout_s"]

    def __post_init__(self):
        if not os.path.isdir(self.model):
            raise FileNotFoundError(f"no such model directory: {self.model}")
        if self.max_batch < 1 or self.batch_timeout_ms < 0 or self.batch_threads < 1:
            raise ValueError("--max-batch and --batch-threads must be >= 1 and --batch-timeout-ms >= 0")
        if self.read_timeout_s <= 0:
            raise ValueError("--read-timeout must be > 0")

    @property
    def model_name(self) -> str:
        return self.name or os.path.basename(os.path.normpath(self.model))

    def limits(self) -> dict:
        return {**LIMITS, "read_timeout_s": self.read_timeout_s}

    def batching(self) -> dict:
        """The Servable's batching arguments."""
        return dict(max_batch=self.max_batch, batch_timeout_s=self.batch_timeout_ms / 1000,
                    batch_threads=self.batch_threads)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ServerConfig":
        """The config of parsed :func:`add_arguments` flags (``--grpc-port 0`` = no gRPC)."""
        return cls(args.model, args.model_name, host=args.host, port=args.port, grpc_port=args.grpc_port or None,
                   versions=args.versions, max_batch=args.max_batch, batch_timeout_ms=args.batch_timeout_ms,
                   batch_threads=args.batch_threads, poll_seconds=args.poll_seconds,
                   read_timeout_s=args.read_timeout)


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
