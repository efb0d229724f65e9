"""A stream's state as one opaque string per row (``state_bytes``), and the model fingerprint.

    start(prompt, controls) -> chunk + state_bytes
    continue(state_bytes, controls) -> next chunk + state_bytes

A row's state is what the decoding loop carries from one character to the next: the
next-character logits [V], the RNN states [layers x states per cell x units], the number
of characters the stream has generated (the seeded noise's step counter) and whether it
ended with <eos>. Servers keep nothing: the client passes each row's state back as returned.

Layout: a serialized ``tensorflow.TensorProto`` written by the core op EncodeProto,

    float_val (packed fixed32): logits, then each RNN state in the stepper's order
    double_val (packed fixed64): magic, format version, model fingerprint, position, ended

so every state of a model has the same length and the same framing bytes. Decoding checks
the length and the framing, then reads the two packed arrays with DecodeRaw (protobuf's
fixed-width values are little-endian): any bytes of the right length decode, and the
checks after that (magic, version, fingerprint, ranges, finiteness) refuse everything a
model did not write, with the messages of contract.py.
"""

from __future__ import annotations

import hashlib

import numpy as np
import tensorflow as tf

from tfchargen import contract
from tfchargen.model.charrnn import STATES_PER_CELL

HEADER = ("magic", "version", "fingerprint", "position", "ended")


def fingerprint(rnn, vocab) -> int:
    """A 32-bit digest of the vocabulary, the architecture and every weight (shape and value).

    Baked into an export as a constant: a state from another export, another version or
    another model is refused even when it has the same size.

    >>> fingerprint(rnn, vocab)  # doctest: +SKIP
    2870112399
    """
    h = hashlib.sha256()
    h.update("\n".join(vocab.chars).encode("utf-8"))
    h.update(f"|{rnn.cell}|{rnn.layers}|{rnn.units}|".encode())
    for w in rnn.model.weights:
        with tf.init_scope():  # the values, also while a signature is being traced
            value = np.asarray(w.numpy(), dtype=np.float32)
        h.update(f"{w.path}{value.shape}".encode())
        h.update(value.tobytes())
    return int.from_bytes(h.digest()[:4], "little")


class StateCodec:
    """Encodes and checks one model's stream states.

    Args:
        vocab_size: V, the length of the logits.
        num_states: RNN state tensors (layers x states per cell).
        units: the width of each state.
        model_fingerprint: :func:`fingerprint` of the model.

    Example:
    >>> codec = StateCodec.for_model(rnn, vocab)                          # doctest: +SKIP
    >>> s = codec.encode(position, ended, logits, states)  # [B] strings  # doctest: +SKIP
    >>> checks, (position, ended, logits, states) = codec.decode(s)       # doctest: +SKIP
    """

    def __init__(self, vocab_size: int, num_states: int, units: int, model_fingerprint: int):
        from tensorflow.core.framework import tensor_pb2

        self.vocab_size, self.num_states, self.units = vocab_size, num_states, units
        self.fingerprint = model_fingerprint
        self.floats = vocab_size + num_states * units
        # The framing a model's states share: a TensorProto of F zeros and len(HEADER) zeros
        # has the bytes of every state except the values themselves.
        zeros = tensor_pb2.TensorProto(float_val=[0.0] * self.floats, double_val=[0.0] * len(HEADER))
        blob = zeros.SerializeToString()
        self.size = len(blob)
        self._floats_at = blob.index(b"\x00" * 4 * self.floats)  # first zero byte after float_val's framing
        self._doubles_at = self.size - 8 * len(HEADER)
        self._framing = (blob[:self._floats_at], blob[self._floats_at + 4 * self.floats:self._doubles_at])

    @classmethod
    def for_model(cls, rnn, vocab) -> "StateCodec":
        return cls(vocab.size, STATES_PER_CELL[rnn.cell] * rnn.layers, rnn.units, fingerprint(rnn, vocab))

    def encode(self, position, ended, logits, states):
        """[B] positions, [B] ended, logits [B, V], states [B, units] each -> [B] strings."""
        batch = tf.shape(logits)[0]
        const = lambda v: tf.fill([batch], tf.constant(v, tf.float64))  # noqa: E731
        header = tf.stack([const(contract.STATE_MAGIC), const(contract.STATE_FORMAT_VERSION),
                           const(self.fingerprint), tf.cast(position, tf.float64),
                           tf.cast(ended, tf.float64)], axis=1)
        # A model may push a logit past the bound (e.g. a bias of -1e9 that rules a character
        # out): clipped, it still underflows to probability 0 in float32, so the next step
        # samples and scores exactly as if it had not been stored.
        logits = tf.clip_by_value(logits, -contract.MAX_STATE_ABS, contract.MAX_STATE_ABS)
        values = tf.concat([logits, *states], axis=1)
        sizes = tf.tile([[self.floats, len(HEADER)]], [batch, 1])
        return tf.io.encode_proto(sizes, [values, header], ["float_val", "double_val"], "tensorflow.TensorProto")

    def decode(self, state):
        """[B] strings -> (checks, (position [B] int32, ended [B] bool, logits [B, V], states)).

        Run anything that uses the decoded values under ``tf.control_dependencies(checks)``:
        a state that fails a check raises InvalidArgument with its contract message.
        """
        size_ok = tf.reduce_all(tf.strings.length(state) == self.size)
        size_check = tf.debugging.Assert(size_ok, [contract.MSG_STATE_SIZE])
        with tf.control_dependencies([size_check]):
            state = tf.identity(state)
        head, middle = self._framing
        f_at, d_at = self._floats_at, self._doubles_at
        framed = ((tf.strings.substr(state, 0, f_at) == head)
                  & (tf.strings.substr(state, f_at + 4 * self.floats, d_at - f_at - 4 * self.floats) == middle))
        values = tf.reshape(tf.io.decode_raw(tf.strings.substr(state, f_at, 4 * self.floats), tf.float32,
                                             little_endian=True), [-1, self.floats])
        header = tf.reshape(tf.io.decode_raw(tf.strings.substr(state, d_at, 8 * len(HEADER)), tf.float64,
                                             little_endian=True), [-1, len(HEADER)])
        magic, version, model, position, ended = tf.unstack(header, len(HEADER), axis=1)
        in_range = ((position >= 0) & (position <= contract.MAX_STREAM_CHARS) & (tf.floor(position) == position)
                    & ((ended == 0) | (ended == 1))
                    & tf.reduce_all(tf.abs(values) <= contract.MAX_STATE_ABS, axis=1))  # NaN fails too
        rules = [
            (~tf.reduce_all(framed & (magic == contract.STATE_MAGIC)
                            & (version == contract.STATE_FORMAT_VERSION)), contract.MSG_STATE_FORMAT),
            (~tf.reduce_all(model == self.fingerprint), contract.MSG_STATE_MODEL),
            (~tf.reduce_all(in_range), contract.MSG_STATE_VALUES),
        ]
        failed = tf.stack([f for f, _ in rules])
        first = tf.argmax(tf.cast(failed, tf.int32), output_type=tf.int32)
        message = tf.gather(tf.constant([m for _, m in rules]), first)
        checks = [size_check, tf.debugging.Assert(~tf.reduce_any(failed), [message])]
        with tf.control_dependencies(checks):
            position = tf.cast(tf.where(in_range, position, 0.0), tf.int32)  # never casts NaN
            ended = ended == 1
            values = tf.identity(values)
        logits = values[:, :self.vocab_size]
        states = tf.split(values[:, self.vocab_size:], self.num_states, axis=1) if self.num_states else []
        return checks, (position, ended, logits, list(states))
