"""TF Serving's JSON of tensors and protos (``util/json_tensor.cc``, ``api_rest.md``), for
both ends: the server writes replies (MakeJsonFromTensors: its float form, ``_bytes``
outputs as ``{"b64": ...}``) and status/metadata; the client writes inputs and reads
outputs. Strings are JSON strings, or ``{"b64": ...}`` for bytes that are not UTF-8. The
server reads request bodies with json_parse.py and json_request.py.

No TensorFlow import: the REST client runs without TensorFlow.
"""

from __future__ import annotations

import base64
import math

import numpy as np

from tfchargen.serving.errors import ServerError
from tfchargen.serving.json_text import json_string, utf8


def as_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, np.bytes_):
        return bytes(value)
    return str(value).encode("utf-8")


def message_json(message) -> dict:
    """A proto as TF Serving's REST API writes it (field names as in the .proto)."""
    from google.protobuf import json_format

    try:  # protobuf >= 5.26 renamed including_default_value_fields
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
    except TypeError:
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         including_default_value_fields=True)


# ------------------------------------------------------------------------------ client side


def json_value(value, always_b64: bool):
    """An input value (scalar, list or array) as the client sends it.

    >>> json_value([b"To\\xffday", "ok"], False)
    [{'b64': 'VG//ZGF5'}, 'ok']
    """
    if isinstance(value, (bytes, np.bytes_, str, np.str_)):
        raw = as_bytes(value)
        if not always_b64:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_value(v, always_b64) for v in value]
    raise TypeError(f"cannot send {type(value).__name__} to TF Serving")


def from_json(value):
    """A JSON output value -> Python: {"b64": ...} and strings -> bytes, lists recursively."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


# ------------------------------------------------------------------------------ server side


def float_text(v) -> str:
    """A float32/float64 output as json_tensor.cc's WriteDecimal writes it: absl::StrCat's
    six significant digits if they read back as the same value, else max_digits10 (9 for
    float32, 17 for float64); ``.0`` appended to whole numbers; NaN, Infinity, -Infinity.

    >>> [float_text(np.float32(x)) for x in (0.2, 1.0, 9e6, 3e-05, 1 / 3, float("-inf"))]
    ['0.2', '1.0', '9e+06', '3e-05', '0.333333343', '-Infinity']
    """
    kind = np.float32 if isinstance(v, np.float32) else np.float64
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "-Infinity" if v < 0 else "Infinity"
    text = "%.6g" % float(v)
    if kind(float(text)) != v:
        text = ("%.9g" if kind is np.float32 else "%.17g") % float(v)
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _json_out(name: str, value) -> str:
    """One output value (or nested array of them) as JSON text (AddTensorValues)."""
    if isinstance(value, np.ndarray):
        return "[" + ", ".join(_json_out(name, v) for v in value) + "]"
    if isinstance(value, bytes):
        if name.endswith("_bytes"):  # IsNamedTensorBytes
            return json_string(base64.b64encode(value).decode("ascii")).join(['{"b64": ', "}"])
        return json_string(value.decode("utf-8", "surrogateescape"))  # rapidjson writes the bytes as they are
    if isinstance(value, (np.bool_, bool)):
        return "true" if value else "false"
    if isinstance(value, np.floating):
        return float_text(value)
    return str(int(value))


def response_json(out: dict, fmt: str) -> bytes:
    """Outputs -> TF Serving's reply body: ``{"outputs": ...}`` (columnar) or
    ``{"predictions": ...}`` (row; objects when there are several outputs)."""
    if not out:
        raise ServerError("INVALID_ARGUMENT", "Cannot convert empty tensor map to JSON")
    if fmt == "columnar":
        if len(out) == 1:
            (name, value), = out.items()
            return utf8('{"outputs": ' + _json_out(name, value) + "}")
        fields = ", ".join(f"{json_string(k)}: {_json_out(k, v)}" for k, v in out.items())
        return utf8('{"outputs": {' + fields + "}}")
    sizes = {len(v) for v in out.values()}
    if len(sizes) > 1:
        raise ServerError("INVALID_ARGUMENT", "Tensor name: has inconsistent batch size")
    rows = []
    for i in range(sizes.pop()):
        if len(out) == 1:
            (name, value), = out.items()
            rows.append(_json_out(name, value[i]))
        else:
            rows.append("{" + ", ".join(f"{json_string(k)}: {_json_out(k, v[i])}" for k, v in out.items()) + "}")
    return utf8('{"predictions": [' + ", ".join(rows) + "]}")


def status_json(reply) -> dict:
    """A GetModelStatusResponse as TF Serving's REST status reply."""
    out = message_json(reply)
    for s in out.get("model_version_status", []):
        s.setdefault("status", {}).setdefault("error_message", "")
        s["status"].setdefault("error_code", "OK")
    return out


def metadata_json(reply) -> dict:
    """A GetModelMetadataResponse as TF Serving's REST metadata reply."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    sigs = get_model_metadata_pb2.SignatureDefMap()
    reply.metadata["signature_def"].Unpack(sigs)
    return {"model_spec": {"name": reply.model_spec.name, "signature_name": "",
                           "version": str(reply.model_spec.version.value)},
            "metadata": {"signature_def": message_json(sigs)}}
