"""Calling a loaded SavedModel's signatures with plain Python or numpy inputs.

    call(loaded, "generate", {"prompt": ["Today "], "max_length": [20], ...})   -> {name: np.ndarray}
    local_predict(loaded)                        -> predict(signature, inputs), for streaming.chunks

Each input becomes a tensor of the dtype the signature itself declares (a model's own
signatures, not a table that could disagree with them); outputs come back as numpy arrays,
string tensors as ``bytes`` objects, like a TF Serving client's.
"""

from __future__ import annotations

import numpy as np


def typed_inputs(signature, inputs: dict) -> dict:
    """``inputs`` ({name: list or array}) as tensors of the dtypes ``signature`` (a loaded
    signature: ``loaded.signatures[name]``) declares, converted as ``tf.constant`` does."""
    import tensorflow as tf

    specs = signature.structured_input_signature[1]
    return {name: tf.constant(value, specs[name].dtype) for name, value in inputs.items()}


def call(loaded, signature_name: str, inputs: dict) -> dict[str, np.ndarray]:
    """Runs one signature of ``loaded`` (``tf.saved_model.load``'s result) on ``inputs``
    ({name: list or numpy array}, batched on dimension 0); -> {output name: numpy array}.
    A graph check that fails raises tf.errors.InvalidArgumentError."""
    signature = loaded.signatures[signature_name]
    return {k: v.numpy() for k, v in signature(**typed_inputs(signature, inputs)).items()}


def local_predict(loaded):
    """predict(signature, inputs) over a loaded SavedModel: streaming.chunks' ``predict``."""
    return lambda signature_name, inputs: call(loaded, signature_name, inputs)
