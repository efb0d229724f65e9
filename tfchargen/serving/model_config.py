"""TF Serving's config files, read as the text protos ``tensorflow_model_server`` reads:
``--model_config_file`` (ModelServerConfig), ``--batching_parameters_file``
(BatchingParameters) and ``--monitoring_config_file`` (MonitoringConfig), with TF Serving's
checks and messages. A file that does not parse or fails a check is a one-line ValueError
naming the flag and the file (the CLI prints it and exits 2).

``tensorflow-serving-api`` ships ModelServerConfig but neither BatchingParameters nor
MonitoringConfig: those two are declared here from TF Serving's .proto files (same package,
field names and numbers: session_bundle_config.proto, monitoring_config.proto)."""

from __future__ import annotations

import dataclasses
import functools
import os

METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's default (PrometheusExporter::kPrometheusPath)

# TensorFlow's BasicBatchScheduler defaults, for fields a BatchingParameters file leaves out.
BATCHING_DEFAULTS = dict(max_batch_size=1000, batch_timeout_micros=0, max_enqueued_batches=10,
                         num_batch_threads=os.cpu_count() or 1)


@functools.cache
def _classes() -> dict:
    """{name: message class} for BatchingParameters, PrometheusConfig, MonitoringConfig."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    F = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    f = descriptor_pb2.FileDescriptorProto(name="tfchargen_tf_serving_configs.proto", package="tensorflow.serving",
                                           syntax="proto3", dependency=["google/protobuf/wrappers.proto"])

    def message(name, fields):
        m = f.message_type.add(name=name)
        for number, field, ftype, type_name, label in fields:
            m.field.add(name=field, number=number, type=ftype, label=label, type_name=type_name)

    one, many, msg = F.LABEL_OPTIONAL, F.LABEL_REPEATED, F.TYPE_MESSAGE
    i64 = ".google.protobuf.Int64Value"
    message("BatchingParameters", [
        (1, "max_batch_size", msg, i64, one), (2, "batch_timeout_micros", msg, i64, one),
        (3, "max_enqueued_batches", msg, i64, one), (4, "num_batch_threads", msg, i64, one),
        (5, "thread_pool_name", msg, ".google.protobuf.StringValue", one),
        (6, "allowed_batch_sizes", F.TYPE_INT64, None, many), (7, "pad_variable_length_inputs", F.TYPE_BOOL, None, one),
        (8, "enable_large_batch_splitting", msg, ".google.protobuf.BoolValue", one),
        (9, "max_execution_batch_size", msg, i64, one)])
    message("PrometheusConfig", [(1, "enable", F.TYPE_BOOL, None, one), (2, "path", F.TYPE_STRING, None, one)])
    message("MonitoringConfig", [(1, "prometheus_config", msg, ".tensorflow.serving.PrometheusConfig", one)])
    pool.Add(f)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{n}"))
            for n in ("BatchingParameters", "PrometheusConfig", "MonitoringConfig")}


def read_text_proto(path: str, message, flag: str):
    """``message`` filled from the text proto at ``path``, or a one-line ValueError naming ``flag``."""
    from google.protobuf import text_format

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--{flag}: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise ValueError(f"--{flag}: {path} is not a {message.DESCRIPTOR.name} text proto: {e}") from None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One ``config { ... }`` of a ModelServerConfig: what to serve under ``name``.

    ``policy``: ("latest", n), "all" or a sorted tuple of versions; ``labels``: {label: version}.
    """

    name: str
    base_path: str
    policy: object = ("latest", 1)
    labels: dict = dataclasses.field(default_factory=dict)


def _policy(config) -> object:
    policy = config.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return "all"
    if which == "specific":
        if not policy.specific.versions:
            raise ValueError(f"model {config.name}: model_version_policy specific lists no versions")
        return tuple(sorted(set(policy.specific.versions)))
    n = policy.latest.num_versions if which == "latest" else 0
    return ("latest", n if n > 0 else 1)  # TF Serving: num_versions unset or 0 serves one


def read_model_config(path: str) -> list[ModelSpec]:
    """The models of a ModelServerConfig file (``--model_config_file``), checked as
    ServerCore checks a model_config_list (unique names, absolute base paths)."""
    from tensorflow_serving.config import model_server_config_pb2

    config = read_text_proto(path, model_server_config_pb2.ModelServerConfig(), "model_config_file")
    which = config.WhichOneof("config")
    if which == "custom_model_config":
        raise ValueError("--model_config_file: ModelServer does not yet support custom model config.")
    specs = [ModelSpec(c.name, c.base_path, _policy(c), dict(c.version_labels))
             if c.model_platform in ("", "tensorflow") else _platform_error(path, c)
             for c in config.model_config_list.config]
    check_specs(specs, f"--model_config_file {path}")
    return specs


def _platform_error(path: str, c):
    raise ValueError(f"--model_config_file {path}: model {c.name}: model_platform {c.model_platform!r} "
                     f"is not served (only tensorflow)")


def check_specs(specs: list[ModelSpec], source: str) -> None:
    """ServerCore's checks of a model_config_list (unique names, absolute base paths), as a
    ValueError starting with ``source``."""
    names, problem = set(), None
    for s in specs:
        if s.name in names:
            problem = f"Illegal to list model {s.name} multiple times in config list"
        elif not s.base_path.startswith("/") and "://" not in s.base_path:
            problem = f"Expected model {s.name} to have an absolute path or URI; got base_path()={s.base_path}"
        elif "://" in s.base_path:
            problem = f"model {s.name}: base_path {s.base_path} is a URI; only local paths are served"
        names.add(s.name)
        if problem:
            raise ValueError(f"{source}: {problem}")
    if not specs:
        raise ValueError(f"{source}: no model in model_config_list")


@dataclasses.dataclass(frozen=True)
class Batching:
    """Batching settings from a BatchingParameters file (TensorFlow's defaults for the rest)."""

    max_batch_size: int = BATCHING_DEFAULTS["max_batch_size"]
    batch_timeout_micros: int = BATCHING_DEFAULTS["batch_timeout_micros"]
    max_enqueued_batches: int = BATCHING_DEFAULTS["max_enqueued_batches"]
    num_batch_threads: int = BATCHING_DEFAULTS["num_batch_threads"]
    allowed_batch_sizes: tuple = ()

    def servable_kwargs(self) -> dict:
        """The :class:`~tfchargen.serving.servable.Servable`'s batching arguments."""
        return dict(max_batch=self.max_batch_size, batch_timeout_s=self.batch_timeout_micros / 1e6,
                    batch_threads=self.num_batch_threads, max_enqueued_batches=self.max_enqueued_batches,
                    allowed_batch_sizes=self.allowed_batch_sizes)


def read_batching_parameters(path: str) -> Batching:
    """``--batching_parameters_file``, with TF Serving's checks of ``allowed_batch_sizes``."""
    p = read_text_proto(path, _classes()["BatchingParameters"](), "batching_parameters_file")
    values = {k: getattr(p, k).value if p.HasField(k) else v for k, v in BATCHING_DEFAULTS.items()}
    sizes = tuple(p.allowed_batch_sizes)
    problem = None
    if any(v < 1 for k, v in values.items() if k != "batch_timeout_micros") or values["batch_timeout_micros"] < 0:
        problem = "max_batch_size, num_batch_threads and max_enqueued_batches must be >= 1, batch_timeout_micros >= 0"
    elif sizes and any(b <= a for a, b in zip(sizes, sizes[1:])):
        problem = "allowed_batch_sizes entries must be monotonically increasing"
    elif sizes and sizes[-1] != values["max_batch_size"]:
        problem = (f"Last entry in allowed_batch_sizes must match max_batch_size; last entry was {sizes[-1]}; "
                   f"expected {values['max_batch_size']}")
    if problem:
        raise ValueError(f"--batching_parameters_file {path}: {problem}")
    return Batching(**values, allowed_batch_sizes=sizes)


def read_monitoring_config(path: str) -> str | None:
    """``--monitoring_config_file``: the Prometheus metrics path, or None when not enabled."""
    m = read_text_proto(path, _classes()["MonitoringConfig"](), "monitoring_config_file")
    if not m.prometheus_config.enable:
        return None
    path_ = m.prometheus_config.path or METRICS_PATH
    if not path_.startswith("/"):
        raise ValueError(f"--monitoring_config_file {path}: prometheus_config path must start with /, got {path_!r}")
    return path_
