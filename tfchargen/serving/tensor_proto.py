"""Output tensors as TF Serving's Predict writes them by default
(``Tensor::AsProtoField``: the typed ``*_val`` fields, not ``tensor_content``), so clients
that read ``outputs[...].float_val`` work, and ``tf.make_ndarray`` reads them all the same."""

from __future__ import annotations

import numpy as np

# numpy dtype kind/size -> (DataType enum value, TensorProto field).
_FIELDS = {
    np.dtype(np.float32): (1, "float_val"), np.dtype(np.float64): (2, "double_val"),
    np.dtype(np.int32): (3, "int_val"), np.dtype(np.uint8): (4, "int_val"), np.dtype(np.int16): (5, "int_val"),
    np.dtype(np.int8): (6, "int_val"), np.dtype(np.int64): (9, "int64_val"), np.dtype(np.bool_): (10, "bool_val"),
    np.dtype(np.uint16): (17, "int_val"), np.dtype(np.uint32): (22, "uint32_val"),
    np.dtype(np.uint64): (23, "uint64_val"),
}
DT_STRING = 7


def as_proto_field(value: np.ndarray):
    """A TensorProto of ``value`` with its values in the typed field of its dtype.

    >>> p = as_proto_field(np.array([0.5, 2.0], np.float32))
    >>> list(p.float_val), p.tensor_content, [d.size for d in p.tensor_shape.dim]
    ([0.5, 2.0], b'', [2])
    """
    from tensorflow.core.framework import tensor_pb2

    value = np.asarray(value)
    proto = tensor_pb2.TensorProto()
    for size in value.shape:
        proto.tensor_shape.dim.add().size = size
    if value.dtype == object or value.dtype.kind in "SU":
        proto.dtype = DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in value.flat)
        return proto
    if value.dtype not in _FIELDS:
        raise TypeError(f"no TensorProto field for {value.dtype}")
    proto.dtype, field = _FIELDS[value.dtype]
    getattr(proto, field).extend(value.ravel().tolist())
    return proto
