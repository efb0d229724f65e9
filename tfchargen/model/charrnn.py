"""The numeric model: ids -> logits, built so the same weights also step with carried state.

Defaults reproduce the teaching example: one-hot input, one LSTM(128), Dense(vocab).
Unlike it, padding is really masked: the mask (ids != 0) is handed to every RNN layer,
so padded steps neither change the state nor reach the loss.

Two Keras models share one set of layers:
* ``model``: ids [B, T] -> logits [B, T, V], for training and scoring;
* ``stepper``: (ids [B, T], *states) -> (logits [B, T, V], *states), for generation:
  run it over a prompt, then one character at a time, carrying the states.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf
from keras import layers, ops

from tfchargen.model import fused_lstm

STATES_PER_CELL = {"lstm": 2, "gru": 1, "rnn": 1}
WEIGHT_DROP_NEEDS_FUSED = ("weight_drop needs the fused LSTM kernel (CPU, --fused-lstm auto/on, no "
                           "--recurrent-dropout, default activations)")


@keras.saving.register_keras_serializable(package="tfchargen")
class OneHot(layers.Layer):
    """ids -> one-hot float vectors (the teaching example's input encoding)."""

    def __init__(self, depth, **kwargs):
        super().__init__(**kwargs)
        self.depth = depth

    def call(self, ids):
        return ops.one_hot(ids, self.depth)

    def get_config(self):
        return {**super().get_config(), "depth": self.depth}


@keras.saving.register_keras_serializable(package="tfchargen")
class LSTM(layers.LSTM):
    """keras.layers.LSTM (same weights, same math) that can train with fused_lstm.py.

    Args:
        fused: train with the fused kernel (XLA loops, hand-written backward), which at
            small batches is much faster than Keras' per-op loop on CPU
            (docs/design.md); False = always Keras' path.
        weight_drop: DropConnect on the recurrent kernel while training (AWD-LSTM's
            weight-drop): one mask per batch over the hidden-to-hidden weights, shared by
            every timestep and row. Needs the fused path (the kernel takes the dropped
            matrix as an input); training without it raises.
        one_hot_input: the inputs are exact one-hot vectors (build() sets it for a first
            layer after OneHot), so the fused path gathers kernel rows by id instead of
            multiplying. Not with input dropout, which scales them.

    The fused path runs only when training, on CPU (cuDNN stays in charge on GPU),
    without recurrent dropout and with the default activations; generation, scoring and
    exports always take Keras' path, so SavedModels are unchanged. Input dropout keeps
    Keras' meaning (one mask per sequence, shared by all timesteps). Padding must follow
    each sequence's characters, as pipeline.py builds it (asserted): padded steps then
    only give outputs the loss ignores, and the states are each row's after its last
    real character, as with Keras' masking.
    """

    def __init__(self, units, fused=False, weight_drop=0.0, one_hot_input=False, **kwargs):
        super().__init__(units, **kwargs)
        self.fused, self.weight_drop, self.one_hot_input = fused, weight_drop, one_hot_input

    def get_config(self):
        return {**super().get_config(), "fused": self.fused, "weight_drop": self.weight_drop,
                "one_hot_input": self.one_hot_input}

    def _use_fused(self, training):
        return (self.fused and bool(training) and not self.recurrent_dropout and not self.go_backwards
                and not self.stateful and self.use_bias and self.activation is keras.activations.tanh
                and self.recurrent_activation is keras.activations.sigmoid
                and not tf.config.list_logical_devices("GPU"))

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if not self._use_fused(training):
            if self.weight_drop and training:
                raise ValueError(WEIGHT_DROP_NEEDS_FUSED)
            return super().call(sequences, initial_state=initial_state, mask=mask, training=training)
        batch, steps = tf.shape(sequences)[0], tf.shape(sequences)[1]
        if initial_state is None:
            h0 = c0 = tf.zeros([batch, self.units], sequences.dtype)
        else:
            h0, c0 = initial_state
        lengths = tf.fill([batch], steps)
        if mask is not None:
            lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
            tf.debugging.assert_equal(tf.cast(mask, tf.bool), tf.sequence_mask(lengths, steps),
                                      message="the fused LSTM needs padding after the characters")
        ids = None
        if self.dropout:  # Keras' LSTM input dropout: one mask per sequence, every timestep
            sequences = sequences * tf.nn.dropout(tf.ones_like(sequences[:, 0]), rate=self.dropout)[:, None]
        elif self.one_hot_input:
            ids = tf.argmax(sequences, axis=-1, output_type=tf.int32)
        cell = self.cell
        recurrent = tf.convert_to_tensor(cell.recurrent_kernel)
        if self.weight_drop:
            recurrent = tf.nn.dropout(recurrent, rate=self.weight_drop)
        out, h, c = fused_lstm.lstm(sequences, h0, c0, cell.kernel, recurrent, cell.bias, lengths, ids=ids)
        out = out if self.return_sequences else h
        return (out, h, c) if self.return_state else out


CELLS = {"lstm": LSTM, "gru": layers.GRU, "rnn": layers.SimpleRNN}


@dataclass
class CharRNN:
    model: keras.Model
    stepper: keras.Model
    cell: str
    layers: int
    units: int
    embed: layers.Layer
    rnns: list
    head: layers.Dense

    def zero_states(self, batch_size):
        """Initial states for the stepper: per layer, STATES_PER_CELL [B, units] zeros."""
        n = STATES_PER_CELL[self.cell] * self.layers
        return [ops.zeros((batch_size, self.units)) for _ in range(n)]

    def input_table(self):
        """[V, gates*units]: the first layer's input projection of every id.

        one_hot(id) @ kernel is row ``id`` of the kernel, and embedding(id) @ kernel is row
        ``id`` of embeddings @ kernel: a generation step gathers a row instead of
        multiplying a mostly-zero vector by the whole kernel.
        """
        kernel = self.rnns[0].cell.kernel
        if isinstance(self.embed, OneHot):
            return ops.convert_to_tensor(kernel)
        return ops.matmul(self.embed.embeddings, kernel)

    def step(self, ids, states, table=None):
        """One character per row: ids [B] -> (logits [B, V], new states), through the cells.

        Calls the RNN cells directly (no per-call sequence loop), so a generation loop
        pays only for the matmuls. With ``table`` (from :meth:`input_table`) the first
        layer gathers its input projection. Same weights as ``model`` and ``stepper``.
        """
        new = self.cells_step(ids, states, table)
        return self.head(self.last_output(new)), new

    def last_output(self, states):
        """[B, units]: the last layer's output, the first of its states (h for every cell)."""
        return states[-STATES_PER_CELL[self.cell]]

    def cells_step(self, ids, states, table=None):
        """:meth:`step` without the head: ids [B] -> the new states."""
        k = STATES_PER_CELL[self.cell]
        new = []
        for i, rnn in enumerate(self.rnns):
            own = list(states[i * k:(i + 1) * k])
            if i == 0 and table is not None:
                x, st = _cell_from_projection(rnn.cell, ops.take(table, ids, axis=0), own)
            else:
                x = self.embed(ids) if i == 0 else x
                x, st = rnn.cell(x, own if k > 1 else own[0], training=False)
            new += list(st) if isinstance(st, (list, tuple)) else [st]
        return new


def _cell_from_projection(cell, xw, states):
    """A Keras LSTM/GRU/SimpleRNN cell's step (inference) given inputs @ kernel = ``xw``."""
    h = states[0]
    if isinstance(cell, layers.LSTMCell):
        z = xw + ops.matmul(h, cell.recurrent_kernel)
        if cell.use_bias:
            z = z + cell.bias
        z0, z1, z2, z3 = ops.split(z, 4, axis=-1)
        act, gate = cell.activation, cell.recurrent_activation
        c = gate(z1) * states[1] + gate(z0) * act(z2)
        h = gate(z3) * act(c)
        return h, [h, c]
    if isinstance(cell, layers.GRUCell):
        if not cell.reset_after:
            raise NotImplementedError("input tables need reset_after=True GRUs (the Keras default)")
        inner = ops.matmul(h, cell.recurrent_kernel)
        if cell.use_bias:
            xw, inner = xw + cell.bias[0], inner + cell.bias[1]
        x_z, x_r, x_h = ops.split(xw, 3, axis=-1)
        r_z, r_r, r_h = ops.split(inner, 3, axis=-1)
        z = cell.recurrent_activation(x_z + r_z)
        r = cell.recurrent_activation(x_r + r_r)
        hh = cell.activation(x_h + r * r_h)
        h = z * h + (1 - z) * hh
        return h, [h]
    z = xw + ops.matmul(h, cell.recurrent_kernel)
    if cell.use_bias:
        z = z + cell.bias
    h = cell.activation(z)
    return h, [h]


def build(
    vocab_size: int,
    cell: str = "lstm",
    num_layers: int = 1,
    units: int = 128,
    embedding_dim: int = 0,
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    use_cudnn: bool | str = "auto",
    fused: bool = False,
    weight_drop: float = 0.0,
) -> CharRNN:
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    if not 1 <= num_layers <= 3:
        raise ValueError(f"layers must be 1..3, got {num_layers}")
    embed = (
        layers.Embedding(vocab_size, embedding_dim, name="embedding")
        if embedding_dim > 0
        else OneHot(vocab_size, name="one_hot")
    )
    rnns = []
    for i in range(num_layers):
        kwargs = dict(return_sequences=True, return_state=True, dropout=dropout,
                      recurrent_dropout=recurrent_dropout, name=f"{cell}_{i}")
        if cell in ("lstm", "gru"):
            kwargs["use_cudnn"] = use_cudnn
        if cell == "lstm":
            kwargs.update(fused=fused, weight_drop=weight_drop, one_hot_input=i == 0 and embedding_dim <= 0)
        elif weight_drop:
            raise ValueError(f"weight_drop is implemented for LSTMs only, not {cell}")
        rnns.append(CELLS[cell](units, **kwargs))
    out_dropout = layers.Dropout(dropout, name="output_dropout")
    head = layers.Dense(vocab_size, name="logits")
    k = STATES_PER_CELL[cell]

    def forward(ids, states=None):
        mask = ops.not_equal(ids, 0)
        x = embed(ids)
        finals = []
        for i, rnn in enumerate(rnns):
            init = None if states is None else states[i * k:(i + 1) * k]
            x, *st = rnn(x, mask=mask, initial_state=init)
            finals += st
        return head(out_dropout(x)), finals

    ids = keras.Input((None,), dtype="int32", name="ids")
    logits, _ = forward(ids)
    model = keras.Model(ids, logits, name="charrnn")

    step_ids = keras.Input((None,), dtype="int32", name="ids")
    states = [keras.Input((units,), name=f"state_{i}") for i in range(k * num_layers)]
    step_logits, finals = forward(step_ids, states)
    stepper = keras.Model([step_ids, *states], [step_logits, *finals], name="charrnn_stepper")
    return CharRNN(model, stepper, cell, num_layers, units, embed, rnns, head)


def from_config(cfg: dict, vocab_size: int, **overrides) -> CharRNN:
    """Builds the model a run's config.json describes."""
    kw = dict(cell=cfg["cell"], num_layers=cfg["layers"], units=cfg["units"],
              embedding_dim=cfg["embedding_dim"], dropout=cfg["dropout"],
              recurrent_dropout=cfg.get("recurrent_dropout", 0.0), weight_drop=cfg.get("weight_drop", 0.0))
    kw.update(overrides)
    return build(vocab_size, **kw)
