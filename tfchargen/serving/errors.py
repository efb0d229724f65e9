"""How `tfchargen serve` reports: a request's failure as TF Serving states it (a status code
name and a message, with TF Serving's status tables) and one log line on stderr."""

from __future__ import annotations

import os
import sys
import threading

# TF Serving's http_server.cc ToHTTPStatusCode.
HTTP_STATUS = {"OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
               "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
               "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
               "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401}
# TensorFlow's error codes (tf.errors.*.error_code) by number, as gRPC status names.
TF_CODES = {0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
            6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
            10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
            15: "DATA_LOSS", 16: "UNAUTHENTICATED"}


class ServerError(Exception):
    """A request's failure as TF Serving reports it: a status code name and a message.

    Args:
        code: a gRPC/TensorFlow status name, e.g. ``"INVALID_ARGUMENT"``.
        message: the text the client sees.

    >>> ServerError("NOT_FOUND", "Servable not found").http_status
    404
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


_LOG_LOCK = threading.Lock()


def log(line: str) -> None:
    """One line on stderr in one write (lines of concurrent requests never interleave)."""
    data = (line.replace("\n", " ") + "\n").encode("utf-8", "backslashreplace")
    with _LOG_LOCK:
        try:
            sys.stderr.flush()
            fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):  # a stderr without a descriptor (captured)
            sys.stderr.write(data.decode("utf-8"))
            sys.stderr.flush()
            return
        while data:
            data = data[os.write(fd, data):]
