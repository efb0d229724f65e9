"""Choosing the next character: logit filters, a sampler, and the seeded noise they draw.

A decoding step turns the model's log-probabilities ``[B, V]`` into one id per row:

    log_probs --filter--> ... --filter--> filtered log_probs --sampler--> ids [B]

Every control is per row (``controls`` maps a control's name to a ``[B]`` tensor, the
``generate`` signature's inputs: ``temperature``, ``top_k``, ``top_p``, ``seed``), so rows
of one batch may ask for different things. A filter is any callable
``f(log_probs, controls) -> log_probs`` that reads the control it needs and sets excluded
characters to -inf; one with an ``active(controls)`` method is skipped (``tf.cond``) on the
calls where no row of the batch asks for it, since filters sort ``[B, V]``. A sampler is a
callable ``s(log_probs, controls, step) -> ids``.

Seeds: a seeded row draws one uniform u per step from a counter-based hash of (its seed,
the step) and takes the first character whose cumulative probability, under the
temperature-scaled filtered distribution, reaches u (``inverse_cdf``): exactly a categorical
draw, but one that depends only on the row's own seed and distribution, never on the other
rows of the batch. Unseeded rows (seed 0) draw from a kernel that seeds itself from the
system's entropy (``unseeded_draw``): different in every process and every call.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # no public is_op_determinism_enabled

NEG_INF = float("-inf")


class TopK:
    """Keeps each row's k most likely characters; reads ``controls["top_k"]`` ([B] int32,
    0 = keep all).

    Args:
        log_probs: [B, V] float log-probabilities (-inf = excluded).
        controls: a dict holding ``top_k``.

    Example:
    >>> import numpy as np
    >>> out = TopK()(tf.math.log([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]), {"top_k": tf.constant([2, 0])})
    >>> np.isfinite(out.numpy())
    array([[ True,  True, False],
           [ True,  True,  True]])
    """

    control = "top_k"
    keeps_argmax = True  # the most likely character always survives: greedy rows need no filtering

    def active(self, controls):
        return tf.reduce_any(controls[self.control] > 0)

    def __call__(self, log_probs, controls):
        k = controls[self.control]
        vocab = tf.shape(log_probs)[1]
        k = tf.minimum(k, vocab)
        kth = tf.gather(tf.sort(log_probs, axis=-1, direction="DESCENDING"),
                        tf.maximum(k - 1, 0)[:, None], batch_dims=1)
        keep = (log_probs >= kth) | (k[:, None] <= 0)
        return tf.where(keep, log_probs, NEG_INF)


class TopP:
    """Nucleus filter: keeps the most likely characters whose mass reaches p; reads
    ``controls["top_p"]`` ([B] float32 in (0, 1], 1 = keep all).

    The mass is that of what earlier filters kept, renormalized; the most likely character
    is always kept.

    Args:
        log_probs: [B, V] float log-probabilities (-inf = excluded).
        controls: a dict holding ``top_p``.

    Example:
    >>> import numpy as np
    >>> out = TopP()(tf.math.log([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]), {"top_p": tf.constant([0.6, 0.4])})
    >>> np.isfinite(out.numpy())
    array([[ True,  True, False],
           [ True, False, False]])
    """

    control = "top_p"
    keeps_argmax = True

    def active(self, controls):
        return tf.reduce_any(controls[self.control] < 1.0)

    def __call__(self, log_probs, controls):
        p = controls[self.control]
        sorted_lp = tf.sort(log_probs, axis=-1, direction="DESCENDING")
        probs = tf.nn.softmax(sorted_lp)  # renormalized over what earlier filters kept
        before = tf.cumsum(probs, axis=-1, exclusive=True)
        kept = before < p[:, None]  # the top character is always kept
        threshold = tf.reduce_min(tf.where(kept, sorted_lp, float("inf")), axis=-1, keepdims=True)
        keep = (log_probs >= threshold) | (p[:, None] >= 1.0)
        return tf.where(keep, log_probs, NEG_INF)


DEFAULT_FILTERS = (TopK, TopP)  # applied in this order: top-k, then nucleus over what it kept


def apply_filters(filters, log_probs, controls):
    """Applies ``filters`` in order; one with ``active(controls)`` runs only when that is true.

    Example:
    >>> import numpy as np
    >>> controls = {"top_k": tf.constant([2]), "top_p": tf.constant([1.0])}
    >>> out = apply_filters([TopK(), TopP()], tf.math.log([[0.5, 0.3, 0.2]]), controls)
    >>> np.isfinite(out.numpy())
    array([[ True,  True, False]])
    """
    for f in filters:
        if hasattr(f, "active"):
            log_probs = tf.cond(f.active(controls), lambda f=f, x=log_probs: f(x, controls),
                                lambda x=log_probs: x)
        else:
            log_probs = f(log_probs, controls)
    return log_probs


def _mix32(x):
    """A 32-bit integer finalizer (lowbias32): well-spread bits from a counter."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


_GOLDEN = 0x9E3779B9  # 2**32 / golden ratio: consecutive steps land far apart before mixing


def row_key(seed):
    """[B] uint32: a row's seed (int64, both words) mixed once; constant over its steps.

    Example:
    >>> a, b = row_key(tf.constant([7, 8], tf.int64)), row_key(tf.constant([9, 7], tf.int64))
    >>> int(a[0]) == int(b[1]), int(a[0]) == int(a[1])  # seed 7's key, wherever its row is
    (True, False)
    """
    words = tf.bitcast(tf.cast(seed, tf.int64), tf.uint32)  # [B, 2]: low and high words
    return _mix32(words[:, 0] ^ _mix32(words[:, 1] + tf.constant(_GOLDEN, tf.uint32)))


def seeded_uniform(key, step):
    """[B] float32 in (0, 1]: one uniform per row per step, from (row key, step) alone.

    24 bits: every value is a multiple of 2**-24, exactly representable in float32.

    Args:
        key: [B] uint32 from ``row_key``.
        step: int32, scalar or [B]: the position being generated.

    Example:
    >>> import numpy as np
    >>> key = row_key(tf.constant([3, 3], tf.int64))
    >>> u = seeded_uniform(key, tf.constant([0, 1])).numpy()
    >>> bool(u[0] != u[1]), bool(((u > 0) & (u <= 1)).all())  # a new draw per step
    (True, True)
    """
    x = _mix32(key + tf.cast(step, tf.uint32) * tf.constant(_GOLDEN, tf.uint32))
    return (tf.cast(tf.bitwise.right_shift(x, tf.constant(8, tf.uint32)), tf.float32) + 1.0) * (1.0 / (1 << 24))


def inverse_cdf(scaled, u):
    """[B] int32: per row, the first id whose cumulative probability reaches ``u`` [B].

    ``scaled`` [B, V] are unnormalized log-probs (-inf = excluded). Each id owns the interval
    (cdf before it, cdf through it] of length its probability, so for u uniform on (0, 1]
    the id is an exact categorical draw; an excluded id owns an empty interval and is never
    chosen, and u = 1 lands on the last id with mass. Only per-row ops: a row's id depends on
    its own values alone, whatever the batch. The guard covers a cumsum whose rounding is
    not monotone (a backend's parallel scan): then the row's most likely id.

    Example:
    >>> scaled = tf.math.log([[0.0, 0.5, 0.0, 0.5]] * 3)
    >>> inverse_cdf(scaled, tf.constant([1e-7, 0.5, 1.0])).numpy()
    array([1, 1, 3], dtype=int32)
    """
    mass = tf.exp(scaled - tf.reduce_max(scaled, axis=-1, keepdims=True))  # the top is 1; -inf is 0
    cdf = tf.cumsum(mass, axis=-1)
    below = tf.reduce_sum(tf.cast(cdf < u[:, None] * cdf[:, -1:], tf.int32), axis=-1)
    ids = tf.minimum(below, tf.shape(scaled)[1] - 1)
    ok = tf.gather(mass, ids[:, None], batch_dims=1)[:, 0] > 0
    return tf.where(ok, ids, tf.argmax(scaled, axis=-1, output_type=tf.int32))


def unseeded_draw(scaled):
    """[B] int32 draws from a fresh random stream: new in every process and every call.

    ``tf.random.categorical`` would take its op seed from TensorFlow's global seed when one
    is set (``keras.utils.set_random_seed``, as training does), and that seed is then
    written into the traced graph, so every process that loads an export repeats the same
    "random" text. Seed attributes (0, 0) tell the kernel to seed itself from the
    operating system's entropy when it is created, in whatever runtime loads the graph.
    Under op determinism such a kernel refuses to run, so a graph traced there (samples
    during training) draws from the global seed instead: the determinism that was asked for.
    """
    if tf_config.is_op_determinism_enabled():
        return tf.random.categorical(scaled, 1, dtype=tf.int32)[:, 0]
    return tf.raw_ops.Multinomial(logits=scaled, num_samples=1, seed=0, seed2=0, output_dtype=tf.int32)[:, 0]


class Categorical:
    """Samples from temperature-scaled log-probs; reads ``controls["temperature"]`` ([B]
    float32 >= 0, 0 = argmax) and ``controls["seed"]`` ([B] int64, 0 = unseeded: fresh per
    process and call; else reproducible per row: a row's own seed alone decides its noise,
    whatever the batch, so rows that share a seed share their draws and callers give each
    row its own, see seeds.row_seed).

    Args:
        log_probs: [B, V] filtered log-probabilities (-inf = excluded).
        controls: a dict holding ``temperature`` and ``seed``.
        step: int32, scalar or [B]: the position being generated (seeded rows draw per step;
            stream rows carry their own absolute position).

    Example:
    >>> controls = {"temperature": tf.constant([0.0, 1.0, 1.0]), "seed": tf.constant([0, 7, 0], tf.int64)}
    >>> int(Categorical()(tf.math.log([[0.2, 0.8]] * 3), controls, 0)[0])  # greedy row: the argmax
    1
    >>> Categorical()(tf.math.log([[0.0, 1.0]] * 3), controls, 0).numpy()  # -inf is never drawn
    array([1, 1, 1], dtype=int32)
    """

    def prepare(self, controls):
        """``controls`` plus what no step changes (row masks, 1/temperature, seed keys):
        a Generator calls it once per call, outside its loop; ``__call__`` without it works too.
        """
        temperature, seed = controls["temperature"], controls["seed"]
        sampled = temperature > 0
        seeded, unseeded = sampled & (seed != 0), sampled & (seed == 0)
        any_seeded = tf.reduce_any(seeded)
        return {**controls, "_prepared": True, "_seeded": seeded, "_unseeded": unseeded,
                "_any_seeded": any_seeded, "_any_unseeded": tf.reduce_any(unseeded),
                "_inv_temperature": tf.where(sampled, 1.0 / tf.where(sampled, temperature, 1.0), 1.0)[:, None],
                "_row_key": tf.cond(any_seeded, lambda: row_key(seed), lambda: tf.zeros_like(seed, tf.uint32))}

    def plans(self, controls):
        """Cheaper picks for batches whose rows all ask for one kind of draw, for a loop
        that decides once per call instead of once per step: ``[(name, applies, pick)]``,
        ``applies`` a scalar bool, ``pick(log_probs, step) -> ids`` the same ids ``__call__``
        gives on such a batch. ``controls`` come from :meth:`prepare`. The "greedy" pick holds
        whatever filters keep the argmax; the others need the unfiltered distribution.

        Example:
        >>> c = Categorical().prepare({"temperature": tf.constant([0.0, 0.0]), "seed": tf.constant([0, 5], tf.int64),
        ...                            "top_k": tf.constant([0, 0]), "top_p": tf.constant([1.0, 1.0])})
        >>> [(name, bool(applies)) for name, applies, _ in Categorical().plans(c)]
        [('greedy', True), ('seeded', False), ('unseeded', False)]
        """
        c = controls
        inv_temperature, key = c["_inv_temperature"], c["_row_key"]
        return [
            ("greedy", ~c["_any_seeded"] & ~c["_any_unseeded"],
             lambda log_probs, step: tf.argmax(log_probs, axis=-1, output_type=tf.int32)),
            ("seeded", tf.reduce_all(c["_seeded"]),
             lambda log_probs, step: inverse_cdf(log_probs * inv_temperature, seeded_uniform(key, step))),
            ("unseeded", tf.reduce_all(c["_unseeded"]),
             lambda log_probs, step: unseeded_draw(log_probs * inv_temperature)),
        ]

    def __call__(self, log_probs, controls, step):
        c = controls if "_prepared" in controls else self.prepare(controls)
        scaled = log_probs * c["_inv_temperature"]  # greedy rows: unscaled, and unused
        # Each kind of draw costs a pass over [B, V]: pay only for the kinds some row uses.
        zeros = lambda: tf.zeros_like(c["_seeded"], tf.int32)  # noqa: E731
        greedy = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
        seeded = tf.cond(c["_any_seeded"], lambda: inverse_cdf(scaled, seeded_uniform(c["_row_key"], step)), zeros)
        unseeded = tf.cond(c["_any_unseeded"], lambda: unseeded_draw(scaled), zeros)
        return tf.where(c["_seeded"], seeded, tf.where(c["_unseeded"], unseeded, greedy))
