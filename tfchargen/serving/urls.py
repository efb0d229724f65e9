"""TF Serving's REST URL grammar (``model_servers/http_rest_api_util.cc`` ParseModelInfo,
``http_rest_api_handler.cc`` ProcessRequest): which API a method and path ask for, or TF
Serving's error for them.

The path is matched with its query string, as TF Serving matches ``uri_path()`` (path and
query). Its regular expressions are case-insensitive, but the verb and the ``metadata``
subresource are then compared in lower case: ``:PREDICT`` is a malformed request.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from tfchargen.serving.errors import ServerError

V1 = re.compile(r"/v1/.*", re.I | re.S)  # kHTTPRestApiHandlerPathRegex: the rest is not TF Serving's API
# kPredictionApiGegex, plus our own ``:stream`` verb (stream.py).
_POST = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                   r":(classify|regress|predict|stream)", re.I | re.S)
# kModelStatusApiRegex
_GET = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I | re.S)
INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class ApiCall:
    """One REST API call: ``api`` is status, metadata, predict, classify, regress or stream."""

    api: str
    name: str
    version: int | None = None
    label: str | None = None


def _decode(text: str, what: str) -> str:
    """curl_easy_unescape: %XX escapes (not '+')."""
    try:
        return urllib.parse.unquote_to_bytes(text).decode("utf-8", "surrogateescape")
    except ValueError:  # pragma: no cover - unquote_to_bytes does not fail on bad escapes
        raise ServerError("INVALID_ARGUMENT", f"Failed to decode {what}:{text}") from None


def parse(method: str, path: str) -> ApiCall:
    """The API call ``method path`` asks for, or TF Serving's INVALID_ARGUMENT.

    >>> parse("POST", "/v1/models/chargen/versions/2:predict")
    ApiCall(api='predict', name='chargen', version=2, label=None)
    >>> parse("GET", "/v1/models/chargen/labels/stable/metadata")
    ApiCall(api='metadata', name='chargen', version=None, label='stable')
    >>> parse("PUT", "/v1/models/chargen")
    Traceback (most recent call last):
    tfchargen.serving.errors.ServerError: Malformed request: PUT /v1/models/chargen
    """
    malformed = ServerError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")
    m = _POST.fullmatch(path) if method == "POST" else _GET.fullmatch(path) if method == "GET" else None
    name, version_text, label_text, verb = m.groups() if m else (None, None, None, None)
    name = _decode(name, "model name") if name else ""
    version = None
    if version_text:
        version = int(version_text)
        if version > INT64_MAX:  # absl::SimpleAtoi into an int64
            raise ServerError("INVALID_ARGUMENT", f"Failed to convert version: {version_text} to numeric.")
    label = _decode(label_text, "model version label") if label_text else None
    if not m:
        raise malformed
    if method == "POST":
        if verb not in ("classify", "regress", "predict", "stream"):  # matched case-insensitively only
            raise malformed
        return ApiCall(verb, name, version, label)
    if not name:
        raise ServerError("INVALID_ARGUMENT", "Missing model name in request.")
    return ApiCall("metadata" if verb == "metadata" else "status", name, version, label)
