"""``POST ...:stream`` (ours, not TF Serving's): a ``generate`` request answered as
server-sent events, chunk by chunk, through the model's ``start``/``continue`` signatures
(:func:`tfchargen.generation.streaming.chunks`)."""

from __future__ import annotations

import json

import numpy as np

from tfchargen import contract
from tfchargen.serving.errors import ServerError
from tfchargen.serving.json_request import request_tensors
from tfchargen.serving.servable import check_inputs


def stream_request(doc: dict, dtypes: dict) -> tuple[dict, int]:
    """A ``:stream`` body -> (``generate``'s inputs as [B] arrays, chunk size).

    The body is a ``generate`` ``:predict`` body (``instances`` or ``inputs``;
    ``signature_name``, if given, must be ``generate``) plus an optional top-level ``"chunk"``
    (new characters per event, default contract.DEFAULT_CHUNK). ``max_length`` may exceed
    MAX_NEW_CHARS: only each chunk is bound by it.

    >>> import tensorflow as tf
    >>> dtypes = {k: tf.as_dtype(v) for k, v in contract.GENERATE_INPUTS.items()}
    >>> row = dict(prompt="Today ", max_length=3000, temperature=0.8, top_k=0, top_p=1.0, seed=7)
    >>> inputs, chunk = stream_request({"instances": [row], "chunk": 64}, dtypes)
    >>> inputs["max_length"].tolist(), chunk
    ([3000], 64)
    """
    doc = dict(doc)
    signature_name = doc.pop("signature_name", "generate")
    if signature_name not in ("generate", ""):
        raise ServerError("INVALID_ARGUMENT", f":stream runs the generate signature (start/continue), "
                          f"not {str(signature_name)[:100]!r}")
    chunk = doc.pop("chunk", contract.DEFAULT_CHUNK)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= contract.MAX_NEW_CHARS:
        raise ServerError("INVALID_ARGUMENT", f"'chunk' must be an integer in 1..{contract.MAX_NEW_CHARS}, "
                          f"got {json.dumps(chunk)[:100]}")
    tensors, _ = request_tensors(doc, dtypes)
    # The graph's checks, on max_length as the first chunk asks for it.
    first = dict(tensors)
    length = first.get("max_length")
    if isinstance(length, np.ndarray) and length.ndim == 1 and length.dtype == np.int32:
        first["max_length"] = np.minimum(length, contract.MAX_NEW_CHARS).astype(np.int32)
    if not len(check_inputs(first, dtypes)["prompt"]):
        raise ServerError("INVALID_ARGUMENT", "no rows to stream")
    return tensors, chunk


def as_signature_arrays(inputs: dict, dtypes: dict) -> dict:
    """streaming.chunks' inputs (lists or arrays) as numpy arrays of the signature's dtypes."""
    out = {}
    for k, v in inputs.items():
        if dtypes[k].name == "string":
            arr = np.empty(len(v), object)
            arr[:] = list(v)
            out[k] = arr
        else:
            out[k] = np.asarray(v, dtype=dtypes[k].as_numpy_dtype)
    return out


def sse_event(data: dict, event: str | None = None) -> bytes:
    """One server-sent event: ``event: NAME`` (optional), ``data: JSON``, a blank line.

    >>> sse_event({"index": 0, "num_chars": 3}, "done")
    b'event: done\\ndata: {"index": 0, "num_chars": 3}\\n\\n'
    """
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode("utf-8")


def sse_events(predict, inputs: dict, chunk: int):
    """The events of one ``:stream`` request: per chunk, one ``data`` event per row that
    produced text, ``{"index", "text", "continuation", "num_chars"}`` (the first chunk's
    ``text`` starts with the row's normalized prompt, so the ``text`` fields concatenated are
    ``generate``'s ``text``); then one ``event: done`` per row with its totals,
    ``{"index", "num_chars", "ended_with_eos", "log_prob"}``. Chunks come from
    :func:`tfchargen.generation.streaming.chunks` over ``predict(signature, inputs)``.
    """
    from tfchargen.generation.streaming import chunks

    n = len(inputs["prompt"])
    controls = contract.Controls(**{k: inputs[k] for k in contract.CONTROLS})
    total = np.zeros(n, np.int64)
    log_prob = np.zeros(n, np.float64)
    ended = np.zeros(n, bool)
    for i, out in enumerate(chunks(predict, list(inputs["prompt"]), controls, chunk)):
        total += out["num_chars"]
        log_prob += out["log_prob"]
        ended |= out["ended_with_eos"]
        for row in range(n):
            if out["num_chars"][row] or (i == 0 and out["text"][row]):
                yield sse_event({"index": row, "text": out["text"][row].decode("utf-8", "replace"),
                                 "continuation": out["continuation"][row].decode("utf-8", "replace"),
                                 "num_chars": int(out["num_chars"][row])})
    for row in range(n):
        yield sse_event({"index": row, "num_chars": int(total[row]), "ended_with_eos": bool(ended[row]),
                         "log_prob": float(np.float32(log_prob[row]))}, "done")
