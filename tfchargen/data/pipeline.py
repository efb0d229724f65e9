"""Input pipeline: example strings -> (inputs, targets) id batches, graph-native.

inputs are an example's ids, targets the same ids shifted left by one with <eos> last:

    text     T o d a y
    inputs   T o d a y
    targets  o d a y <eos>

so an example of n characters contributes n targets (n-1 characters + <eos>). Padding is
id 0; training's loss (train.TokenMeanCrossentropy) and evaluation count only targets that
are not 0, so padding never reaches the loss.

Two modes:
* ``examples``: one example per row, bucketed by length so batches carry little padding;
  the RNN state starts fresh for each example, exactly as in evaluation and generation.
* ``windows``: the examples joined into one stream (each followed by <eos>) and cut into
  fixed windows, the teaching example's "num_chars" idea: no padding at all.
"""

from __future__ import annotations

import tensorflow as tf

from tfchargen.data.vocab import Vocabulary

AUTOTUNE = tf.data.AUTOTUNE
MODES = ("examples", "windows")


def encode(strings: tf.data.Dataset, vocab: Vocabulary, max_len: int | None = None):
    """Example strings -> int32 id vectors (empty examples dropped, long ones truncated)."""
    ids = strings.batch(1024).map(vocab.encode, num_parallel_calls=AUTOTUNE).unbatch()
    ids = ids.filter(lambda x: tf.size(x) > 0)
    if max_len:
        ids = ids.map(lambda x: x[:max_len])
    return ids


def shift(ids: tf.Tensor, eos_id: int):
    """ids -> (inputs, targets): targets are the inputs shifted by one, <eos> last."""
    targets = tf.concat([ids[1:], tf.constant([eos_id], ids.dtype)], axis=0)
    return ids, targets


def _bucketed(pairs, batch_size, max_len, drop_remainder):
    # Every 8 up to 64 (titles), then every 16 (fused_lstm.PAD_STEPS, so no extra compilations)
    # to 256, so that longer title|description examples also carry little padding.
    steps = list(range(16, 64, 8)) + list(range(64, 257, 16)) + [320, 384, 512, 768, 1024]
    boundaries = [b for b in steps if b < max_len]
    return pairs.bucket_by_sequence_length(
        element_length_func=lambda x, y: tf.shape(x)[0],
        bucket_boundaries=[b + 1 for b in boundaries],
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        padded_shapes=([None], [None]),
        padding_values=(0, 0),
        drop_remainder=drop_remainder,
    )


def training_dataset(
    strings: tf.data.Dataset,
    vocab: Vocabulary,
    *,
    mode: str = "examples",
    batch_size: int = 8,
    window: int = 256,
    seed: int | None = None,
    repeat: bool = True,
    shuffle_buffer: int = 20_000,
) -> tf.data.Dataset:
    """Shuffled, cached, prefetched (inputs [B,T], targets [B,T]) int32 batches."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "examples":
        pairs = encode(strings, vocab, max_len=window).map(
            lambda x: shift(x, vocab.eos_id), num_parallel_calls=AUTOTUNE
        ).cache()
        if repeat:
            pairs = pairs.repeat()
        pairs = pairs.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        batches = _bucketed(pairs, batch_size, window, drop_remainder=False)
    else:
        eos = tf.constant([vocab.eos_id], tf.int32)
        stream = encode(strings, vocab).map(lambda x: tf.concat([x, eos], 0)).unbatch()
        # window+1 ids give `window` (input, target) pairs with no padding.
        chunks = stream.batch(window + 1, drop_remainder=True).cache()
        if repeat:
            chunks = chunks.repeat()
        chunks = chunks.shuffle(min(shuffle_buffer, 4096), seed=seed, reshuffle_each_iteration=True)
        batches = chunks.map(lambda w: (w[:-1], w[1:])).batch(batch_size, drop_remainder=True)
    return batches.prefetch(AUTOTUNE)


def eval_dataset(strings: tf.data.Dataset, vocab: Vocabulary, batch_size: int = 64, max_len: int = 1024):
    """Deterministic (inputs, targets) batches of whole examples, for evaluation."""
    pairs = encode(strings, vocab, max_len=max_len).map(
        lambda x: shift(x, vocab.eos_id), num_parallel_calls=AUTOTUNE
    )
    return _bucketed(pairs, batch_size, max_len, drop_remainder=False).cache().prefetch(AUTOTUNE)
