"""The SavedModel's contract, written once: signatures, their inputs and outputs, serving
defaults, limits and the messages of the graph's input checks.

Plain Python (no TensorFlow import), so the CLI can check a request before it loads a model
and so the clients, the warmup file, the fuzzer and the servers all read the same facts.
Dtypes are TensorFlow's names (``tf.as_dtype(name)`` turns one into a DType).
"""

from __future__ import annotations

MAX_NEW_CHARS = 2048  # per-row cap on max_length; larger values are InvalidArgument
MAX_PROMPT_CHARS = 4096  # longer prompts keep their last MAX_PROMPT_CHARS characters

# The controls of `generate`, in signature order, with the defaults `serving_default` bakes in
# (`tfchargen export --default-*` changes them) and that the CLI and the C and Go clients use.
SERVING_DEFAULTS = dict(max_length=100, temperature=0.8, top_k=0, top_p=1.0, seed=0)
CONTROLS = tuple(SERVING_DEFAULTS)

GENERATE_INPUTS = {"prompt": "string", "max_length": "int32", "temperature": "float32",
                   "top_k": "int32", "top_p": "float32", "seed": "int64"}
GENERATE_OUTPUTS = {"text": "string", "continuation": "string", "num_chars": "int32",
                    "ended_with_eos": "bool", "log_prob": "float32"}
SCORE_INPUTS = {"text": "string"}
SCORE_OUTPUTS = {"nats_per_char": "float32", "log_prob": "float32", "num_chars": "int32"}

# signature name -> (inputs, outputs); every tensor is a vector batched on dimension 0.
SIGNATURES = {
    "serving_default": ({"prompt": "string"}, GENERATE_OUTPUTS),
    "generate": (GENERATE_INPUTS, GENERATE_OUTPUTS),
    "score": (SCORE_INPUTS, SCORE_OUTPUTS),
}

# The graph's input checks (generate.validate_controls), in the order they are tested;
# the first that fails is the InvalidArgument's message.
MSG_ONE_PER_PROMPT = "{name} must have one value per prompt"
MSG_MAX_LENGTH_LOW = "max_length must be >= 0"
MSG_MAX_LENGTH_HIGH = f"max_length must be <= {MAX_NEW_CHARS}"
MSG_TEMPERATURE = "temperature must be finite and >= 0 (0 = greedy)"
MSG_TOP_K = "top_k must be >= 0 (0 = off)"
MSG_TOP_P = "top_p must be in (0, 1] (1 = off)"


def control_error(max_length=None, temperature=None, top_k=None, top_p=None) -> str | None:
    """The message the graph would raise for these scalar controls, or None if they are valid.

    Lets a caller refuse a bad value before it loads a model or sends a request.

    >>> control_error(max_length=5000)
    'max_length must be <= 2048'
    >>> control_error(temperature=0.5, top_p=1.0) is None
    True
    """
    import math

    if max_length is not None and max_length < 0:
        return MSG_MAX_LENGTH_LOW
    if max_length is not None and max_length > MAX_NEW_CHARS:
        return MSG_MAX_LENGTH_HIGH
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        return MSG_TEMPERATURE
    if top_k is not None and top_k < 0:
        return MSG_TOP_K
    if top_p is not None and not 0 < top_p <= 1:
        return MSG_TOP_P
    return None
