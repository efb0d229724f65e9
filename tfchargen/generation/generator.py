"""In-graph generation: prompts [B] -> generated text [B], the whole loop in one tf.function.

    strings --(vocab: split, lookup)--> ids --(prompt pass, then tf.while_loop of cell
    steps with carried state: O(length))--> ids --(vocab: lookup, join)--> strings

The string<->id boundary is vocab.py; everything between is numeric and can run under
XLA (``jit_compile=True``), which string and table ops cannot.

Every input is batched on dimension 0 and every control is per row, so TF Serving can
merge requests: ``max_length`` (new characters), ``temperature`` (0 = greedy),
``top_k`` (0 = off), ``top_p`` (1 = off), ``seed`` (0 = unseeded).

Each step picks the next character with swappable pieces from sampling.py: any list of
logit filters (by default TopK then TopP) and a sampler (by default Categorical, which
also holds the seeded draws). Padding (id 0) is removed before any of them, so it is
never sampled at any temperature.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfchargen import contract
from tfchargen.contract import MAX_NEW_CHARS, MAX_PROMPT_CHARS, MAX_STREAM_CHARS
from tfchargen.data.vocab import Vocabulary, normalize
from tfchargen.generation.sampling import DEFAULT_FILTERS, NEG_INF, Categorical, apply_filters
from tfchargen.generation.state import StateCodec
from tfchargen.model.charrnn import CharRNN


class ControlTensors(NamedTuple):
    """The sampling controls as [B] tensors, one value per row, in signature order
    (contract.CONTROLS, contract.CONTROL_DTYPES): what generate, start and continue take."""

    max_length: tf.Tensor
    temperature: tf.Tensor
    top_k: tf.Tensor
    top_p: tf.Tensor
    seed: tf.Tensor

    @classmethod
    def of(cls, controls: contract.Controls, n: int) -> "ControlTensors":
        """The tensors of ``n`` rows of ``controls`` (defaults filled in, scalars repeated).

        >>> ControlTensors.of(contract.Controls(temperature=0, seed=[1, 2]), 2).seed.numpy()
        array([1, 2])
        """
        return cls(**{name: tf.constant(values, tf.as_dtype(contract.CONTROL_DTYPES[name]))
                      for name, values in controls.rows(n).items()})

    def for_sampler(self) -> dict:
        """The controls sampling.py's filters and samplers read, by name."""
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p, "seed": self.seed}


def validate_controls(rows, controls: ControlTensors):
    """InvalidArgument with a clear message for anything outside the documented contract;
    ``rows`` is the [B] prompts or states the controls go with.

    One Assert whose message is the first failed rule's: separate tf.debugging asserts
    would each add an op to every call.
    """
    n = tf.size(rows)
    rules = [(tf.size(x) != n, contract.MSG_ONE_PER_PROMPT.format(name=name))
             for name, x in controls._asdict().items()]
    max_length, temperature, top_k, top_p, _ = controls
    rules += [
        (tf.reduce_any(max_length < 0), contract.MSG_MAX_LENGTH_LOW),
        (tf.reduce_any(max_length > MAX_NEW_CHARS), contract.MSG_MAX_LENGTH_HIGH),
        (~tf.reduce_all(tf.math.is_finite(temperature) & (temperature >= 0.0)), contract.MSG_TEMPERATURE),
        (tf.reduce_any(top_k < 0), contract.MSG_TOP_K),
        (~tf.reduce_all((top_p > 0.0) & (top_p <= 1.0)), contract.MSG_TOP_P),
    ]
    failed = tf.stack([f for f, _ in rules])
    first = tf.argmax(tf.cast(failed, tf.int32), output_type=tf.int32)
    message = tf.gather(tf.constant([m for _, m in rules]), first)
    return [tf.debugging.Assert(~tf.reduce_any(failed), [message])]


def checked(rows, controls: ControlTensors):
    """``rows`` and ``controls`` once validate_controls passes. Every input waits for the
    checks: nested functions are inlined, so an input that bypassed them could reach the
    loop (e.g. a TensorArray of 2**31-1 elements) first."""
    with tf.control_dependencies(validate_controls(rows, controls)):
        return tf.identity(rows), ControlTensors(*(tf.identity(x) for x in controls))


class Generator(tf.Module):
    """The text-in/text-out pipeline around a CharRNN: ``generate`` and ``score``.

    Args:
        rnn: the model (its ``step`` and ``stepper`` share weights with training).
        vocab: the Vocabulary whose tables turn strings into ids and back.
        filters: logit filters applied in order, each ``f(log_probs, controls)`` (see
            sampling.py); default TopK then TopP. ``[]`` samples the whole distribution.
        sampler: ``s(log_probs, controls, step)`` picks the next ids; default Categorical.
            One with ``prepare(controls) -> controls`` has it called once per call.
        jit_compile: compile the numeric loop with XLA.

    The filters' and sampler's ``controls`` is the dict of [B] tensors ``temperature``,
    ``top_k``, ``top_p``, ``seed`` (ControlTensors.for_sampler).
    """

    def __init__(self, rnn: CharRNN, vocab: Vocabulary, filters=None, sampler=None, jit_compile=False):
        super().__init__(name="generator")
        self.rnn, self.vocab = rnn, vocab
        self.filters = list(filters) if filters is not None else [f() for f in DEFAULT_FILTERS]
        self.sampler = sampler or Categorical()
        self.jit_compile = jit_compile
        self._loop = tf.function(self._decode, jit_compile=jit_compile, autograph=False,
                                 reduce_retracing=True)

    # -- numeric part (XLA-able) ------------------------------------------------------
    def _prompt_pass(self, ids, lengths):
        """Runs the cells over padded prompts [B, T] (``lengths`` >= 1 real characters per
        row); returns the logits after each row's last character and its states.

        The generation step's own cells and input table in a loop that carries only the
        states, each row's frozen once its characters end, and applies the head once: per
        character, a handful of graph nodes instead of a Keras sequence layer's step.
        """
        table = self.rnn.input_table()
        by_step = tf.transpose(ids)  # [T, B]: one read per step

        live_at = tf.expand_dims(tf.transpose(tf.sequence_mask(lengths, tf.shape(ids)[1])), -1)  # [T, B, 1]

        def body(t, states):
            live = tf.gather(live_at, t)
            new = self.rnn.cells_step(tf.gather(by_step, t), states, table)
            return t + 1, [tf.where(live, n, s) for n, s in zip(new, states)]

        longest = tf.reduce_max(lengths)  # <= T: the loop's bound
        _, states = tf.while_loop(lambda t, _: t < longest, body,
                                  (tf.constant(0), self.rnn.zero_states(tf.shape(ids)[0])))
        return self.rnn.head(self.rnn.last_output(states)), states

    def _decode(self, ids, lengths, controls: ControlTensors):
        logits, states = self._prompt_pass(ids, lengths)
        return self._steps(logits, states, controls)[:3]

    def _steps(self, logits, states, controls: ControlTensors, position=None, ended=None):
        """The decoding loop from next-character ``logits`` and RNN ``states`` [B, units].

        -> (new ids [B, steps], ended [B], log_prob [B], position [B], logits, states).
        With ``position`` ([B] characters a stream row has generated) and ``ended`` ([B]
        bool) the loop resumes a stream: the seeded noise takes each row's absolute step,
        ended rows stay put, and each row's logits and states stop where its characters
        stop, so chunks chain exactly. Without them (``generate``), every row starts at step 0.

        Which work the rows ask for (filters, kinds of draw) is decided once per call: a
        batch whose rows are all greedy, or all seeded or all unseeded without a filter,
        runs a loop whose step holds only that pick (the sampler's ``plans``); any other
        batch runs the general step. Each loop variable and each tensor a step reads costs
        executor ops on every step of a plain graph, so the lean loops carry no more.
        """
        batch = tf.shape(logits)[0]
        stream = position is not None
        sampler_controls = controls.for_sampler()
        if hasattr(self.sampler, "prepare"):  # its per-call work, outside the loop
            sampler_controls = self.sampler.prepare(sampler_controls)
        if stream:
            done = (controls.max_length <= 0) | ended | (position >= MAX_STREAM_CHARS)
        else:
            done, ended, position = (controls.max_length <= 0, tf.zeros([batch], tf.bool),
                                     tf.zeros([batch], tf.int32))
        start = (done, ended, logits, states, position)

        def general(allowed, step):
            return self.sampler(apply_filters(self.filters, allowed, sampler_controls), sampler_controls, step)

        plans = self._plans(sampler_controls)
        if not plans:
            return self._while(general, controls.max_length, start, stream)
        index = tf.constant(len(plans), tf.int32)  # the general step unless a plan applies
        for i, (applies, _) in reversed(list(enumerate(plans))):
            index = tf.where(applies, i, index)
        picks = [pick for _, pick in plans] + [general]
        return tf.switch_case(index, [functools.partial(self._while, pick, controls.max_length, start, stream)
                                      for pick in picks])

    def _plans(self, sampler_controls):
        """[(applies, pick)]: the sampler's lean picks that hold for this Generator's filters
        (none under XLA, whose compiled step is already one kernel, or for a sampler without
        ``plans``)."""
        if self.jit_compile or not hasattr(self.sampler, "plans"):
            return []
        filtering = tf.constant(False)
        for f in self.filters:
            filtering |= f.active(sampler_controls) if hasattr(f, "active") else True
        keeps_argmax = all(getattr(f, "keeps_argmax", False) for f in self.filters)
        return [(applies if (name == "greedy" and keeps_argmax) else applies & ~filtering, pick)
                for name, applies, pick in self.sampler.plans(sampler_controls)]

    def _while(self, pick, max_length, start, stream):
        """The while loop whose step picks the next ids with ``pick(allowed, step)``.

        A step carries only what the next step needs: whether a row ended with <eos> is
        read from its ids afterwards, a generate loop carries no positions, and padding's
        -inf column is a constant of the step, not a captured tensor.
        """
        done, ended, logits, states, position = start
        batch = tf.shape(logits)[0]
        eos = self.vocab.eos_id
        steps = tf.minimum(tf.reduce_max(tf.concat([max_length, [0]], 0)), MAX_NEW_CHARS)  # never trust the caller
        size = MAX_NEW_CHARS if self.jit_compile else steps  # XLA needs a static size
        out = tf.TensorArray(tf.int32, size=size, element_shape=[None])
        pad_col = np.zeros([self.vocab.size], np.float32)
        pad_col[0] = NEG_INF  # padding is never a candidate
        table = self.rnn.input_table()  # once per call: steps gather instead of multiplying

        def body(i, done, log_prob, logits, states, out, *pos):
            log_probs = tf.nn.log_softmax(logits)
            nxt = pick(log_probs + pad_col, pos[0] if stream else i)
            active = ~done
            nxt = tf.where(active, nxt, 0)
            picked = tf.gather(log_probs, nxt[:, None], batch_dims=1)[:, 0]
            log_prob += tf.where(active, picked, 0.0)
            done |= tf.equal(nxt, eos) | (i + 1 >= max_length)
            out = out.write(i, nxt)
            new_logits, new_states = self.rnn.step(nxt, states, table)
            if stream:  # a row's carried state stops where its characters stop
                pos = (pos[0] + tf.cast(active, tf.int32),)
                done |= pos[0] >= MAX_STREAM_CHARS
                keep = active[:, None]
                new_logits = tf.where(keep, new_logits, logits)
                new_states = [tf.where(keep, n, s) for n, s in zip(new_states, states)]
            return (i + 1, done, log_prob, new_logits, new_states, out, *pos)

        def cond(i, done, *_):
            return ~tf.reduce_all(done)  # every row is done by its max_length (at most MAX_NEW_CHARS)

        init = (tf.constant(0), done, tf.zeros([batch]), logits, states, out) + ((position,) if stream else ())
        i, _, log_prob, logits, states, out, *pos = tf.while_loop(cond, body, init, maximum_iterations=MAX_NEW_CHARS)
        # [B, i]; rows that stopped early hold 0s. An empty TensorArray cannot be stacked.
        new_ids = tf.cond(i > 0, lambda: tf.transpose(out.stack()[:i]), lambda: tf.zeros([batch, 0], tf.int32))
        ended |= tf.reduce_any(tf.equal(new_ids, eos), axis=1)
        return new_ids, ended, log_prob, pos[0] if stream else position, logits, states

    # -- string part ------------------------------------------------------------------
    def prompt_ids(self, prompt):
        """[B] strings -> (ids [B, T>=1] padded, lengths [B] >= 1): the model's view of prompts.

        Keeps the last MAX_PROMPT_CHARS known characters; an empty prompt becomes a lone
        <eos>, the model's "start of text" (see README, Limits).
        """
        ids = self.vocab.encode(prompt)[:, -MAX_PROMPT_CHARS:]
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        dense = tf.pad(ids.to_tensor(), [[0, 0], [0, 1]])  # >= 1 column: an RNN needs a step
        first = tf.where(lengths > 0, dense[:, 0], self.vocab.eos_id)
        dense = tf.concat([first[:, None], dense[:, 1:]], axis=1)
        return dense, tf.maximum(lengths, 1)

    def generate(self, prompt, controls: ControlTensors):
        """[B] prompts -> generate's outputs (contract.GENERATE_OUTPUTS)."""
        prompt, controls = checked(prompt, controls)
        ids, lengths = self.prompt_ids(prompt)
        new_ids, ended, log_prob = self._loop(ids, lengths, controls)
        return self._outputs(normalize(prompt), new_ids, ended, log_prob)

    def _outputs(self, prefix, new_ids, ended, log_prob):
        """generate's outputs for new ids [B, T]; ``text`` is ``prefix`` + the continuation."""
        continuation = self.vocab.decode(new_ids)
        num_chars = tf.reduce_sum(tf.cast((new_ids > 0) & (new_ids != self.vocab.eos_id), tf.int32), axis=1)
        return {
            "text": continuation if prefix is None else tf.strings.join([prefix, continuation]),
            "continuation": continuation,
            "num_chars": num_chars,
            "ended_with_eos": ended,
            "log_prob": log_prob,
        }

    # -- streaming: start + continue, the state in one string per row (state.py) -----
    @functools.cached_property
    def codec(self) -> StateCodec:
        """This model's state codec; its fingerprint is taken from the weights at first use."""
        return StateCodec.for_model(self.rnn, self.vocab)

    @functools.cached_property
    def _stream_loops(self):
        opts = dict(jit_compile=self.jit_compile, autograph=False, reduce_retracing=True)
        return tf.function(self._start_steps, **opts), tf.function(self._steps, **opts)

    def _start_steps(self, ids, lengths, controls: ControlTensors):
        logits, states = self._prompt_pass(ids, lengths)
        batch = tf.shape(ids)[0]
        return self._steps(logits, states, controls,
                           position=tf.zeros([batch], tf.int32), ended=tf.zeros([batch], tf.bool))

    def start(self, prompt, controls: ControlTensors):
        """generate's first chunk, plus each row's ``state_bytes`` to continue it.

        Example:
        >>> c = ControlTensors.of(contract.Controls(max_length=8, seed=7), 1)  # doctest: +SKIP
        >>> out = g.start(tf.constant(["Today "]), c)                          # doctest: +SKIP
        >>> nxt = g.continue_(out["state_bytes"], c)                           # doctest: +SKIP
        """
        prompt, controls = checked(prompt, controls)
        ids, lengths = self.prompt_ids(prompt)
        new_ids, ended, log_prob, position, logits, states = self._stream_loops[0](ids, lengths, controls)
        out = self._outputs(normalize(prompt), new_ids, ended, log_prob)
        out[contract.STATE] = self.codec.encode(position, ended, logits, states)
        return out

    def continue_(self, state_bytes, controls: ControlTensors):
        """The next chunk of each row's stream: the outputs of ``start`` (``text`` is the
        chunk's continuation); a row that ended with <eos> gives empty chunks from then on.

        Chained chunks equal one ``generate`` call of their total length for seeded and
        greedy rows, whatever the chunk sizes and the batch the row is continued in.
        """
        state_bytes, controls = checked(state_bytes, controls)
        state_checks, (position, ended, logits, states) = self.codec.decode(state_bytes)
        with tf.control_dependencies(state_checks):
            controls = controls._replace(max_length=tf.identity(controls.max_length))
        new_ids, ended, log_prob, position, logits, states = self._stream_loops[1](
            logits, states, controls, position, ended)
        out = self._outputs(None, new_ids, ended, log_prob)
        out[contract.STATE] = self.codec.encode(position, ended, logits, states)
        return out

    def score(self, text):
        """Per text: nats/char, total log-prob and the number of scored characters.

        The same targets as training and ``evaluate``: n known characters give n targets
        (n-1 characters and <eos>); an empty text scores 0 characters and 0 nats/char.
        """
        ids = self.vocab.encode(text)[:, -MAX_PROMPT_CHARS:]
        inputs = tf.pad(ids.to_tensor(), [[0, 0], [0, 1]])  # >= 1 column: an RNN needs a step
        lengths = tf.cast(ids.row_lengths(), tf.int32)[:, None]
        pos = tf.range(tf.shape(inputs)[1])[None, :]
        targets = tf.pad(inputs[:, 1:], [[0, 0], [0, 1]])
        targets = tf.where(pos == lengths - 1, self.vocab.eos_id, targets)
        real = pos < lengths
        logits = self.rnn.model(inputs, training=False)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(real, targets, 0), logits=logits)
        total = tf.reduce_sum(tf.where(real, nll, 0.0), axis=1)
        count = tf.reduce_sum(tf.cast(real, tf.int32), axis=1)
        return {
            "nats_per_char": total / tf.cast(tf.maximum(count, 1), tf.float32),
            "log_prob": -total,
            "num_chars": count,
        }
