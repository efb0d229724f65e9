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
from keras import layers, ops

CELLS = {"lstm": layers.LSTM, "gru": layers.GRU, "rnn": layers.SimpleRNN}
STATES_PER_CELL = {"lstm": 2, "gru": 1, "rnn": 1}


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
        multiplying (40% of an LSTM(128) step's FLOPs with one-hot input).
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
        return self.head(x), new


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
              recurrent_dropout=cfg.get("recurrent_dropout", 0.0))
    kw.update(overrides)
    return build(vocab_size, **kw)
