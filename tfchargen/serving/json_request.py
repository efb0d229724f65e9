"""A predict body's tensors as TF Serving reads them (``util/json_tensor.cc``
FillPredictRequestFromJson, FillTensorProto, AddValueToTensor): the row (``instances``) and
columnar (``inputs``) formats, dense shapes taken from the first elements, each value
checked against the signature's dtype, with TF Serving's messages. Only the signature's
inputs are read from a columnar object (other keys are ignored); a number past float32's
range becomes an infinity (a C++ double -> float cast)."""

from __future__ import annotations

import base64
import binascii

import numpy as np

from tfchargen.serving.errors import ServerError
from tfchargen.serving.json_text import debug_string, json_type, utf8

_MAX_DIMS = 254  # TensorShape's kMaxDims: deeper lists are no tensor (and would exhaust the stack here)
_DTYPE_NAMES = {"float32": "float", "float64": "double"}  # DataTypeString, where it differs


def _bad(message: str) -> ServerError:
    return ServerError("INVALID_ARGUMENT", message)


def is_b64(v) -> bool:
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def _type_error(v, dtype) -> ServerError:
    return _bad(f"JSON Value: {debug_string(v)} Type: {json_type(v)} is not of expected type: "
                f"{_DTYPE_NAMES.get(dtype.name, dtype.name)}")


def _value(v, dtype):
    """AddValueToTensor (and the base64 objects of DT_STRING)."""
    if isinstance(v, dict):
        if dtype.name != "string":
            raise _type_error(v, dtype)
        if not is_b64(v):
            raise _bad(f"JSON Value: {debug_string(v)} not formatted correctly for base64 data")
        try:  # absl::Base64Unescape: padding optional
            return base64.b64decode(v["b64"] + "=" * (-len(v["b64"]) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise _bad("Unable to base64 decode") from None
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if dtype.name == "string":
        ok = isinstance(v, str)
        v = utf8(v) if ok else v
    elif dtype.name == "bool":
        ok = isinstance(v, bool)
    elif dtype.is_floating:
        ok = number
    elif dtype.is_integer:  # rapidjson IsInt()/IsInt64()/IsUint...: a 1.0 is a double, not an int
        ok = number and isinstance(v, int) and dtype.min <= v <= dtype.max
        if ok and dtype.name in ("int16", "int8", "uint8"):  # read with IsInt(), cast like TF Serving
            ok = -(1 << 31) <= v < 1 << 31
    else:
        raise ServerError("UNIMPLEMENTED", f"Conversion of JSON Value: {debug_string(v)} to type: {dtype.name}")
    if not ok:
        raise _type_error(v, dtype)
    return v


def _shape(v) -> list[int]:
    """GetDenseTensorShape: each list's size, following first elements."""
    shape = []
    while isinstance(v, list):
        shape.append(len(v))
        if not v:
            break
        v = v[0]
    return shape


def _fill(v, level: int, shape: list[int], dtype, out: list) -> None:
    """FillTensorProto: values in row-major order, every leaf at the level of the shape's rank."""
    rank = len(shape)
    if not isinstance(v, list):
        if level != rank:
            raise _bad(f"JSON Value: {debug_string(v)} found at incorrect level: {level + 1} in the JSON DOM. "
                       f"Expected at level: {rank}")
        out.append(_value(v, dtype))
        return
    if level >= rank:
        raise _bad(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(v) != shape[level]:
        raise _bad(f"Encountered list at unexpected size: {len(v)} at level: {level} expected size: {shape[level]}")
    for x in v:
        _fill(x, level + 1, shape, dtype, out)


def _array(values: list, shape: list[int], dtype) -> np.ndarray:
    if dtype.name == "string":
        arr = np.empty(len(values), object)
        arr[:] = values
        return arr.reshape(shape)
    with np.errstate(over="ignore"):  # static_cast<float>(double): past float32's range -> inf
        return np.array(values, dtype=np.float64 if dtype.is_floating else object).astype(
            dtype.as_numpy_dtype).reshape(shape)


def json_tensor(value, dtype) -> np.ndarray:
    """A JSON value (a list, or a scalar) -> a numpy array of ``dtype`` (a tf.DType)."""
    shape, values = _shape(value), []
    if len(shape) > _MAX_DIMS:
        raise _bad(f"Encountered list at unexpected level: {_MAX_DIMS} expected < {_MAX_DIMS}")
    _fill(value, 0, shape, dtype, values)
    return _array(values, shape, dtype)


def request_tensors(body: dict, dtypes: dict) -> tuple[dict, str]:
    """A predict request body -> ({input name: np.ndarray}, "row" | "columnar")."""
    if "instances" in body:
        if "inputs" in body:
            raise _bad(f"JSON Value: {debug_string(body)} Not formatted correctly expecting only one of "
                       "'inputs' or 'instances' keys to exist ")
        if not isinstance(body["instances"], list):
            raise _bad(f"JSON Value: {debug_string(body)} Expecting 'instances' to be an list/array")
        if not body["instances"]:
            raise _bad(f"JSON Value: {debug_string(body)} No values in 'instances' array")
        return _row_tensors(body["instances"], dtypes), "row"
    if "inputs" in body:
        return _columnar_tensors(body["inputs"], dtypes), "columnar"
    raise _bad("Missing 'inputs' or 'instances' key")


def _item(value, name: str, dtypes: dict, shapes: dict, columns: dict) -> None:
    """AddInstanceItem: one element's value of input ``name``, same size and shape as the others'."""
    if name not in dtypes:
        raise _bad(f"JSON object: does not have named input: {name}")
    shape, values = _shape(value), []
    if len(shape) > _MAX_DIMS:
        raise _bad(f"Encountered list at unexpected level: {_MAX_DIMS} expected < {_MAX_DIMS}")
    _fill(value, 0, shape, dtypes[name], values)
    if name in shapes and int(np.prod(shapes[name])) != len(values):
        raise _bad(f"Expecting tensor size: {int(np.prod(shapes[name]))} but got: {len(values)}")
    if name in shapes and shapes[name] != shape:
        raise _bad(f"Expecting shape [{','.join(map(str, shapes[name]))}] but got: [{','.join(map(str, shape))}]")
    shapes[name] = shape
    columns.setdefault(name, []).extend(values)


def _row_tensors(instances: list, dtypes: dict) -> dict:
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise _bad("instances is a plain list, but expecting list of objects as multiple input tensors "
                   "required as per tensorinfo_map")
    objects = isinstance(instances[0], dict) and not is_b64(instances[0])
    shapes, columns = {}, {}
    for i, item in enumerate(instances):
        element_is_object = isinstance(item, dict) and not is_b64(item)
        if objects and not element_is_object:
            raise _bad(f"Expecting object but got list at item {i} of input list")
        if not objects and element_is_object:
            raise _bad(f"Expecting value/list but got object at item {i} of input list")
        if not objects:
            _each(f"Failed to process element: {i} of 'instances' list. Error: ",
                  item, next(iter(dtypes)), dtypes, shapes, columns)
            continue
        for name, value in item.items():
            _each(f"Failed to process element: {i} key: {name} of 'instances' list. Error: ",
                  value, name, dtypes, shapes, columns)
        if set(item) != set(dtypes):
            raise _bad(f"Failed to process element: {i} of 'instances' list. JSON object: {debug_string(item)} "
                       f"keys must be equal to: {','.join(sorted(dtypes))}")
    n = len(instances)
    return {name: _array(columns[name], [n, *shapes[name]], dtypes[name]) for name in columns}


def _each(prefix: str, *item_args) -> None:
    """_item, its error prefixed as FillTensorMapFromInstancesList does."""
    try:
        _item(*item_args)
    except ServerError as e:  # status.ToString(): "INVALID_ARGUMENT: message"
        raise _bad(f"{prefix}{e.code}: {e.message}") from None


def _columnar_tensors(inputs, dtypes: dict) -> dict:
    if not isinstance(inputs, dict) or is_b64(inputs):
        if len(dtypes) > 1:
            raise _bad("inputs is a plain value/list, but expecting an object as multiple input tensors "
                       "required as per tensorinfo_map")
        name = next(iter(dtypes))
        return {name: json_tensor(inputs, dtypes[name])}
    tensors = {}
    for name, dtype in dtypes.items():  # other keys of the object are not read
        if name not in inputs:
            raise _bad(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = json_tensor(inputs[name], dtype)
    return tensors


def check_examples(doc: dict) -> None:
    """FillClassifyRegressRequestFromJson's checks of a ``:classify``/``:regress`` body
    (its ``context`` and ``examples``), with its messages."""
    def example(value) -> None:
        if not isinstance(value, dict):
            raise _bad(f"Example must be JSON object but got JSON {json_type(value)}")
    if "context" in doc:
        example(doc["context"])
    if "examples" not in doc:
        raise _bad(f"JSON Value: {debug_string(doc)} When method is classify, key 'examples' is expected and "
                   "was not found")
    if not isinstance(doc["examples"], list):
        raise _bad(f"JSON Value: {debug_string(doc)} Expecting 'examples' value to be an list/array")
    if not doc["examples"]:
        raise _bad(f"JSON Value: {debug_string(doc)} 'examples' value is an empty array")
    for value in doc["examples"]:
        example(value)
