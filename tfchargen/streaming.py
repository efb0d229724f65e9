"""Streaming text through stateless servers: ``start``, then ``continue`` until done.

    chunks(predict, prompts, max_length=5000, chunk=32, ...)   one dict of [B] outputs per chunk
    local_predict(loaded)                                       a predict() over a loaded SavedModel
    cli_stream(args)                                            `tfchargen generate --stream`

``predict(signature, inputs)`` is any function that runs one signature on [B] inputs and
returns numpy outputs: a local SavedModel's (:func:`local_predict`) or a TF Serving client's
``predict`` (client.py's ``stream`` uses this where the server has no ``:stream``;
``tfchargen serve``'s ``:stream`` runs it over its own signatures). The server keeps nothing
between chunks: each row's ``state_bytes`` comes back with its chunk and goes out with the
next request, so a retried request (after UNAVAILABLE) returns the same chunk again and never repeats text.
Streams are not bound by one call's MAX_NEW_CHARS: each chunk is.
"""

from __future__ import annotations

import sys

import numpy as np

from . import contract

DEFAULT_CHUNK = 32


def _rows(value, n, name):
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != n:
            raise ValueError(f"{name} must have one value per prompt")
        return list(value)
    return [value] * n


def chunks(predict, prompts, max_length=None, chunk=DEFAULT_CHUNK, temperature=None, top_k=None,
           top_p=None, seed=None):
    """Yields each chunk's outputs (dict of [B] numpy arrays, as ``start`` returns them) until
    every row has ``max_length`` new characters (any number; a scalar or one per prompt) or
    ended with <eos>. The first chunk's ``text`` starts with the (normalized) prompt; later
    chunks' ``text`` is their continuation.

    Example:
    >>> for out in chunks(local_predict(loaded), [b"Today "], max_length=3000, seed=7):  # doctest: +SKIP
    ...     print(out["continuation"][0].decode(), end="", flush=True)
    """
    if not 1 <= chunk <= contract.MAX_NEW_CHARS:
        raise ValueError(f"chunk must be in 1..{contract.MAX_NEW_CHARS}, got {chunk}")
    n = len(prompts)
    given = dict(max_length=max_length, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    c = {k: _rows(contract.SERVING_DEFAULTS[k] if v is None else v, n, k) for k, v in given.items()}
    left = np.asarray(c.pop("max_length"), dtype=np.int64)
    if (left < 0).any():
        raise ValueError(contract.MSG_MAX_LENGTH_LOW)
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


def local_predict(loaded):
    """predict(signature, inputs) over a SavedModel loaded with tf.saved_model.load."""
    import tensorflow as tf

    def predict(signature, inputs):
        types = contract.SIGNATURES[signature][0]
        args = {k: tf.constant(np.asarray(v, dtype=object if types[k] == "string" else tf.as_dtype(types[k])
                                          .as_numpy_dtype), tf.as_dtype(types[k])) for k, v in inputs.items()}
        return {k: v.numpy() for k, v in loaded.signatures[signature](**args).items()}

    return predict


def cli_stream(args) -> int:
    """`tfchargen generate --stream`: prints one prompt's text chunk by chunk as it arrives,
    from a local SavedModel (--model) or a TF Serving server (--server)."""
    prompts = args.prompt or ["Today "]
    if len(prompts) > 1 or args.num_samples > 1 or args.temperatures or args.json:
        print("tfchargen generate: error: --stream prints one text: give one --prompt, without "
              "--num-samples, --temperatures or --json", file=sys.stderr)
        return 2
    error = contract.control_error(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if error is None and args.max_length < 0:
        error = contract.MSG_MAX_LENGTH_LOW
    if error is None and not 1 <= args.chunk <= contract.MAX_NEW_CHARS:
        error = f"--chunk must be in 1..{contract.MAX_NEW_CHARS}"
    if error:
        print(f"tfchargen generate: error: {error}", file=sys.stderr)
        return 2
    from .seeds import row_seed

    # The one row is row 0 of `generate`'s rule, so --stream prints what generate prints.
    prompt, seed = prompts[0].encode("utf-8"), row_seed(args.seed, 0)
    if args.server:
        from .cli import failed_check
        from .client import ServingError, connect

        try:  # a client's stream(): REST uses the server's :stream where it has one
            with connect(args.server, args.model_name, args.protocol, version=args.version,
                         timeout=args.timeout) as client:
                _print(client.stream(prompt, args.max_length, args.chunk, args.temperature, args.top_k,
                                     args.top_p, seed))
        except ServingError as e:
            check = failed_check(str(e))
            line = str(e).splitlines()[0].strip() + (f" {check}" if check else "")
            print(f"\ntfchargen generate: error: {line}", file=sys.stderr)
            return 2
    else:
        from .cli import load_savedmodel

        loaded, _ = load_savedmodel(args.model, args.version)
        _print(out["text"][0].decode("utf-8") for out in chunks(
            local_predict(loaded), [prompt], args.max_length, args.chunk, args.temperature, args.top_k,
            args.top_p, seed))
    return 0


def _print(texts) -> None:
    for text in texts:
        sys.stdout.write(text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
