"""TF Serving's gRPC API over a ModelManager: ``tensorflow.serving.PredictionService``
(Predict, GetModelMetadata) and ``ModelService/GetModelStatus`` with the
``tensorflow-serving-api`` protos; a ServerError is the call's gRPC status. One log line per
call."""

from __future__ import annotations

import time
from concurrent import futures

from tfchargen.serving.config import LIMITS
from tfchargen.serving.errors import ServerError, log


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


def _spec_of(request) -> tuple[str, int | None]:
    spec = request.model_spec
    return spec.name, spec.version.value if spec.HasField("version") else None


def _predict(manager, request):
    """Predict: (the PredictResponse, the request's rows)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    name, version = _spec_of(request)
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


def grpc_server(manager, address: str, limits=LIMITS):
    """A grpc.Server with PredictionService and ModelService; returns (server, port)."""
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        Predict = staticmethod(_logged("Predict", lambda r: _predict(manager, r)))
        GetModelMetadata = staticmethod(_logged("GetModelMetadata",
                                                lambda r: (manager.metadata(*_spec_of(r)), 0)))

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        GetModelStatus = staticmethod(_logged("GetModelStatus", lambda r: (manager.status(*_spec_of(r)), 0)))

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
