"""Reading a REST body the way TF Serving's rapidjson does (``util/json_tensor.cc``
ParseJson): NaN/Infinity accepted, bytes after the first JSON document ignored
(kParseStopWhenDoneFlag), strings not checked for valid UTF-8, rapidjson's error texts and
byte offsets; and its debug form of a JSON value (JsonValueToDebugString) for error messages.
"""

from __future__ import annotations

import json
import math
import re

from tfchargen.serving.errors import ServerError

_WS = " \t\n\r"
_TOO_BIG = "Number too big to be stored in double."
# Python's json messages -> rapidjson's GetParseError_En.
_MESSAGES = (
    ("Expecting value", "Invalid value."),
    ("Expecting property name", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid \\uXXXX", "Incorrect hex digit after \\u escape in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid control character", "Invalid encoding in string."),
)


class _TooBig(ValueError):
    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _TooBig(text)
    return value


def _int(text: str):
    # rapidjson keeps an integer past 64 bits as a double (so it is no int32/int64 either).
    if len(text) < 20 or (len(text.lstrip("-")) <= 20 and abs(int(text)) < 1 << 64):
        return int(text)
    return _float(text)


_DECODER = json.JSONDecoder(parse_float=_float, parse_int=_int)
# rapidjson refuses a \uD800-\uDBFF escape not followed by a \uDC00-\uDFFF one (Python keeps it).
_LONE_HIGH_SURROGATE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})")


def utf8(text: str) -> bytes:
    """A parsed string back to the bytes it came from: bytes that were not UTF-8 as they were,
    a lone surrogate escape as rapidjson writes it (its code point in UTF-8 form)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _comma_error(text: str, pos: int) -> str:
    """Python's "Expecting ',' delimiter" as rapidjson says it: in an object or an array."""
    stack, in_string, escaped = [], False, False
    for c in text[:pos]:
        if in_string:
            escaped, in_string = (False, True) if escaped else (c == "\\", c != '"')
        elif c == '"':
            in_string = True
        elif c in "[{":
            stack.append(c)
        elif c in "]}" and stack:
            stack.pop()
    if stack and stack[-1] == "{":
        return "Missing a comma or '}' after an object member."
    return "Missing a comma or ']' after an array element."


def _parse_error(message: str, text: str, pos: int) -> ServerError:
    offset = len(utf8(text[:pos]))
    return ServerError("INVALID_ARGUMENT", f"JSON Parse error: {message} at offset: {offset}")


_SPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERALS = (("true", True), ("false", False), ("null", None), ("NaN", math.nan), ("Infinity", math.inf),
             ("-Infinity", -math.inf))


def _scalar(text: str, i: int):
    if text.startswith('"', i):
        return json.decoder.scanstring(text, i + 1)
    for word, value in _LITERALS:
        if text.startswith(word, i):
            return value, i + len(word)
    m = _NUMBER.match(text, i)
    if not m:
        raise json.JSONDecodeError("Expecting value", text, i)
    return (_float if m.group(1) or m.group(2) else _int)(m.group()), m.end()


def _key(text: str, i: int):
    i = _SPACE.match(text, i).end()
    if not text.startswith('"', i):
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
    key, i = json.decoder.scanstring(text, i + 1)
    i = _SPACE.match(text, i).end()
    if not text.startswith(":", i):
        raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
    return key, i + 1


def _iterative(text: str, i: int):
    """json's raw_decode without recursion (rapidjson's kParseIterativeFlag), for documents
    nested deeper than Python's json reads."""
    stack = []  # [container, key of the value being read]
    while True:
        i = _SPACE.match(text, i).end()
        opener = text[i:i + 1]
        if opener in ("[", "{"):
            i = _SPACE.match(text, i + 1).end()
            if text.startswith("]" if opener == "[" else "}", i):
                value, i = ([] if opener == "[" else {}), i + 1
            else:
                key = None
                if opener == "{":
                    key, i = _key(text, i)
                stack.append([[] if opener == "[" else {}, key])
                continue
        else:
            value, i = _scalar(text, i)
        while stack:  # the value ends its containers, or a comma asks for the next one
            container, key = stack[-1]
            if isinstance(container, list):
                container.append(value)
            else:
                container[key] = value
            i = _SPACE.match(text, i).end()
            if text.startswith(",", i):
                i += 1
                if isinstance(container, dict):
                    stack[-1][1], i = _key(text, i)
                break
            if not text.startswith("]" if isinstance(container, list) else "}", i):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            value, i = stack.pop()[0], i + 1
        else:
            return value, i


def _decode(text: str, start: int):
    try:
        return _DECODER.raw_decode(text, start)
    except RecursionError:
        return _iterative(text, start)


def parse_json_body(body: bytes) -> dict:
    """A request body -> its top-level JSON object, or TF Serving's INVALID_ARGUMENT."""
    if not body:
        raise ServerError("INVALID_ARGUMENT", "JSON Parse error: The document is empty")
    text = body.decode("utf-8", "surrogateescape")
    start = len(text) - len(text.lstrip(_WS))
    if start == len(text):
        raise _parse_error("The document is empty.", text, start)
    lone = _LONE_HIGH_SURROGATE.search(text) if "\\u" in text else None
    if lone:
        raise _parse_error("The surrogate pair in string is invalid.", text, lone.start())
    try:
        doc, _ = _decode(text, start)
    except _TooBig as e:
        raise _parse_error(_TOO_BIG, text, max(text.find(e.text, start), start)) from None
    except json.JSONDecodeError as e:
        if e.msg.startswith("Expecting ',' delimiter"):
            raise _parse_error(_comma_error(text, e.pos), text, e.pos) from None
        message = next((ours for py, ours in _MESSAGES if e.msg.startswith(py)), "Invalid value.")
        at_end = e.msg.startswith("Unterminated string")  # rapidjson reads on to the end
        raise _parse_error(message, text, len(text) if at_end else e.pos) from None
    except ValueError:  # an integer Python will not read
        raise _parse_error("Invalid value.", text, start) from None
    if not isinstance(doc, dict):
        raise ServerError("INVALID_ARGUMENT", f"JSON Value: {debug_string(doc)} Is not object")
    return doc


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
