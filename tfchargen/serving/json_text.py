"""JSON text as TF Serving writes it with rapidjson: strings (Writer's escapes), the debug
form of a JSON value quoted in error messages (json_tensor.cc JsonValueToDebugString) and an
error reply (MakeJsonFromStatus)."""

from __future__ import annotations

import json
import math


def utf8(text: str) -> bytes:
    """A parsed string back to the bytes it came from: bytes that were not UTF-8 as they were,
    a lone surrogate escape as rapidjson writes it (its code point in UTF-8 form)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def error_body(message: str) -> bytes:
    """A REST error reply as TF Serving writes it (MakeJsonFromStatus, rapidjson's PrettyWriter).

    >>> error_body('Malformed request: GET /v2')
    b'{\\n    "error": "Malformed request: GET /v2"\\n}'
    """
    return utf8('{\n    "error": ' + json_string(message) + "\n}")


# ------------------------------------------------------------------ JsonValueToDebugString

_DEBUG_LIMIT = 256  # kMaxJsonDebugStringBytes


def json_string(s: str) -> str:
    """A string as rapidjson's Writer writes it (control characters escaped, upper-case
    hex; '/' and non-ASCII as they are)."""
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20:
            out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c, f"\\u{ord(c):04X}"))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def number_text(v) -> str:
    """A JSON number as rapidjson writes a parsed one (shortest double, ``1.0``, ``1e21``)."""
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(v).replace("e+", "e")


def json_type(v) -> str:
    """rapidjson's type of a parsed value, as json_tensor.cc's JsonTypeString names it."""
    if v is None:
        return "Null"
    if isinstance(v, bool):
        return "True" if v else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(v), "Number")


def _tokens(v, level: int):
    """(prefix, text) pairs of PrettyWriter with kFormatSingleLineArray (no deeper than the
    limit could show)."""
    if level > _DEBUG_LIMIT:
        return
    if isinstance(v, list):
        yield "", "["
        for i, x in enumerate(v):
            for j, (prefix, text) in enumerate(_tokens(x, level + 1)):
                yield (", " if i and not j else "") + prefix, text
        yield "", "]"
    elif isinstance(v, dict):
        if not v:
            yield "", "{}"
            return
        yield "", "{"
        pad = "    " * (level + 1)  # objects indent by their depth (arrays count too: close enough)
        for i, (k, x) in enumerate(v.items()):
            yield ("," if i else "") + "\n" + pad, json_string(k) + ": "
            yield from _tokens(x, level + 1)
        yield "\n" + "    " * level, "}"
    elif isinstance(v, str):
        yield "", json_string(v)
    elif v is None or isinstance(v, bool):
        yield "", json.dumps(v)
    else:
        yield "", number_text(v)


def debug_string(v) -> str:
    """JsonValueToDebugString: the value as TF Serving quotes it in errors, cut after
    about 256 bytes (no token starts past the limit)."""
    out, size = [], 0
    for prefix, text in _tokens(v, 0):
        if size >= _DEBUG_LIMIT:
            break
        piece = prefix + text
        out.append(piece)
        size += len(utf8(piece))
    return "".join(out)
