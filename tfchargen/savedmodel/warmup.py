"""SavedModel warmup for TF Serving: ``<version>/assets.extra/tf_serving_warmup_requests``.

TF Serving replays these requests when it loads a version (``--enable_model_warmup``, on by
default), before the version is marked AVAILABLE, so the first real request does not pay for
lazy initialization (graph optimization, the lookup tables, XLA compilation of --xla exports).
The file is a TFRecord of ``tensorflow_serving.apis.PredictionLog`` with ``predict_log.request``
set (a ``PredictRequest``); at most 1000 records; it should be representative of real traffic.

We write one request per signature (serving_default, generate, score, start, continue) and
per batch size (1 and 8 by default: a lone request and a small batched one, the sizes a
batching server forms most). TF Serving replays a record as it is, so `continue`'s states
must be valid for this very model: the export passes its `start` function, which makes them
(without it, `continue` gets no record). :func:`read_warmup` reads the file back (tests
replay it through the SavedModel).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfchargen import contract

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's documented limit
DEFAULT_BATCH_SIZES = (1, 8)

_PROMPTS = ["Today ", "On Sunday ", "Stocks rise as oil falls", "", "Microsoft to buy ",
            "Red Sox win ", "U.S. economy ", "Oil prices "]

# input name -> its value for row i, for every input of every signature (contract.SIGNATURES).
_VALUES = {
    "prompt": lambda i: _PROMPTS[i % len(_PROMPTS)].encode("utf-8"),
    "text": lambda i: _PROMPTS[i % len(_PROMPTS)].encode("utf-8"),
    "max_length": lambda i: 32,
    "temperature": lambda i: [0.0, 0.8, 1.0][i % 3],
    "top_k": lambda i: [0, 0, 40][i % 3],
    "top_p": lambda i: [1.0, 0.95, 1.0][i % 3],
    "seed": lambda i: i + 1,
}


def warmup_inputs(signature: str, batch_size: int, start=None) -> dict[str, np.ndarray]:
    """Representative inputs (numpy, batched on dimension 0) for one signature; ``continue``
    needs ``start``, the model's start function (its states continue the same rows)."""
    if signature == "continue":
        if start is None:
            raise ValueError("warmup inputs of continue need the model's start function")
        first = warmup_inputs("generate", batch_size)
        state = start(**{k: tf.constant(v) for k, v in first.items()})[contract.STATE].numpy()
        return {contract.STATE: state, **{k: v for k, v in first.items() if k != "prompt"}}
    if signature not in contract.SIGNATURES:
        raise ValueError(f"no warmup inputs for signature {signature!r}")
    inputs = contract.SIGNATURES[signature][0]
    return {name: np.array([_VALUES[name](i) for i in range(batch_size)], dtype=tf.as_dtype(dtype).as_numpy_dtype)
            for name, dtype in inputs.items()}


def warmup_requests(model_name: str = "chargen", batch_sizes=DEFAULT_BATCH_SIZES,
                    signatures=tuple(contract.SIGNATURES), start=None):
    """The PredictionLog records, one per (signature, batch size); ``continue`` only with
    ``start`` (see warmup_inputs)."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    logs = []
    for signature in signatures:
        if signature == "continue" and start is None:
            continue
        for batch in batch_sizes:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            for name, value in warmup_inputs(signature, batch, start).items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            logs.append(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)))
    if len(logs) > MAX_RECORDS:
        raise ValueError(f"{len(logs)} warmup records; TF Serving reads at most {MAX_RECORDS}")
    return logs


def write_warmup(version_dir: str, model_name: str = "chargen", batch_sizes=DEFAULT_BATCH_SIZES,
                 start=None) -> str:
    """Writes the warmup file into a SavedModel directory; returns its path. ``start``: the
    model's start function, for `continue`'s records."""
    os.makedirs(os.path.join(version_dir, WARMUP_DIR), exist_ok=True)
    path = os.path.join(version_dir, WARMUP_DIR, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests(model_name, batch_sizes, start=start):
            writer.write(log.SerializeToString())
    return path


def read_warmup(path: str):
    """The PredictionLog records of a warmup file (or of a SavedModel directory's)."""
    from tensorflow_serving.apis import prediction_log_pb2

    if os.path.isdir(path):
        path = os.path.join(path, WARMUP_DIR, WARMUP_FILE)
    logs = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs
