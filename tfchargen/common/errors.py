"""Errors as users read them: one line, a failed graph check's own message, no traceback.

Every layer that reports an error to a person (the CLI, the server, the stream printer)
uses these, so a message reads the same wherever it surfaces.
"""

from __future__ import annotations

import re


def failed_check(msg: str) -> str | None:
    """The message of a failed tf.debugging assertion inside an error text, if any."""
    m = re.search(r"assertion failed: \[(.+?)\](?: \[|$)", msg, flags=re.M)
    return m.group(1) if m else None


def one_line(e: BaseException, limit: int = 400) -> str:
    """The user-facing line of an error: a failed graph assertion's own message, else the
    first line of the message (never a traceback, never tensor dumps)."""
    msg = getattr(e, "message", None) or str(e) or type(e).__name__
    check = failed_check(msg)
    if check:
        return check
    if isinstance(e, OSError) and e.filename and e.strerror:  # e.g. [Errno 13] Permission denied
        return f"{e.strerror}: {e.filename}"
    first = next((line.strip() for line in msg.splitlines() if line.strip()), msg)
    return first if len(first) <= limit else first[:limit] + "..."


def with_failed_check(msg: str) -> str:
    """An error text's first line, then a failed graph check's own message if it holds one
    (a server's error puts the check further down).

    >>> with_failed_check("HTTP 400: bad request\\n... assertion failed: [top_k must be >= 0 (0 = off)]")
    'HTTP 400: bad request top_k must be >= 0 (0 = off)'
    """
    check = failed_check(msg)
    return msg.splitlines()[0].strip() + (f" {check}" if check else "")
