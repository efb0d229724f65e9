"""The training loss and the character counter, both exact under tf.distribute strategies."""

from __future__ import annotations

import keras
import tensorflow as tf


class TokenMeanCrossentropy(keras.losses.Loss):
    """Cross-entropy (from logits) averaged over the real targets of the *global* batch.

    Targets equal to 0 (padding) count for nothing. Keras' own ``ignore_class`` loss
    averages over each replica's real targets and then over replicas, which weights
    characters differently whenever replicas hold different amounts of padding. Here each
    replica divides its summed loss by the all-reduced count of real targets, so the summed
    gradients are exactly those of one device over the whole batch. (Keras divides a
    "sum"-reduced loss by nothing, and sums gradients over replicas.)

    Args:
        name: the loss's name in Keras' logs.

    Example:
    >>> loss = TokenMeanCrossentropy()
    >>> logits = tf.math.log([[[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]])
    >>> round(float(loss(tf.constant([[1, 0]]), logits)), 4)  # one real target, p = 0.25
    1.3863
    """

    def __init__(self, name="token_mean_crossentropy", **kwargs):
        super().__init__(name=name, reduction="sum", **kwargs)

    def call(self, y_true, y_pred):
        labels = tf.cast(y_true, tf.int32)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=y_pred)
        real = tf.cast(labels != 0, nll.dtype)
        count = tf.reduce_sum(real)
        ctx = tf.distribute.get_replica_context()  # None while Keras builds in cross-replica context
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
        return nll * real / tf.maximum(count, 1.0)


class CharCount(keras.metrics.Metric):
    """Counts real (non-padding) target characters: the numerator of characters/second.

    Keras averages metric results over replicas; the result is scaled by the replica count
    so that the average is the global number of characters.

    Args:
        name: the metric's name in Keras' logs.

    Example:
    >>> m = CharCount()
    >>> m.update_state(tf.constant([[3, 4, 0], [5, 0, 0]]), None)
    >>> int(m.result())
    3
    """

    def __init__(self, name="chars", **kwargs):
        super().__init__(name=name, **kwargs)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.count.assign_add(keras.ops.sum(keras.ops.cast(keras.ops.not_equal(y_true, 0), "float32")))

    def result(self):
        return self.count * float(tf.distribute.get_strategy().num_replicas_in_sync)

    def reset_state(self):
        self.count.assign(0.0)
