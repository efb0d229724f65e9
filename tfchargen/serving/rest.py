"""TF Serving's REST API (``api_rest.md``) over a ModelManager: URL routing and one short
method per API: model status, metadata, ``:predict``, ``:stream`` (stream.py), the page at
``/`` (page.html) and the batching metrics. Transport and limits are transport.py's."""

from __future__ import annotations

import json
import re

from tfchargen.serving import urls
from tfchargen.serving.classify import signature_error
from tfchargen.serving.errors import ServerError
from tfchargen.serving.json_parse import parse_json_body
from tfchargen.serving.json_request import check_examples, request_tensors
from tfchargen.serving.json_tensor import metadata_json, response_json, status_json
from tfchargen.serving.json_text import debug_string, error_body
from tfchargen.serving.servable import STREAM_SIGNATURES
from tfchargen.serving.stream import as_signature_arrays, sse_event, sse_events, stream_request
from tfchargen.serving.transport import HttpError, RequestHandler
from tfchargen.serving.urls import V1


def page(model_names: list[str]) -> bytes:
    """The page at ``/`` (page.html), told the served models' names (the first is shown first).

    >>> b'["a", "b"]' in page(["a", "b"])
    True
    """
    from importlib import resources

    html = resources.files(__package__).joinpath("page.html").read_text("utf-8")
    return html.replace('/*MODEL_NAMES*/["chargen"]', json.dumps(model_names).replace("<", "\\u003c")).encode()


def metrics_text(manager) -> str:
    """Batching counters in Prometheus' text format: merged calls and the rows they held."""
    lines = ["# TYPE tfchargen_batches_total counter", "# TYPE tfchargen_batched_rows_total counter"]
    for version, servable in sorted(manager.servables().items()):
        for signature, b in sorted(servable.batchers.items()):
            labels = f'model="{manager.name}",version="{version}",signature="{signature}"'
            lines += [f"tfchargen_batches_total{{{labels}}} {b.batches}",
                      f"tfchargen_batched_rows_total{{{labels}}} {b.rows}"]
    return "\n".join(lines) + "\n"


NOT_FOUND_PAGE = b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n</BODY></HTML>\n"


class RestHandler(RequestHandler):
    """TF Serving's REST API over the server's :class:`~tfchargen.serving.manager.ModelManager`.

    Every method reaches :meth:`_dispatch`, as TF Serving's handler sees every method: a path
    outside ``/v1/`` is libevent's 404 page, a method or path its URL grammar (urls.py) does not
    accept is its 400 "Malformed request"; OPTIONS is its CORS preflight."""

    def do_GET(self):
        if self.path.split("?", 1)[0] in ("/", "/index.html"):  # the page reads its query string itself
            return self._send(200, page(list(self.server.manager.managers())), "text/html; charset=utf-8")
        self._dispatch()

    def do_HEAD(self):
        if self.path.split("?", 1)[0] in ("/", "/index.html"):
            return self.do_GET()
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except HttpError as e:  # the body was not read: this connection cannot be reused
            return self._send(e.status, error_body(e.message), close=True)
        if not V1.fullmatch(self.path):
            return self._send(404, NOT_FOUND_PAGE, "text/html", close=True)
        if self.command == "OPTIONS":  # http_server.cc: CORS preflight, an empty reply
            ok = re.search(r"https?://", self.headers.get("Origin") or "")
            return self._send(200 if ok else 400, b"")
        self._serve(self._api, body)

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

    def _api(self, body: bytes) -> None:
        call = urls.parse(self.command, self.path)
        manager = self.server.manager
        if call.api == "status":  # GetModelStatus ignores a version label
            return self._send(200, status_json(manager.status(call.name, call.version)))
        if call.api == "metadata":
            return self._send(200, metadata_json(manager.metadata(call.name, call.version, call.label)))
        doc = parse_json_body(body)
        if not isinstance(doc.get("signature_name", ""), str):  # FillSignature
            raise ServerError("INVALID_ARGUMENT", f"JSON Value: {debug_string(doc)} not formatted correctly. "
                              "'signature_name' key must be a string value.")
        signature_name = doc.get("signature_name", "")
        if call.api in ("classify", "regress"):
            check_examples(doc)
            servable = manager.get(call.name, call.version, call.label)
            raise signature_error(servable.signature_defs, signature_name, call.api)
        servable = manager.get(call.name, call.version, call.label)
        if call.api == "stream":
            return self._api_stream(call.name, servable, doc)
        name = signature_name or "serving_default"
        if name not in servable.signatures:  # GetInfoMap
            raise ServerError("INVALID_ARGUMENT", f'Serving signature name: "{name}" not found in signature def')
        tensors, fmt = request_tensors(doc, servable.inputs[name])
        first = next(iter(tensors.values()), None)
        self._rows = len(first) if first is not None and first.ndim else 0
        self._send(200, response_json(servable.predict(signature_name, tensors), fmt))

    def _api_stream(self, name: str, servable, doc: dict) -> None:
        """``:stream``: ``generate``'s request answered as server-sent events, chunk by chunk,
        through the model's ``start``/``continue`` signatures (:func:`stream_request`,
        :func:`sse_events`). A bad request is a JSON error before any event; the connection
        closes after the last event. A client that goes away stops its generation."""
        if not servable.has_streaming():
            raise ServerError("NOT_FOUND", f"{name} version {servable.version} has no "
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
