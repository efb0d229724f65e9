"""A fault-injecting proxy for tests: sits between a client and a real `tfchargen serve`.

The product server has no test hooks; to test the clients' retries and timeouts the
network between them fails instead: the next ``fail_next`` calls answer UNAVAILABLE (HTTP
503 / gRPC UNAVAILABLE, what TF Serving answers when its batching queue is full or the
model is loading) without reaching the server, and every call can be delayed by
``delay_s`` before it is forwarded. Everything else is relayed byte for byte.

    with FaultProxy(server.rest_url, server.grpc_target) as proxy:
        proxy.fail_next = 2
        RestClient(proxy.rest_url).generate(["Today "])   # two 503s, then the server's answer
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc

INJECTED = "fault proxy: injected UNAVAILABLE"


class FaultProxy:
    """REST and gRPC proxies on 127.0.0.1 (free ports) in front of ``rest_url``/``grpc_target``.

    Args:
        rest_url: the server's REST address, e.g. ``http://127.0.0.1:8501``.
        grpc_target: the server's gRPC ``host:port``.
    """

    def __init__(self, rest_url: str, grpc_target: str):
        self.fail_next, self.delay_s, self.calls = 0, 0.0, 0
        self._lock = threading.Lock()
        upstream = urllib.parse.urlsplit(rest_url)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(self, upstream.hostname, upstream.port))
        self._http.daemon_threads = True
        self.rest_url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._channel = grpc.insecure_channel(grpc_target)
        self._grpc = grpc.server(futures.ThreadPoolExecutor(16))
        self._grpc.add_generic_rpc_handlers([_GrpcRelay(self)])
        self.grpc_target = f"127.0.0.1:{self._grpc.add_insecure_port('127.0.0.1:0')}"

    def reset(self) -> None:
        with self._lock:
            self.fail_next, self.delay_s, self.calls = 0, 0.0, 0

    def admit(self) -> bool:
        """Counts a call; False if it is to fail, else waits delay_s and returns True."""
        with self._lock:
            self.calls += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                return False
            delay = self.delay_s
        time.sleep(delay)
        return True

    def __enter__(self):
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self._grpc.start()
        return self

    def __exit__(self, *exc):
        self._http.shutdown()
        self._http.server_close()
        self._grpc.stop(None)
        self._channel.close()


def _rest_handler(proxy: FaultProxy, host: str, port: int):
    class Relay(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _relay(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not proxy.admit():
                status, data = 503, b'{"error": "' + INJECTED.encode() + b'"}'
            else:
                conn = http.client.HTTPConnection(host, port, timeout=120)
                conn.request(self.command, self.path, body or None, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                status, data = reply.status, reply.read()
                conn.close()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out
                pass

        do_GET = do_POST = _relay

    return Relay


class _GrpcRelay(grpc.GenericRpcHandler):
    def __init__(self, proxy: FaultProxy):
        self.proxy = proxy

    def service(self, details):
        method = details.method
        forward = self.proxy._channel.unary_unary(method)  # bytes in, bytes out

        def relay(request: bytes, context):
            if not self.proxy.admit():
                context.abort(grpc.StatusCode.UNAVAILABLE, INJECTED)
            try:
                return forward(request, timeout=120)
            except grpc.RpcError as e:
                context.abort(e.code(), e.details())

        return grpc.unary_unary_rpc_method_handler(relay)
