"""The loss and counter training uses (losses.py), against numpy: no model needed."""

import numpy as np
import tensorflow as tf

from tfchargen.training.losses import CharCount, TokenMeanCrossentropy


def numpy_token_mean(targets, logits):
    """Mean over the real (non-zero) targets of -log softmax(logits)[target]."""
    z = logits - logits.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    real = targets != 0
    return nll[real].sum() / real.sum()


def test_token_mean_ignores_padding_and_averages_over_real_targets():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 11)).astype(np.float32) * 3
    targets = rng.integers(1, 11, size=(3, 7)).astype(np.int32)
    targets[0, 5:] = 0  # rows padded by different amounts
    targets[2, 1:] = 0
    got = float(TokenMeanCrossentropy()(tf.constant(targets), tf.constant(logits)))
    np.testing.assert_allclose(got, numpy_token_mean(targets, logits.astype(np.float64)), rtol=1e-5)
    # Not the mean over rows of each row's mean: rows count by their real targets.
    row_means = np.mean([numpy_token_mean(targets[i:i + 1], logits[i:i + 1].astype(np.float64)) for i in range(3)])
    assert abs(got - row_means) > 1e-3


def test_token_mean_does_not_depend_on_the_logits_at_padding():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 6)).astype(np.float32)
    targets = np.array([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0]], np.int32)
    other = logits.copy()
    other[targets == 0] = rng.normal(size=(int((targets == 0).sum()), 6)) * 100
    loss = TokenMeanCrossentropy()
    assert float(loss(targets, logits)) == float(loss(targets, other))


def test_token_mean_of_an_all_padding_batch_is_zero():
    assert float(TokenMeanCrossentropy()(tf.zeros([2, 4], tf.int32), tf.random.normal([2, 4, 5]))) == 0.0


def test_char_count_counts_real_targets_across_updates():
    m = CharCount()
    m.update_state(tf.constant([[3, 4, 0], [5, 0, 0]]), None)
    m.update_state(tf.constant([[1, 1, 1]]), None)
    assert float(m.result()) == 6.0
    m.reset_state()
    assert float(m.result()) == 0.0
