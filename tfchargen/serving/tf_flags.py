"""``tensorflow_model_server``'s flags for ``tfchargen serve``, spelled, defaulted and checked
as its main.cc and server.cc do, so a command line (or a docker-compose ``command:``, a
Kubernetes ``args:``) written for TF Serving starts ``tfchargen serve`` unchanged.

The rule: a command line that gives any of TF Serving's underscore flags (``--model_base_path``,
``--model_config_file``, ``--rest_api_port``, ...) is read as TF Serving reads it: ``--port`` is
the gRPC port (default 8500), REST is off unless ``--rest_api_port``, both bind 0.0.0.0
(``--host`` overrides), batching is off unless ``--enable_batching``, XLA JIT is off unless
``--xla_cpu_compilation_enabled``, metrics are served only with ``--monitoring_config_file``.
Our hyphenated flags that TF Serving's replace (``--model``, ``--grpc-port``, ``--versions``,
``--max-batch``, ...) are then refused. Without underscore flags, ``--port`` is ours: REST."""

from __future__ import annotations

import argparse
import os

from tfchargen.serving import model_config

# Ours that a TF Serving flag replaces: refused together with TF Serving's flags.
REPLACED = {"model": "--model_base_path", "model_name": "--model_name", "grpc_port": "--port",
            "versions": "model_version_policy in --model_config_file", "max_batch": "--batching_parameters_file",
            "batch_timeout_ms": "--batching_parameters_file", "batch_threads": "--batching_parameters_file",
            "poll_seconds": "--file_system_poll_wait_seconds"}
# Accepted for compatibility; tfchargen serve has no use for them (logged when given).
IGNORED = ("rest_api_num_threads", "grpc_max_threads", "num_load_threads", "num_unload_threads",
           "max_num_load_retries", "load_retry_interval_micros", "tensorflow_session_parallelism",
           "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism", "enable_profiler",
           "flush_filesystem_caches")


def parse_bool(text: str) -> bool:
    """TensorFlow's flag booleans: true/false/1/0 (any case).

    >>> parse_bool("True"), parse_bool("0")
    (True, False)
    """
    value = {"true": True, "1": True, "false": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def version_text() -> str:
    """What ``--version`` prints, in tensorflow_model_server's two lines."""
    from importlib import metadata

    def of(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"
    return f"TensorFlow ModelServer: tfchargen serve {of('tfchargen')}\nTensorFlow Library: {of('tensorflow')}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """TF Serving's flags (dest ``tfs_<name>``); values are checked in :func:`config_fields`."""
    g = p.add_argument_group("tensorflow_model_server's flags", "A command line with any of these is read as "
                             "tensorflow_model_server reads it: --port is then gRPC (docs/tf-serving.md).")

    def flag(name, kind=str, help=argparse.SUPPRESS):
        if kind is bool:
            g.add_argument(f"--{name}", dest=f"tfs_{name}", nargs="?", const=True, type=parse_bool, help=help,
                           metavar="true|false")
        else:
            metavar = "N" if kind is int else "NAME" if name == "model_name" else "PATH"
            g.add_argument(f"--{name}", dest=f"tfs_{name}", type=kind, help=help, metavar=metavar)

    flag("rest_api_port", int, "REST port (default 0: no REST)")
    flag("model_name", str, "the model's name with --model_base_path (default: default)")
    flag("model_base_path", str, "export base to serve (an absolute path)")
    flag("model_config_file", str, "ModelServerConfig text proto: several models, version policies, labels")
    flag("model_config_file_poll_wait_seconds", int, "re-read --model_config_file this often (default 0: never)")
    flag("file_system_poll_wait_seconds", int, "look for new versions this often (default 1; 0: only at start)")
    flag("enable_batching", bool, "batch requests (default false)")
    flag("batching_parameters_file", str, "BatchingParameters text proto (needs --enable_batching)")
    flag("monitoring_config_file", str, "MonitoringConfig text proto: Prometheus metrics on the REST port")
    flag("xla_cpu_compilation_enabled", bool, "EXPERIMENTAL in TF Serving: let versions that need XLA "
         "(tfchargen export --xla) load (default false)")
    flag("xla_gpu_compilation_enabled", bool, "EXPERIMENTAL in TF Serving: XLA for CPU and GPU (default false)")
    flag("rest_api_timeout_in_ms", int, "accepted; not enforced (see docs/tf-serving.md)")
    flag("enable_grpc_healthcheck_service", bool, "serve grpc.health.v1.Health (default false)")
    flag("enable_model_warmup", bool, "replay assets.extra warmup records (default true)")
    flag("allow_version_labels_for_unavailable_models", bool, "version_labels may name versions not loaded yet "
         "(default false: a config with labels cannot start the server)")
    for name in IGNORED:
        flag(name)
    p.add_argument("--version", action=_Version, help="print the server's and TensorFlow's versions "
                   "(as tensorflow_model_server)")


class _Version(argparse.Action):
    """``--version``: :func:`version_text` as is (argparse's version action rewraps it)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def given(args) -> bool:
    """Whether the command line uses TF Serving's flags (then ``--port`` is gRPC)."""
    return any(v is not None for k, v in vars(args).items() if k.startswith("tfs_"))


def _get(args, name, default=None):
    value = getattr(args, f"tfs_{name}")
    return default if value is None else value


def _check(args) -> None:
    mixed = [f"--{k.replace('_', '-')} (use {v})" for k, v in REPLACED.items() if getattr(args, k) is not None]
    if mixed:
        raise ValueError(f"tensorflow_model_server's flags replace {', '.join(mixed)}: give one form or the other")
    if not _get(args, "model_base_path") and not _get(args, "model_config_file"):
        raise ValueError("Both server_options.model_base_path and server_options.model_config_file are empty!")
    if _get(args, "batching_parameters_file") and not _get(args, "enable_batching", False):
        raise ValueError("server_options.batching_parameters_file is set without setting "
                         "server_options.enable_batching to true.")
    if args.port == 0:
        raise ValueError("At least one of server_options.grpc_port or server_options.grpc_socket_path must be set.")
    if args.port is not None and args.port == _get(args, "rest_api_port"):
        raise ValueError("server_options.http_port cannot be same as grpc_port (--rest_api_port and --port)")


def config_fields(args) -> dict:
    """ServerConfig's fields from TF Serving's flags (ValueError: TF Serving's message)."""
    from tfchargen.serving.errors import log

    _check(args)
    if _get(args, "model_config_file"):
        if _get(args, "model_base_path"):
            log("tfchargen serve: --model_base_path is ignored: --model_config_file is set (as TF Serving does)")
        models = model_config.read_model_config(args.tfs_model_config_file)
    else:
        models = [model_config.ModelSpec(_get(args, "model_name", "default"), args.tfs_model_base_path)]
        model_config.check_specs(models, "--model_base_path")
    for spec in models:
        if not os.path.isdir(spec.base_path):
            raise ValueError(f"model {spec.name}: no such export base: {spec.base_path}")
    batching = model_config.Batching()
    if _get(args, "batching_parameters_file"):
        batching = model_config.read_batching_parameters(args.tfs_batching_parameters_file)
    metrics = None
    if _get(args, "monitoring_config_file"):
        metrics = model_config.read_monitoring_config(args.tfs_monitoring_config_file)
    for name in IGNORED + ("rest_api_timeout_in_ms",):
        if _get(args, name) is not None:
            log(f"tfchargen serve: --{name} is accepted for compatibility and has no effect")
    batch = batching.servable_kwargs() if _get(args, "enable_batching", False) else dict(max_batch=1)
    fs_poll = _get(args, "file_system_poll_wait_seconds", 1)
    return dict(model=None, models=tuple(models), host=args.host or "0.0.0.0",
                port=_get(args, "rest_api_port", 0) or None, grpc_port=8500 if args.port is None else args.port,
                max_batch=batch["max_batch"], batch_timeout_ms=batch.get("batch_timeout_s", 0) * 1000,
                batch_threads=batch.get("batch_threads", 1), max_enqueued_batches=batch.get("max_enqueued_batches"),
                allowed_batch_sizes=batch.get("allowed_batch_sizes", ()),
                poll_seconds=fs_poll if fs_poll > 0 else 0.0, read_timeout_s=args.read_timeout,
                model_config_file=_get(args, "model_config_file"),
                config_poll_seconds=max(0, _get(args, "model_config_file_poll_wait_seconds", 0)),
                metrics_path=metrics, xla=bool(_get(args, "xla_cpu_compilation_enabled") or
                                               _get(args, "xla_gpu_compilation_enabled")),
                health=_get(args, "enable_grpc_healthcheck_service", False),
                warmup=_get(args, "enable_model_warmup", True),
                allow_unavailable_labels=_get(args, "allow_version_labels_for_unavailable_models", False))
