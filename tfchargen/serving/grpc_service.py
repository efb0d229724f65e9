"""TF Serving's gRPC API over a ModelManager: ``tensorflow.serving.PredictionService``
(Predict, GetModelMetadata) and ``ModelService/GetModelStatus`` with the
``tensorflow-serving-api`` protos; a ServerError is the call's gRPC status. One log line per
call."""

from __future__ import annotations

import time
from concurrent import futures

from tfchargen.serving.classify import signature_error
from tfchargen.serving.config import LIMITS
from tfchargen.serving.errors import ServerError, log
from tfchargen.serving.servable import check_inputs
from tfchargen.serving.tensor_proto import as_proto_field


def _logged(method: str, fn):
    """A servicer method around ``fn(request) -> (reply, rows)``: the status, one log line."""
    import grpc

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


def _spec_of(request) -> tuple[str, int | None, str | None]:
    """(name, version, label) of a request's ModelSpec (``version`` and ``version_label`` are
    a oneof: the one set last wins, as in TF Serving)."""
    if not request.HasField("model_spec"):
        raise ServerError("INVALID_ARGUMENT", "Missing ModelSpec")
    spec = request.model_spec
    choice = spec.WhichOneof("version_choice")
    return (spec.name, spec.version.value if choice == "version" else None,
            spec.version_label if choice == "version_label" else None)


def _output_aliases(signature_def, output_filter) -> list[str]:
    """predict_util.cc PreProcessPrediction: the outputs asked for, each once, all by default."""
    outputs = sorted(signature_def.outputs)
    seen = []
    for alias in output_filter:
        if alias not in signature_def.outputs:
            raise ServerError("INVALID_ARGUMENT", f"output tensor alias not found in signature: {alias} "
                              f"Outputs expected to be in the set {{{','.join(outputs)}}}.")
        if alias in seen:
            raise ServerError("INVALID_ARGUMENT", f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen or outputs


def _predict(manager, request):
    """Predict: (the PredictResponse, the request's rows), in predict_util.cc RunPredict's order."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    servable = manager.get(*_spec_of(request))
    name = servable.signature(request.model_spec.signature_name)  # FAILED_PRECONDITION if unknown
    tensors = {}
    for key, proto in request.inputs.items():
        try:
            tensors[key] = tf.make_ndarray(proto)
        except (TypeError, ValueError) as e:
            raise ServerError("INVALID_ARGUMENT", f"tensor parsing error: {key} ({e})") from None
    tensors = check_inputs(tensors, servable.inputs[name])
    aliases = _output_aliases(servable.signature_defs.signature_def[name], request.output_filter)
    rows = len(next(iter(tensors.values()))) if tensors else 0
    out = servable.predict(name, tensors)
    reply = predict_pb2.PredictResponse()
    reply.model_spec.name = request.model_spec.name
    reply.model_spec.version.value = servable.version
    reply.model_spec.signature_name = name
    for key in aliases:
        reply.outputs[key].CopyFrom(as_proto_field(out[key]))
    return reply, rows


def _metadata(manager, request):
    """get_model_metadata_impl.cc: a ModelSpec, then only the ``signature_def`` field."""
    spec = _spec_of(request)
    if not request.metadata_field:
        raise ServerError("INVALID_ARGUMENT", "GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != "signature_def":
            raise ServerError("INVALID_ARGUMENT", f"Metadata field {field} is not supported")
    return manager.metadata(*spec), 0


def _classify_or_regress(manager, request, method: str):
    """Classify/Regress: the model's Predict signatures fail TF Serving's checks (classify.py)."""
    servable = manager.get(*_spec_of(request))
    raise signature_error(servable.signature_defs, request.model_spec.signature_name, method)


def grpc_server(manager, address: str, limits=LIMITS):
    """A grpc.Server with PredictionService and ModelService; returns (server, port)."""
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        Predict = staticmethod(_logged("Predict", lambda r: _predict(manager, r)))
        GetModelMetadata = staticmethod(_logged("GetModelMetadata", lambda r: _metadata(manager, r)))
        Classify = staticmethod(_logged("Classify", lambda r: _classify_or_regress(manager, r, "classify")))
        Regress = staticmethod(_logged("Regress", lambda r: _classify_or_regress(manager, r, "regress")))

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):  # GetModelStatus ignores a label
        GetModelStatus = staticmethod(_logged("GetModelStatus", lambda r: (manager.status(*_spec_of(r)[:2]), 0)))

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
