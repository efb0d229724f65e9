"""What watches the server: the gRPC health service (``grpc.health.v1.Health``, TF Serving's
``--enable_grpc_healthcheck_service``) and the Prometheus metrics at the path a
``--monitoring_config_file`` names (rest.py's counters, for every served model)."""

from __future__ import annotations

from tfchargen.serving import rest
from tfchargen.serving.model_config import METRICS_PATH

# The services tensorflow_model_server marks SERVING (server.cc), and "" (the whole server).
HEALTH_SERVICES = ("", "ModelService", "PredictionService")


def add_health(grpc_server):
    """Adds ``grpc.health.v1.Health`` to a gRPC server not yet started; returns its servicer
    (every service NOT_SERVING until :func:`set_serving`)."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, grpc_server)
    for name in HEALTH_SERVICES:
        servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    return servicer


def set_serving(servicer, serving: bool) -> None:
    from grpc_health.v1 import health_pb2

    status = health_pb2.HealthCheckResponse
    for name in HEALTH_SERVICES:
        servicer.set(name, status.SERVING if serving else status.NOT_SERVING)


def metrics_text(models) -> str:
    """rest.metrics_text of every served model, in one Prometheus text page."""
    types, samples = [], []
    for manager in models.managers().values():
        for line in rest.metrics_text(manager).splitlines():
            (types if line.startswith("#") else samples).append(line)
    return "\n".join(dict.fromkeys(types)) + "\n" + "".join(s + "\n" for s in samples)


class RestHandler(rest.RestHandler):
    """rest.RestHandler with the metrics at the server's ``metrics_path`` (None: no metrics;
    TF Serving serves them only when a monitoring config enables them)."""

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        wanted = getattr(self.server, "metrics_path", METRICS_PATH)
        if wanted and path == wanted:
            return self._send(200, metrics_text(self.server.manager).encode(), "text/plain; version=0.0.4")
        if path == METRICS_PATH:  # our default path; not when a monitoring config names another
            return self._send(404, rest.NOT_FOUND_PAGE, "text/html", close=True)  # outside /v1/: libevent's
        return super().do_GET()
