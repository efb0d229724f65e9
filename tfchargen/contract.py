"""The SavedModel's contract, written once: signatures, their inputs and outputs, serving
defaults, limits and the messages of the graph's input checks.

Plain Python (no TensorFlow import), so the CLI can check a request before it loads a model
and so the clients, the warmup file, the fuzzer and the servers all read the same facts.
Dtypes are TensorFlow's names (``tf.as_dtype(name)`` turns one into a DType).
"""

from __future__ import annotations

import dataclasses
import math

MAX_NEW_CHARS = 2048  # per-row cap on max_length; larger values are InvalidArgument
MAX_PROMPT_CHARS = 4096  # longer prompts keep their last MAX_PROMPT_CHARS characters
MAX_STREAM_CHARS = 2**30  # a stream (start + continue) ends at this many new characters

# The controls of `generate`, in signature order, with the defaults `serving_default` bakes in
# (`tfchargen export --default-*` changes them) and that the CLI and the C and Go clients use.
SERVING_DEFAULTS = dict(max_length=100, temperature=0.8, top_k=0, top_p=1.0, seed=0)
CONTROLS = tuple(SERVING_DEFAULTS)
DEFAULT_CHUNK = 32  # new characters per chunk of a stream (start, then continue)

GENERATE_INPUTS = {"prompt": "string", "max_length": "int32", "temperature": "float32",
                   "top_k": "int32", "top_p": "float32", "seed": "int64"}
GENERATE_OUTPUTS = {"text": "string", "continuation": "string", "num_chars": "int32",
                    "ended_with_eos": "bool", "log_prob": "float32"}
SCORE_INPUTS = {"text": "string"}
SCORE_OUTPUTS = {"nats_per_char": "float32", "log_prob": "float32", "num_chars": "int32"}

# Streaming: `start` takes generate's inputs and returns its outputs plus the row's state;
# `continue` takes a state and the controls of the next chunk. The state is one opaque string
# per row; its name ends in `_bytes` so TF Serving's REST API sends it as {"b64": ...}.
STATE = "state_bytes"
START_INPUTS = GENERATE_INPUTS
START_OUTPUTS = {**GENERATE_OUTPUTS, STATE: "string"}
CONTINUE_INPUTS = {STATE: "string", **{k: v for k, v in GENERATE_INPUTS.items() if k != "prompt"}}
CONTINUE_OUTPUTS = START_OUTPUTS  # `text` is the chunk's continuation (there is no prompt)

# signature name -> (inputs, outputs); every tensor is a vector batched on dimension 0.
SIGNATURES = {
    "serving_default": ({"prompt": "string"}, GENERATE_OUTPUTS),
    "generate": (GENERATE_INPUTS, GENERATE_OUTPUTS),
    "score": (SCORE_INPUTS, SCORE_OUTPUTS),
    "start": (START_INPUTS, START_OUTPUTS),
    "continue": (CONTINUE_INPUTS, CONTINUE_OUTPUTS),
}

# The graph's input checks (generate.validate_controls), in the order they are tested;
# the first that fails is the InvalidArgument's message.
MSG_ONE_PER_PROMPT = "{name} must have one value per prompt"
MSG_MAX_LENGTH_LOW = "max_length must be >= 0"
MSG_MAX_LENGTH_HIGH = f"max_length must be <= {MAX_NEW_CHARS}"
MSG_TEMPERATURE = "temperature must be finite and >= 0 (0 = greedy)"
MSG_TOP_K = "top_k must be >= 0 (0 = off)"
MSG_TOP_P = "top_p must be in (0, 1] (1 = off)"

# The checks of a `continue` call's state_bytes (state.StateCodec.decode), in order. Every
# state a model returns passes them; anything else (another model's state, a cut or edited
# one) is refused with the first that fails.
STATE_MAGIC = 0x54434753  # "TCGS": a tfchargen stream state
STATE_FORMAT_VERSION = 1
MAX_STATE_ABS = 1e6  # a state's logits and RNN states must lie in [-MAX_STATE_ABS, MAX_STATE_ABS]
MSG_STATE_SIZE = ("state_bytes: not a stream state of this model (wrong size: a state from another "
                  "model, or cut short); pass state_bytes back exactly as returned")
MSG_STATE_FORMAT = "state_bytes: not a tfchargen stream state (bad header or encoding)"
MSG_STATE_MODEL = ("state_bytes: a stream state of another model (its fingerprint differs: another "
                   "export or version); start the stream again")
MSG_STATE_VALUES = ("state_bytes: damaged stream state (position, flags or values out of range, "
                    "NaN or inf)")


CONTROL_DTYPES = {name: GENERATE_INPUTS[name] for name in CONTROLS}


def control_error(max_length=None, temperature=None, top_k=None, top_p=None, seed=None) -> str | None:
    """The message the graph would raise for these scalar controls, or None if they are valid.

    The one check of controls in Python: it lets a caller refuse a bad value before it loads
    a model or sends a request. ``seed`` takes any int64 (0 = unseeded).

    >>> control_error(max_length=5000)
    'max_length must be <= 2048'
    >>> control_error(temperature=0.5, top_p=1.0) is None
    True
    """
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


@dataclasses.dataclass(frozen=True)
class Controls:
    """The sampling controls of ``generate``, ``start`` and ``continue``, passed whole.

    Each field is a scalar (the same for every row) or a sequence with one value per prompt;
    None takes the serving default (``SERVING_DEFAULTS``). Names, order and dtypes are the
    signatures' (``CONTROLS``, ``CONTROL_DTYPES``).

    Args:
      max_length: new characters per row, 0..MAX_NEW_CHARS (a stream's total may exceed it).
      temperature: finite, >= 0; 0 = greedy.
      top_k: >= 0; keep the k likeliest characters, 0 = off.
      top_p: in (0, 1]; nucleus sampling, 1 = off.
      seed: any int64; 0 = unseeded, else the row's draws are a function of it alone.

    >>> c = Controls(temperature=0, seed=[1, 2])
    >>> c.rows(2)["seed"], c.rows(2)["max_length"]
    ([1, 2], [100, 100])
    >>> Controls(top_p=[1.0, 0.0]).error()
    'top_p must be in (0, 1] (1 = off)'
    >>> Controls(seed=[1, 2, 3]).rows(2)
    Traceback (most recent call last):
    ...
    ValueError: seed must have one value per prompt
    """

    max_length: object = None
    temperature: object = None
    top_k: object = None
    top_p: object = None
    seed: object = None

    def given(self) -> dict:
        """{name: value} of the controls set (not None), in signature order."""
        return {k: v for k, v in self.items() if v is not None}

    def items(self):
        return ((name, getattr(self, name)) for name in CONTROLS)

    def resolved(self) -> dict:
        """{name: value} with the serving defaults for the controls not set."""
        return {k: SERVING_DEFAULTS[k] if v is None else v for k, v in self.items()}

    def problem(self, stream: bool = False) -> tuple[str, str] | None:
        """(name, the contract's message) of the first value out of range, every row checked
        in signature order, or None. ``stream``: max_length bounds a whole stream, so only
        its sign is checked.

        >>> Controls(max_length=-1, top_k=-1).problem()
        ('max_length', 'max_length must be >= 0')
        >>> Controls(max_length=5000).problem(stream=True) is None
        True
        """
        for name, value in self.given().items():
            for v in _values(value):
                if stream and name == "max_length":
                    v = min(v, MAX_NEW_CHARS)
                msg = control_error(**{name: v})
                if msg:
                    return name, msg
        return None

    def error(self, stream: bool = False) -> str | None:
        """The message of :meth:`problem`, or None."""
        found = self.problem(stream)
        return found[1] if found else None

    def check(self, stream: bool = False) -> "Controls":
        """Raises ValueError with the contract's message for a value out of range."""
        msg = self.error(stream)
        if msg:
            raise ValueError(msg)
        return self

    def rows(self, n: int, strict: bool = True) -> dict:
        """{name: [n values]}: scalars repeated, defaults filled in; a sequence whose length
        is not n raises ValueError (MSG_ONE_PER_PROMPT), or with ``strict=False`` is passed
        on as it is (for a server to refuse with its own error)."""
        out = {}
        for name, value in self.resolved().items():
            if strict and _is_sequence(value) and len(value) != n:
                raise ValueError(MSG_ONE_PER_PROMPT.format(name=name))
            out[name] = list(value) if _is_sequence(value) else [value] * n
        return out

    def replace(self, **changes) -> "Controls":
        return dataclasses.replace(self, **changes)


def _is_sequence(value) -> bool:
    """A list, tuple or numpy array of one value per row (not a scalar, not a 0-d array)."""
    return isinstance(value, (list, tuple)) or getattr(value, "ndim", 0) > 0


def _values(value) -> list:
    """A control's values: a scalar as one value."""
    return list(value) if _is_sequence(value) else [value]
