"""The TensorFlow.js export: the step function as a TF.js graph model, written directly.

    out_dir/model.json          {"format": "graph-model", "modelTopology": GraphDef as JSON,
                                 "weightsManifest": [...], "signature": {...}, ...}
    out_dir/group1-shard1of1.bin  the constants' bytes, in weightsManifest's order
    out_dir/manifest.json       manifest.py's (runtime "tfjs")

The format is the one tfjs-converter's ``tensorflowjs_converter --input_format tf_saved_model``
writes (tf_saved_model_conversion_v2.write_artifacts, write_weights.write_weights), made here
from TensorFlow alone: the ``tensorflowjs`` pip package cannot be installed beside
TensorFlow 2.21 (docs/design.md, "The TensorFlow.js export"). The step function is frozen
(its variables become Const nodes), every Const's value moves into the weight file, and each
op is checked against SUPPORTED_OPS. No grappler pass: a fused op would reorder the float
math the host loop compares with the SavedModel's, and the graph is small.

export/js/tfchargen.mjs loads the folder (in Node from files, in a browser over HTTP) and
runs sampling rule "tfchargen-sampling-1" around it.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.framework import convert_to_constants, tensor_util

from tfchargen import __version__
from tfchargen.common import files
from tfchargen.portable import manifest as manifest_lib

MODEL_FILE = "model.json"
WEIGHTS_FILE = "group1-shard1of1.bin"  # write_weights' name for one group in one shard
# A shard as large as the model: browsers cache files of several MB, and a step model of
# the sizes this project trains stays far below the converter's 4 MB default anyway.
SHARD_BYTES = 64 * 1024 * 1024

# The ops a step graph uses that @tensorflow/tfjs-converter 4.22 executes (its op_list; the
# test reads the installed package's list and checks this set against it). An op outside
# it stops the export with its name, rather than a model that fails when a page loads it.
SUPPORTED_OPS = frozenset({
    "Placeholder", "Const", "Identity", "NoOp",
    "MatMul", "BiasAdd", "AddV2", "Add", "Sub", "Mul", "RealDiv",
    "Sigmoid", "Tanh", "Relu", "LogSoftmax", "Softmax",
    "GatherV2", "Split", "SplitV", "StridedSlice", "ConcatV2", "Reshape", "Squeeze", "ExpandDims",
    "Less", "GreaterEqual", "Select", "SelectV2", "Cast",
})

# The TensorProto fields that hold a Const's values (tf_saved_model_conversion_v2.CLEARED_TENSOR_FIELDS).
_VALUE_FIELDS = ("tensor_content", "half_val", "float_val", "double_val", "int_val", "string_val",
                 "scomplex_val", "int64_val", "bool_val", "resource_handle_val", "variant_val",
                 "uint32_val", "uint64_val")
# TF.js weights are float32, int32 or bool; the converter narrows the others the same way.
_NARROW = {np.dtype(np.float64): np.float32, np.dtype(np.float16): np.float32, np.dtype(np.int64): np.int32}
_WEIGHT_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.int32): "int32", np.dtype(np.bool_): "bool"}


class UnsupportedOpError(ValueError):
    """The step graph holds an op TF.js cannot run."""


class _MessageFilter(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record) -> bool:
        return not record.getMessage().startswith(self.start)


def frozen_step(model):
    """(GraphDef, frozen concrete function) of ``model.step``, its variables folded into
    constants; its inputs and outputs are in ``model.input_names`` / ``output_names`` order."""
    concrete = model.step.get_concrete_function()
    # Freezing exports a MetaGraph, which warns that it cannot serialize the vocabulary
    # tables' initializer collection: the step graph holds no table, so nothing is lost.
    tf_logger = logging.getLogger("tensorflow")
    tables = _MessageFilter("Issue encountered when serializing table_initializer")
    tf_logger.addFilter(tables)
    try:
        frozen = convert_to_constants.convert_variables_to_constants_v2(concrete, aggressive_inlining=True)
    finally:
        tf_logger.removeFilter(tables)
    graph_def = frozen.graph.as_graph_def()
    if len(frozen.inputs) != len(model.input_names) or len(frozen.outputs) != len(model.output_names):
        raise ValueError(f"step has {len(frozen.inputs)} inputs and {len(frozen.outputs)} outputs; the model "
                         f"names {model.input_names} and {model.output_names}")
    return graph_def, frozen


def check_ops(graph_def) -> None:
    """UnsupportedOpError naming every op of ``graph_def`` outside SUPPORTED_OPS."""
    ops = {n.op for n in graph_def.node} | {n.op for f in graph_def.library.function for n in f.node_def}
    unsupported = sorted(ops - SUPPORTED_OPS)
    if unsupported:
        raise UnsupportedOpError(f"the step graph uses ops TensorFlow.js does not run: {', '.join(unsupported)}")


def extract_weights(graph_def):
    """Moves every Const's values out of ``graph_def`` (in place): [(name, array)] in node order."""
    weights = []
    for node in graph_def.node:
        if node.op != "Const":
            continue
        value = tensor_util.MakeNdarray(node.attr["value"].tensor)
        value = value.astype(_NARROW.get(value.dtype, value.dtype))
        if value.dtype not in _WEIGHT_DTYPES:
            raise UnsupportedOpError(f"constant {node.name} has dtype {value.dtype}, which TF.js weights cannot hold")
        weights.append((node.name, value))
        for field in _VALUE_FIELDS:
            node.attr["value"].tensor.ClearField(field)
    return weights


def _tensor_infos(names, tensors) -> dict:
    """{name: TensorInfo as JSON (name, dtype, tensorShape)}: a SignatureDef's inputs or outputs."""
    return {name: json_format.MessageToDict(meta_graph_pb2.TensorInfo(
        name=t.name, dtype=t.dtype.as_datatype_enum, tensor_shape=t.shape.as_proto()))
            for name, t in zip(names, tensors)}


def write(out_dir, model, manifest: dict) -> dict:
    """Writes the TF.js export of ``model`` into ``out_dir`` (created if needed).

    Args:
        out_dir: the export folder.
        model: a ``numeric.StepModel`` (``numeric.load(run_dir)``).
        manifest: ``manifest.build(model, "tfjs")`` (or ``"web"``, for web.write); written
            as ``out_dir/manifest.json``.

    Returns:
        ``manifest`` as written.

    Raises:
        UnsupportedOpError: the step graph needs an op TF.js lacks (nothing is written).

    Files: ``model.json``, ``group1-shard1of1.bin`` and ``manifest.json``; the model's
    signature keys are the manifest's ``signatures.step`` names (``ids``, ``state_i`` in,
    ``log_probs``, ``state_i`` out), so a host calls ``model.execute({ids, state_0, ...},
    ["log_probs", "state_0", ...])`` without knowing node names.
    """
    graph_def, frozen = frozen_step(model)
    check_ops(graph_def)
    # Freezing lists nodes in no fixed order; sorted (and model.json's keys sorted), the same
    # run gives the same files, which a reader can diff.
    graph_def.node.sort(key=lambda n: n.name)
    weights = extract_weights(graph_def)
    data = b"".join(np.ascontiguousarray(v).tobytes() for _, v in weights)  # little-endian, as TF.js reads
    signature = {"inputs": _tensor_infos(model.input_names, frozen.inputs),
                 "outputs": _tensor_infos(model.output_names, frozen.outputs)}
    model_json = {
        "format": "graph-model",
        "generatedBy": tf.__version__,
        "convertedBy": f"tfchargen {__version__} (tfchargen.portable.tfjs)",
        "modelTopology": json_format.MessageToDict(graph_def),
        "weightsManifest": [{
            "paths": [WEIGHTS_FILE],
            "weights": [{"name": name, "shape": list(v.shape), "dtype": _WEIGHT_DTYPES[v.dtype]}
                        for name, v in weights],
        }],
        "signature": signature,
    }
    if len(data) > SHARD_BYTES:
        raise ValueError(f"weights of {len(data)} bytes exceed one shard ({SHARD_BYTES}); shard them")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    with files.atomic_path(os.path.join(out_dir, WEIGHTS_FILE)) as tmp, open(tmp, "wb") as f:
        f.write(data)
    files.atomic_write_text(os.path.join(out_dir, MODEL_FILE), json.dumps(model_json, sort_keys=True))
    manifest_lib.write(out_dir, manifest)
    return manifest


def export(run_dir, out_dir, log=print) -> str:
    """``tfchargen export --format tfjs``: writes the TF.js export of a trained run into
    ``out_dir`` (model.json, its weights, then manifest.json: a folder with a manifest
    holds a whole model); returns ``out_dir``."""
    from tfchargen.portable import numeric

    model = numeric.load(run_dir)
    write(out_dir, model, manifest_lib.build(model, "tfjs"))
    log(f"exported {out_dir} (TensorFlow.js graph model, {_model_bytes(out_dir)} bytes; "
        f"run it with `node export/js/generate.mjs {out_dir} --prompt ...`)")
    return str(out_dir)


def _model_bytes(out_dir) -> int:
    return sum(os.path.getsize(os.path.join(out_dir, name)) for name in (MODEL_FILE, WEIGHTS_FILE))
