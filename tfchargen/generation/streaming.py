"""Streaming text through stateless servers: ``start``, then ``continue`` until done.

    chunks(predict, prompts, Controls(max_length=5000), chunk=32)   one dict of [B] outputs per chunk

``predict(signature, inputs)`` is any function that runs one signature on [B] inputs and
returns numpy outputs: a local SavedModel's (tfchargen.savedmodel.call.local_predict) or a
TF Serving client's ``predict`` (client.py's ``stream`` uses this where the server has no
``:stream``; ``tfchargen serve``'s ``:stream`` runs it over its own signatures). The server
keeps nothing between chunks: each row's ``state_bytes`` comes back with its chunk and goes
out with the next request, so a retried request (after UNAVAILABLE) returns the same chunk
again and never repeats text. Streams are not bound by one call's MAX_NEW_CHARS: each chunk is.
"""

from __future__ import annotations

import numpy as np

from tfchargen import contract
from tfchargen.contract import DEFAULT_CHUNK, Controls


def chunks(predict, prompts, controls: Controls = Controls(), chunk: int = DEFAULT_CHUNK):
    """Yields each chunk's outputs (dict of [B] numpy arrays, as ``start`` returns them) until
    every row has ``controls.max_length`` new characters (any number; a scalar or one per
    prompt) or ended with <eos>. The first chunk's ``text`` starts with the (normalized)
    prompt; later chunks' ``text`` is their continuation.

    Example:
    >>> for out in chunks(local_predict(loaded), [b"Today "], Controls(max_length=3000, seed=7)):  # doctest: +SKIP
    ...     print(out["continuation"][0].decode(), end="", flush=True)
    """
    if not 1 <= chunk <= contract.MAX_NEW_CHARS:
        raise ValueError(f"chunk must be in 1..{contract.MAX_NEW_CHARS}, got {chunk}")
    n = len(prompts)
    c = controls.rows(n)
    left = np.asarray(c.pop("max_length"), dtype=np.int64)
    # Only the length's sign: the other controls are the signature's to check, in its words.
    Controls(max_length=left).check(stream=True)
    if n == 0:
        return
    size = np.minimum(left, chunk).astype(np.int32)
    out = predict("start", {"prompt": list(prompts), "max_length": size, **c})
    yield out
    while True:
        left -= out["num_chars"]
        # A row is done at its length, at <eos>, or when a chunk it asked for came back empty
        # (the stream's end, contract.MAX_STREAM_CHARS).
        done = (left <= 0) | out["ended_with_eos"] | ((size > 0) & (out["num_chars"] == 0))
        if done.all():
            return
        size = np.where(done, 0, np.minimum(left, chunk)).astype(np.int32)
        out = predict("continue", {contract.STATE: out[contract.STATE], "max_length": size, **c})
        yield out
