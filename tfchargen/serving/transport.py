"""REST transport of `tfchargen serve`: ``http.server`` with its limits (concurrent
connections, body size, read timeout), draining on shutdown and one log line per request.
What a request means is rest.py's."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tfchargen.serving.config import LIMITS
from tfchargen.serving.errors import ServerError, log
from tfchargen.serving.json_text import error_body


class HttpError(Exception):
    """A request refused before its body was read: an HTTP status and a message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class RequestDeadline(Exception):
    """The client has not sent its whole request (headers and body) within the read timeout."""


class DeadlineReader(io.RawIOBase):
    """A connection's reads, bounded per request: the first byte of a request starts its
    clock (``start()`` resets it), and no read waits past ``timeout`` seconds after it. Before
    a request's first byte a read waits ``timeout`` (an idle connection) and then fails with
    TimeoutError; past the deadline reads raise RequestDeadline."""

    def __init__(self, sock: socket.socket, timeout: float):
        super().__init__()
        self.sock, self.timeout, self.deadline, self.reading = sock, timeout, None, True

    def readable(self) -> bool:
        return True

    def start(self) -> None:
        self.deadline, self.reading = None, True

    def done(self) -> None:
        """The request is read: later reads (there are none before the next request) are not bound."""
        self.reading = False

    def readinto(self, buffer) -> int:
        wait = self.timeout
        if self.reading and self.deadline is not None:
            wait = self.deadline - time.monotonic()
            if wait <= 0:
                raise RequestDeadline()
        self.sock.settimeout(wait)
        try:
            n = self.sock.recv_into(buffer)
        except TimeoutError:
            if self.reading and self.deadline is not None:
                raise RequestDeadline() from None
            raise
        finally:
            self.sock.settimeout(self.timeout)  # writes keep the plain timeout
        if n and self.reading and self.deadline is None:
            self.deadline = time.monotonic() + self.timeout
        return n


class RestServer(ThreadingHTTPServer):
    """``http.server`` with a bound on concurrent connections and the model manager.

    Args:
        address: (host, port) to bind.
        handler: the RequestHandler subclass that answers requests.
        manager: the served model's versions (``manager.ModelManager``), for the handler.
        limits: LIMITS, or a copy with other values.
    """

    daemon_threads = True
    request_queue_size = LIMITS["max_connections"]  # listen backlog: socketserver's 5 drops bursts of connects
    allow_reuse_address = True  # SO_REUSEADDR: restart at once; on Linux a second listener still fails

    def __init__(self, address, handler, manager, limits=LIMITS):
        self.manager, self.limits = manager, limits
        self.slots = threading.BoundedSemaphore(limits["max_connections"])
        self.draining = threading.Event()
        self.in_flight = 0
        self.in_flight_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(_raw_reply(503, {"error": f"too many connections (at most "
                                                          f"{self.limits['max_connections']})"}))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def _raw_reply(status: int, payload: dict) -> bytes:
    from http import HTTPStatus

    body = error_body(payload["error"]) if set(payload) == {"error"} else json.dumps(payload).encode()
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class RequestHandler(BaseHTTPRequestHandler):
    """One connection's requests: JSON replies, the read timeout, the body limit, draining
    (:meth:`_begin`/:meth:`_end` around a request's work) and one log line per request."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"  # even an unreadable request line gets a status line
    server_version = "tfchargen-serve"
    server: RestServer

    def setup(self):
        self.timeout = self.server.limits["read_timeout_s"]  # a slow or silent client is cut off
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
        # holds the body back until the client's delayed ACK on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = DeadlineReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self.reader)

    def log_message(self, *args):  # our own line per request instead (see _done)
        pass

    def send_error(self, code, message=None, explain=None):
        """http.server's protocol errors (bad request line, headers too long) as JSON."""
        self.command = self.command or "-"
        self.path = getattr(self, "path", "") or "-"
        self._send(code, error_body(message or explain or "bad request"), close=True)

    def handle_one_request(self):
        self._t0, self._rows, self._status = time.monotonic(), 0, None
        self.command, self.path, self.requestline = None, "", ""  # not the last request's
        self.request_version = self.default_request_version
        self.reader.start()
        try:  # http.server itself closes a connection idle past the timeout
            super().handle_one_request()
        except RequestDeadline:  # request line, headers or body still incomplete at the deadline
            self.command, self.path = self.command or "-", self.path or "-"
            self._send(408, error_body(f"the request was not received within "
                                       f"{self.server.limits['read_timeout_s']:g} s"), close=True)
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True

    def _send(self, status: int, payload, content_type="application/json", close=False) -> None:
        self.reader.done()
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        self._status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if close or self.server.draining.is_set():
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (ConnectionError, BrokenPipeError, TimeoutError):  # the client gave up
            self.close_connection = True
        self._done()

    def _error(self, e: ServerError, close=False) -> None:
        self._send(e.http_status, error_body(e.message), close=close)

    def _done(self) -> None:
        ms = (time.monotonic() - self._t0) * 1000
        log(f"{self.command} {self.path[:200]} {self._status} rows={self._rows} {ms:.1f}ms")

    def _begin(self) -> bool:
        with self.server.in_flight_lock:
            if self.server.draining.is_set():
                self._error(ServerError("UNAVAILABLE", "the server is shutting down"), close=True)
                return False
            self.server.in_flight += 1
        return True

    def _end(self) -> None:
        with self.server.in_flight_lock:
            self.server.in_flight -= 1

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise HttpError(411, "chunked bodies are not accepted: send Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HttpError(400, "Content-Length is not a number") from None
        if length < 0:
            raise HttpError(400, "Content-Length is negative")
        if length > self.server.limits["max_body_bytes"]:
            raise HttpError(413, f"request body of {length} bytes is over the limit of "
                                 f"{self.server.limits['max_body_bytes']} bytes")
        try:
            body = self.rfile.read(length)
        except (TimeoutError, RequestDeadline):
            raise HttpError(408, f"the request was not received within "
                                 f"{self.server.limits['read_timeout_s']:g} s") from None
        if len(body) < length:
            raise ConnectionError("the client closed the connection mid-body")
        self.reader.done()
        return body

    def _write_quietly(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except (ConnectionError, TimeoutError):
            pass
