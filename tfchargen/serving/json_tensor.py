"""TF Serving's JSON of tensors and protos (``util/json_tensor.cc``, ``api_rest.md``), for
both ends: the server reads predict bodies into numpy arrays and writes replies; the client
writes inputs and reads outputs. Strings are JSON strings, or ``{"b64": ...}`` for bytes
that are not UTF-8 and for outputs whose name ends in ``_bytes``.

No TensorFlow import: the server passes the signature's dtypes (tf.DType) in, and the REST
client runs without TensorFlow.
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np

from tfchargen.serving.errors import ServerError


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


def is_b64(v) -> bool:
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def _json_scalar(v, dtype):
    bad = ServerError("INVALID_ARGUMENT", f"JSON Value: {json.dumps(v)[:200]} Type: {type(v).__name__} is not of "
                      f"expected type: {dtype.name}")
    if dtype.name == "string":
        if is_b64(v):
            try:
                return base64.b64decode(v["b64"], validate=True)
            except ValueError:
                raise ServerError("INVALID_ARGUMENT", "Unable to base64 decode") from None
        if isinstance(v, str):
            return v.encode("utf-8", "surrogatepass")
        raise bad
    if dtype.name == "bool":
        if isinstance(v, bool):
            return v
        raise bad
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad
    if dtype.is_integer:  # rapidjson IsInt()/IsInt64(): a JSON 1.0 is a double, not an int
        if not isinstance(v, int) or not dtype.min <= v <= dtype.max:
            raise bad
        return v
    if dtype.name == "float32" and math.isfinite(v) and abs(v) > np.finfo(np.float32).max:
        raise ServerError("INVALID_ARGUMENT", f"Cannot convert JSON value: {v} to float without loss of precision.")
    return v


def json_tensor(value, dtype) -> np.ndarray:
    """A JSON value (a list, or a scalar) -> a numpy array of ``dtype`` (a tf.DType)."""
    def conv(v):
        return [conv(x) for x in v] if isinstance(v, list) else _json_scalar(v, dtype)
    converted = conv(value)
    if dtype.name == "string":
        if not isinstance(converted, list):
            arr = np.empty((), object)
            arr[()] = converted
            return arr
        arr = np.empty(len(converted), object)
        arr[:] = converted
        if any(isinstance(v, list) for v in converted):  # nested: let numpy find a dense shape
            try:
                arr = np.array(converted, dtype=object)
            except ValueError:
                raise ServerError("INVALID_ARGUMENT", "JSON Value is not a dense tensor") from None
        return arr
    try:
        return np.array(converted, dtype=dtype.as_numpy_dtype)
    except ValueError:
        raise ServerError("INVALID_ARGUMENT", f"JSON Value: {json.dumps(value)[:200]} is not a dense tensor") from None


def parse_json_body(body: bytes) -> dict:
    if not body:
        raise ServerError("INVALID_ARGUMENT", "JSON Parse error: The document is empty")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ServerError("INVALID_ARGUMENT", f"JSON Parse error: {str(e)[:200]}") from None
    if not isinstance(doc, dict):
        raise ServerError("INVALID_ARGUMENT", "JSON Value: the request body is not an object")
    return doc


def request_tensors(body: dict, dtypes: dict) -> tuple[dict, str]:
    """A predict request body -> ({input name: np.ndarray}, "row" | "columnar")."""
    if "instances" in body and "inputs" in body:
        raise ServerError("INVALID_ARGUMENT", "Not formatted correctly expecting only one of "
                          "'inputs' or 'instances' keys to exist")
    if "instances" in body:
        return _row_tensors(body["instances"], dtypes), "row"
    if "inputs" in body:
        return _columnar_tensors(body["inputs"], dtypes), "columnar"
    raise ServerError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")


def _row_tensors(instances, dtypes: dict) -> dict:
    if not isinstance(instances, list):
        raise ServerError("INVALID_ARGUMENT", "Excepting 'instances' to be an list/array")
    if not instances:
        raise ServerError("INVALID_ARGUMENT", "No values in 'instances' array")
    objects = isinstance(instances[0], dict) and not is_b64(instances[0])
    if not objects and len(dtypes) > 1:
        raise ServerError("INVALID_ARGUMENT", "instances is a plain list, but expecting list of objects as "
                          "multiple input tensors required as per tensorinfo_map")
    if not objects:
        name = next(iter(dtypes))
        return {name: json_tensor(instances, dtypes[name])}
    columns = {name: [] for name in dtypes}
    for i, item in enumerate(instances):
        if not isinstance(item, dict) or is_b64(item):
            raise ServerError("INVALID_ARGUMENT", f"Expecting object but got list at item {i} of input list")
        if set(item) != set(dtypes):
            raise ServerError("INVALID_ARGUMENT", f"Failed to process element: {i} of 'instances' list. "
                              f"JSON object: {json.dumps(item)[:200]} keys must be equal to: "
                              f"{','.join(sorted(dtypes))}")
        for name in dtypes:
            columns[name].append(item[name])
    return {name: json_tensor(columns[name], dtypes[name]) for name in dtypes}


def _columnar_tensors(inputs, dtypes: dict) -> dict:
    if not isinstance(inputs, dict) or is_b64(inputs):
        if len(dtypes) > 1:
            raise ServerError("INVALID_ARGUMENT", "inputs is a plain value/list, but expecting an object as "
                              "multiple input tensors required as per tensorinfo_map")
        name = next(iter(dtypes))
        return {name: json_tensor(inputs, dtypes[name])}
    tensors = {}
    for name, dtype in dtypes.items():
        if name not in inputs:
            raise ServerError("INVALID_ARGUMENT", f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = json_tensor(inputs[name], dtype)
    extra = sorted(set(inputs) - set(dtypes))
    if extra:
        tensors.update({k: np.zeros([0]) for k in extra})  # check_inputs names them
    return tensors


def _json_out(name: str, value):
    if isinstance(value, np.ndarray):
        return [_json_out(name, v) for v in value]
    if isinstance(value, bytes):
        if name.endswith("_bytes"):
            return {"b64": base64.b64encode(value).decode("ascii")}
        # TF Serving writes the bytes as they are; the exported model's strings are valid UTF-8.
        return value.decode("utf-8", "replace")
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(str(value))  # shortest repr that round-trips the float32, as TF Serving writes it
    return value


def response_json(out: dict, fmt: str) -> dict:
    """Outputs -> TF Serving's reply: ``{"outputs": ...}`` (columnar) or ``{"predictions": ...}``."""
    if fmt == "columnar":
        if len(out) == 1:
            (name, value), = out.items()
            return {"outputs": _json_out(name, value)}
        return {"outputs": {k: _json_out(k, v) for k, v in out.items()}}
    columns = {k: _json_out(k, v) for k, v in out.items()}
    if len(out) == 1:
        return {"predictions": next(iter(columns.values()))}
    n = len(next(iter(columns.values())))
    return {"predictions": [{k: columns[k][i] for k in columns} for i in range(n)]}


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
