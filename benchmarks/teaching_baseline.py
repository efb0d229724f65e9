"""The teaching example's pipeline and model, reimplemented as the benchmark baseline.

Kept faithful on purpose, warts included, so speedups are measured against what it did:

* a Python-dict vocabulary: 0 = padding, the sorted distinct characters 1..N, <eos> = N+1;
* batches of 8 strings turned into one-hot arrays inside ``tf.py_function`` (Python per
  batch, holding the GIL), padded with ``keras.utils.pad_sequences`` to the longest string
  in the batch (no bucketing); no parallel map and no prefetch;
* ``Masking(mask_value=0.)`` in front of the LSTM, which masks nothing: the one-hot of
  padding id 0 is ``[1, 0, 0, ...]``, not a zero vector. So padding runs through the LSTM
  and is counted by the ``categorical_crossentropy`` loss.

Only the held-out metric (``heldout_nats_per_char``) is measured correctly: real targets
only, never padding, the same definition as ``tfchargen.training.evaluate``.

Assumption: padding is ``"post"`` (text first, then zeros), the usual choice for text
generation; ``pad_sequences`` itself defaults to ``"pre"``. Throughput does not depend on it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

PADDING = "post"


def build_vocab(texts: list[str]) -> dict[str, int]:
    """{char: id} with 0 left for padding and <eos> last."""
    vocab = {ch: i + 1 for i, ch in enumerate(sorted(set("".join(texts))))}
    vocab["<eos>"] = len(vocab) + 1
    return vocab


def encode(texts, vocab: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> padded (inputs, targets) id arrays; targets = inputs shifted, <eos> last.

    Characters missing from the vocabulary are dropped (the teaching code would raise a
    KeyError; only held-out text can hit this, and tfchargen drops them the same way).
    """
    eos = vocab["<eos>"]
    seqs = [[vocab[c] for c in t if c in vocab] for t in texts]
    seqs = [s for s in seqs if s]
    inputs = keras.utils.pad_sequences(seqs, padding=PADDING, value=0)
    targets = keras.utils.pad_sequences([s[1:] + [eos] for s in seqs], padding=PADDING, value=0)
    return inputs, targets


def dataset(texts: list[str], vocab: dict[str, int], batch_size: int = 8, seed: int = 0) -> tf.data.Dataset:
    """Infinite (one-hot inputs [B,T,V], one-hot targets [B,T,V]) batches via tf.py_function."""
    depth = len(vocab) + 1

    def to_one_hot(batch):  # runs in Python, once per batch
        inputs, targets = encode([b.decode("utf-8") for b in batch.numpy()], vocab)
        return (keras.utils.to_categorical(inputs, depth).astype("float32"),
                keras.utils.to_categorical(targets, depth).astype("float32"))

    def py_batch(batch):
        x, y = tf.py_function(to_one_hot, [batch], [tf.float32, tf.float32])
        x.set_shape([None, None, depth])  # py_function loses shapes; Keras needs the last dim
        y.set_shape([None, None, depth])
        return x, y

    ds = tf.data.Dataset.from_tensor_slices(texts)
    # repeat() only so a wall-clock budget can run past one epoch.
    ds = ds.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True).repeat()
    return ds.batch(batch_size).map(py_batch)


def build_model(vocab_size: int, units: int = 128) -> keras.Model:
    model = keras.Sequential([
        keras.Input((None, vocab_size)),
        keras.layers.Masking(mask_value=0.0),  # masks nothing: see the module docstring
        keras.layers.LSTM(units, return_sequences=True),
        keras.layers.Dense(vocab_size, activation="softmax"),
    ])
    return model


class OneHotCharCount(keras.metrics.Metric):
    """Real (non-padding) targets seen, from one-hot targets: the numerator of chars/s.

    Not part of the teaching example; added so the benchmark can count characters.
    """

    def __init__(self, name="chars", **kwargs):
        super().__init__(name=name, **kwargs)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.count.assign_add(keras.ops.sum(1.0 - keras.ops.cast(y_true[..., 0], "float32")))

    def result(self):
        return self.count

    def reset_state(self):
        self.count.assign(0.0)


def compile_model(model: keras.Model, metrics=()) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy", metrics=list(metrics))
    return model


def heldout_nats_per_char(model: keras.Model, texts: list[str], vocab: dict[str, int],
                          batch_size: int = 64) -> dict:
    """Sum of -log p(target) over real targets / their count; padding never counted."""
    depth = len(vocab) + 1

    @tf.function(reduce_retracing=True)
    def batch_nll(inputs, targets):
        probs = model(tf.one_hot(inputs, depth), training=False)
        p = tf.gather(probs, targets, axis=-1, batch_dims=2)  # p(target) per position
        real = tf.cast(targets != 0, tf.float32)
        return tf.reduce_sum(-tf.math.log(tf.maximum(p, 1e-12)) * real), tf.reduce_sum(real)

    total, count = 0.0, 0.0
    for i in range(0, len(texts), batch_size):
        inputs, targets = encode(texts[i:i + batch_size], vocab)
        s, c = batch_nll(tf.constant(inputs, tf.int32), tf.constant(targets, tf.int32))
        total, count = total + float(s), count + float(c)
    return {"nats_per_char": total / max(count, 1.0), "chars": int(count)}
