"""Held-out metrics: nats/char, bits/char, perplexity over real targets only.

A text of n known characters contributes n targets: n-1 characters and the <eos> that
ends it. Padding is never counted. Characters the vocabulary does not know are dropped
(see vocab.py) and reported as ``unknown_chars``.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


def summed_nll(model: keras.Model):
    """A tf.function: (inputs, targets) -> (sum of -log p(target) over real targets, count)."""

    @tf.function(reduce_retracing=True)
    def batch_nll(inputs, targets):
        logits = model(inputs, training=False)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        real = tf.cast(targets != 0, nll.dtype)
        return tf.reduce_sum(nll * real), tf.reduce_sum(real)

    return batch_nll


def metrics(total_nll: float, count: float) -> dict:
    nats = total_nll / max(count, 1.0)
    return {
        "nats_per_char": nats,
        "bits_per_char": nats / math.log(2),
        "perplexity": math.exp(min(nats, 700.0)),
        "chars": int(count),
    }


def evaluate_dataset(model: keras.Model, batches: tf.data.Dataset) -> dict:
    """Metrics of ``model`` over (inputs, targets) batches, summed exactly (not batch means)."""
    fn = summed_nll(model)
    total, count = 0.0, 0.0
    for inputs, targets in batches:
        s, c = fn(inputs, targets)
        total += float(s)
        count += float(c)
    return metrics(total, count)
