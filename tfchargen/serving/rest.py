"""TF Serving's REST API (``api_rest.md``) over a ModelManager: URL routing and one short
method per API: model status, metadata, ``:predict``, ``:stream`` (stream.py), the page at
``/`` (page.html) and the batching metrics. Transport and limits are transport.py's."""

from __future__ import annotations

import json
import re

from tfchargen.serving.errors import ServerError
from tfchargen.serving.json_tensor import metadata_json, parse_json_body, request_tensors, response_json, status_json
from tfchargen.serving.servable import STREAM_SIGNATURES
from tfchargen.serving.stream import as_signature_arrays, sse_event, sse_events, stream_request
from tfchargen.serving.transport import HttpError, RequestHandler

METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's default path for its metrics

# /v1/models/NAME[/versions/N] then /metadata, :predict or :stream (or nothing: status).
_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(?:(/metadata)|:(predict|stream))?$")


def page(model_name: str) -> bytes:
    """The page at ``/`` (page.html), told the served model's name."""
    from importlib import resources

    html = resources.files(__package__).joinpath("page.html").read_text("utf-8")
    return html.replace('/*MODEL_NAME*/"chargen"', json.dumps(model_name).replace("<", "\\u003c")).encode()


def metrics_text(manager) -> str:
    """Batching counters in Prometheus' text format: merged calls and the rows they held."""
    lines = ["# TYPE tfchargen_batches_total counter", "# TYPE tfchargen_batched_rows_total counter"]
    for version, servable in sorted(manager.servables().items()):
        for signature, b in sorted(servable.batchers.items()):
            labels = f'model="{manager.name}",version="{version}",signature="{signature}"'
            lines += [f"tfchargen_batches_total{{{labels}}} {b.batches}",
                      f"tfchargen_batched_rows_total{{{labels}}} {b.rows}"]
    return "\n".join(lines) + "\n"


def _model(m: re.Match) -> tuple[str, int | None]:
    return m.group(1), int(m.group(2)) if m.group(2) else None


class RestHandler(RequestHandler):
    """TF Serving's REST API over the server's :class:`~tfchargen.serving.manager.ModelManager`."""

    def do_GET(self):
        if self.path.split("?", 1)[0] in ("/", "/index.html"):  # the page reads its query string itself
            return self._send(200, page(self.server.manager.name), "text/html; charset=utf-8")
        if self.path == METRICS_PATH:
            return self._send(200, metrics_text(self.server.manager).encode(), "text/plain; version=0.0.4")
        m = _PATH.match(self.path)
        if not m or m.group(4):
            return self._send(404, {"error": f"Malformed request: GET {self.path[:200]}"})
        self._serve(self._api_metadata if m.group(3) else self._api_status, *_model(m))

    do_HEAD = do_GET

    def do_POST(self):
        try:
            body = self._read_body()
        except HttpError as e:  # the body was not read: this connection cannot be reused
            return self._send(e.status, {"error": e.message}, close=True)
        m = _PATH.match(self.path)
        if not m or not m.group(4):
            return self._send(404, {"error": f"Malformed request: POST {self.path[:200]}"})
        self._serve(self._api_stream if m.group(4) == "stream" else self._api_predict, *_model(m), body)

    def _serve(self, api, *args) -> None:
        """Runs one API method as an in-flight request; its ServerError is the reply."""
        if not self._begin():
            return
        try:
            api(*args)
        except ServerError as e:
            self._error(e)
        finally:
            self._end()

    def _api_status(self, name: str, version: int | None) -> None:
        self._send(200, status_json(self.server.manager.status(name, version)))

    def _api_metadata(self, name: str, version: int | None) -> None:
        self._send(200, metadata_json(self.server.manager.metadata(name, version)))

    def _api_predict(self, name: str, version: int | None, body: bytes) -> None:
        doc = parse_json_body(body)
        servable = self.server.manager.get(name, version)
        signature_name = doc.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise ServerError("INVALID_ARGUMENT", "'signature_name' key must be a string value.")
        tensors, fmt = request_tensors(doc, servable.inputs[servable.signature(signature_name)])
        self._rows = len(next(iter(tensors.values()))) if tensors else 0
        out = servable.predict(signature_name, tensors)
        self._send(200, response_json(out, fmt))

    def _api_stream(self, name: str, version: int | None, body: bytes) -> None:
        """``:stream``: ``generate``'s request answered as server-sent events, chunk by chunk,
        through the model's ``start``/``continue`` signatures (:func:`stream_request`,
        :func:`sse_events`). A bad request is a JSON error before any event; the connection
        closes after the last event. A client that goes away stops its generation."""
        doc = parse_json_body(body)
        servable = self.server.manager.get(name, version)
        if not servable.has_streaming():
            raise ServerError("NOT_FOUND", f"{self.server.manager.name} version {servable.version} has no "
                              f"streaming signatures ({', '.join(STREAM_SIGNATURES)}): use :predict")
        inputs, chunk = stream_request(doc, servable.inputs[servable.signature("generate")])
        self._rows = len(inputs["prompt"])
        events = sse_events(lambda signature, x: servable.predict(signature, as_signature_arrays(
            x, servable.inputs[signature])), inputs, chunk)
        first = next(events)  # runs `start`: its error is still an HTTP error
        self._send_events(first, events)

    def _send_events(self, first: bytes, events) -> None:
        """The event stream's reply; a failure after its headers is the last event."""
        self._status = 200
        sent = 0
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")  # the body ends when the connection does
            self.close_connection = True
            self.end_headers()
            self.wfile.write(first)
            sent += 1
            for event in events:
                if self.server.draining.is_set():
                    self.wfile.write(sse_event({"error": "the server is shutting down"}, "error"))
                    break
                self.wfile.write(event)
                sent += 1
        except ServerError as e:  # a later chunk failed: the client gets it as the last event
            self._write_quietly(sse_event({"error": e.message}, "error"))
        except (ConnectionError, TimeoutError):  # the client went away (or stopped reading)
            self._status = 499  # nginx's "client closed request", as TF Serving's CANCELLED
        finally:
            events.close()  # no more chunks are computed for this client
            self._rows = f"{self._rows} events={sent}"
            self._done()
