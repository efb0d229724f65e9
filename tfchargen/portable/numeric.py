"""The numeric model every portable export carries: one character step, ids in, log-probs out.

    step(ids [B] int32, state_0 .. state_{n-1} [B, units] float32)
        -> (log_probs [B, V] float32, state_0 .. state_{n-1})

Built from a run dir's weights exactly as ``tfchargen export`` builds the SavedModel
(rundir.load_trained without cuDNN) and computing what the SavedModel's generation loop
computes per step: ``CharRNN.step`` over the first layer's input table, then log_softmax
(padding is not masked here; the host loop does it). Strings, sampling and the loop stay in
the host language (loop.py, export/js), so the graph needs only ops every runtime has.
Initial states are zeros.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tfchargen.data.vocab import EOS, PAD
from tfchargen.model.charrnn import STATES_PER_CELL, CharRNN
from tfchargen.training import rundir

IDS = "ids"
LOG_PROBS = "log_probs"


def state_name(i: int) -> str:
    return f"state_{i}"


@dataclasses.dataclass
class StepModel:
    """A run's step function and what a manifest says about it.

    ``step`` is a tf.function with a fixed input signature (dynamic batch) returning a
    tuple; ``named_step`` is the same function returning ``{name: tensor}`` (the names
    of :attr:`input_names` / :attr:`output_names`), for converters that keep names.
    """

    run_dir: str
    config: dict
    vocab_entries: list  # vocab.txt's lines: index = id
    rnn: CharRNN
    step: object
    named_step: object

    @property
    def num_states(self) -> int:
        return STATES_PER_CELL[self.rnn.cell] * self.rnn.layers

    @property
    def state_shapes(self) -> list:
        return [[self.rnn.units] for _ in range(self.num_states)]

    @property
    def input_names(self) -> list:
        return [IDS] + [state_name(i) for i in range(self.num_states)]

    @property
    def output_names(self) -> list:
        return [LOG_PROBS] + [state_name(i) for i in range(self.num_states)]

    def zero_states(self, batch: int) -> list:
        return [np.zeros([batch, self.rnn.units], np.float32) for _ in range(self.num_states)]


def step_functions(rnn: CharRNN):
    """(step, named_step): tf.functions of one step of ``rnn`` (see the module docstring).

    The input table is computed once here and captured as a constant: the SavedModel
    computes it once per call with the same kernel, so the values are the same, and a
    converter gets a plain gather instead of an embedding @ kernel product per step.
    """
    table = tf.constant(rnn.input_table())
    n = STATES_PER_CELL[rnn.cell] * rnn.layers
    specs = [tf.TensorSpec([None], tf.int32, name=IDS)] + [
        tf.TensorSpec([None, rnn.units], tf.float32, name=state_name(i)) for i in range(n)]

    @tf.function(input_signature=specs, autograph=False)
    def step(ids, *states):
        logits, new = rnn.step(ids, list(states), table=table)
        return (tf.nn.log_softmax(logits), *new)

    @tf.function(input_signature=specs, autograph=False)
    def named_step(ids, *states):
        log_probs, *new = step(ids, *states)
        return {LOG_PROBS: log_probs, **{state_name(i): s for i, s in enumerate(new)}}

    return step, named_step


def load(run_dir) -> StepModel:
    """The StepModel of a trained run (its final or newest weights)."""
    cfg, vocab, rnn = rundir.load_trained(run_dir, use_cudnn=False)  # as savedmodel/export.py
    step, named_step = step_functions(rnn)
    return StepModel(str(run_dir), cfg, [PAD, *vocab.chars, EOS], rnn, step, named_step)
