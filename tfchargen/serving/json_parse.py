"""Reading a REST body the way TF Serving's rapidjson does (``util/json_tensor.cc``
ParseJson): NaN/Infinity accepted, bytes after the first JSON document ignored
(kParseStopWhenDoneFlag), strings not checked for valid UTF-8, documents nested deeper than
Python's json reads (kParseIterativeFlag), rapidjson's error texts and byte offsets.
"""

from __future__ import annotations

import json
import math
import re

from tfchargen.serving.errors import ServerError
from tfchargen.serving.json_text import debug_string, utf8

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
