"""Files written whole or not at all: every file tfchargen writes goes through here.

A file is written aside (a ``.tmp-*`` name in the same directory), flushed to disk and
renamed over its final name, so a reader or a killed process never sees half a file;
nothing reads ``.tmp-*`` names (an export version being written is one, too).
"""

from __future__ import annotations

import contextlib
import json
import os

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(final: str):
    """Yields a temporary path beside ``final`` to write; once the block succeeds, the file
    is fsynced and renamed over ``final`` (atomic); if it fails, the temporary is removed.

    The temporary name ends like ``final`` (Keras checks ``.weights.h5``).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with atomic_path(os.path.join(d, "a.txt")) as tmp:
    ...     _ = open(tmp, "w").write("whole")
    ...     os.path.basename(tmp).startswith(TMP_PREFIX), os.path.exists(os.path.join(d, "a.txt"))
    (True, False)
    >>> os.listdir(d), open(os.path.join(d, "a.txt")).read()
    (['a.txt'], 'whole')
    """
    directory, name = os.path.split(os.path.abspath(final))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{name}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(final: str, text: str) -> None:
    """Writes ``text`` (UTF-8, ``\\n`` line ends) to ``final`` atomically."""
    with atomic_path(final) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def atomic_write_json(final: str, obj, indent=2) -> None:
    """Writes ``obj`` as JSON to ``final`` atomically."""
    atomic_write_text(final, json.dumps(obj, indent=indent))
