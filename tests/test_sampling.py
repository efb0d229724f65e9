"""The sampling pieces (sampling.py) on their own, and swapped into a Generator: no trained
model needed (an untrained one has a real distribution to sample from)."""

import numpy as np
import pytest
import tensorflow as tf

from tfchargen import model as model_lib
from tfchargen.generate import Generator
from tfchargen.sampling import NEG_INF, Categorical, TopK, TopP, apply_filters, seeded_gumbel
from tfchargen.vocab import Vocabulary


def random_log_probs(rows, vocab, seed):
    logits = np.random.default_rng(seed).normal(size=(rows, vocab)).astype(np.float32) * 2
    return tf.nn.log_softmax(logits)


def test_top_k_keeps_the_k_most_likely_of_each_row():
    lp = random_log_probs(4, 9, seed=1)
    k = np.array([1, 3, 0, 20], np.int32)
    kept = np.isfinite(TopK()(lp, {"top_k": tf.constant(k)}).numpy())
    order = np.argsort(-lp.numpy(), axis=1)
    for row, kk in enumerate(k):
        want = set(order[row, :kk]) if 0 < kk < 9 else set(range(9))  # 0 = off, k > V = all
        assert set(np.flatnonzero(kept[row])) == want, row


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    lp = random_log_probs(5, 8, seed=2)
    p = np.array([0.05, 0.3, 0.6, 0.95, 1.0], np.float32)
    kept = np.isfinite(TopP()(lp, {"top_p": tf.constant(p)}).numpy())
    probs = np.exp(lp.numpy())
    for row, pp in enumerate(p):
        order = np.argsort(-probs[row])
        before = np.concatenate([[0.0], np.cumsum(probs[row][order])[:-1]])
        want = set(order[before < pp]) if pp < 1 else set(range(8))
        assert set(np.flatnonzero(kept[row])) == want, row


def test_top_p_renormalizes_over_what_top_k_kept():
    lp = tf.math.log([[0.4, 0.3, 0.2, 0.1]])
    controls = {"top_k": tf.constant([2]), "top_p": tf.constant([0.5])}
    # Over the top 2 the first holds 0.4/0.7 > 0.5 of the mass: it alone is kept.
    out = apply_filters([TopK(), TopP()], lp, controls)
    assert np.isfinite(out.numpy()).tolist() == [[True, False, False, False]]
    # Without top-k, 0.4 < 0.5 of the whole: the first two are kept.
    out = apply_filters([TopP()], lp, controls)
    assert np.isfinite(out.numpy()).tolist() == [[True, True, False, False]]


def test_filters_without_active_always_run_and_inactive_ones_pass_through():
    lp = random_log_probs(3, 6, seed=3)
    off = {"top_k": tf.zeros([3], tf.int32), "top_p": tf.ones([3])}
    np.testing.assert_array_equal(apply_filters([TopK(), TopP()], lp, off).numpy(), lp.numpy())
    ban_first = lambda log_probs, controls: tf.concat(  # noqa: E731
        [tf.fill([tf.shape(log_probs)[0], 1], NEG_INF), log_probs[:, 1:]], axis=1)
    assert np.isneginf(apply_filters([ban_first], lp, off).numpy()[:, 0]).all()


def test_categorical_greedy_takes_the_argmax_and_never_draws_excluded():
    lp = tf.tile(random_log_probs(1, 7, seed=4), [6, 1])
    filtered = TopK()(lp, {"top_k": tf.fill([6], 2)})
    controls = {"temperature": tf.constant([0.0, 0.0, 1.0, 1.0, 3.0, 3.0]),
                "seed": tf.constant([0, 5, 0, 5, 0, 5], tf.int64)}
    for step in range(20):
        ids = Categorical()(filtered, controls, step).numpy()
        assert ids[0] == ids[1] == np.argmax(lp.numpy()[0])  # temperature 0: seed ignored
        assert np.isfinite(filtered.numpy()[np.arange(6), ids]).all()


def test_seeded_draws_are_reproducible_and_independent_of_the_other_rows():
    lp = random_log_probs(1, 10, seed=5)
    alone = Categorical()(lp, {"temperature": tf.constant([1.0]), "seed": tf.constant([42], tf.int64)}, 3)
    batch_lp = tf.concat([random_log_probs(3, 10, seed=6), lp], axis=0)
    together = Categorical()(batch_lp, {"temperature": tf.constant([0.5, 1.0, 2.0, 1.0]),
                                        "seed": tf.constant([1, 0, 9, 42], tf.int64)}, 3)
    assert int(alone[0]) == int(together[3])


def test_seeded_draws_follow_the_tempered_distribution():
    n, t = 20000, 0.7
    p = np.array([0.5, 0.25, 0.15, 0.1], np.float32)
    lp = tf.math.log(tf.tile(p[None], [n, 1]))
    ids = Categorical()(lp, {"temperature": tf.fill([n], t), "seed": tf.range(1, n + 1, dtype=tf.int64)}, 0)
    freq = np.bincount(ids.numpy(), minlength=4) / n
    want = p ** (1 / t) / (p ** (1 / t)).sum()
    np.testing.assert_allclose(freq, want, atol=0.015)


def test_seeded_gumbel_is_standard_gumbel():
    g = seeded_gumbel(tf.range(1, 2001, dtype=tf.int64), 0, 50).numpy()
    assert abs(g.mean() - np.euler_gamma) < 0.02 and abs(g.std() - np.pi / np.sqrt(6)) < 0.02
    assert not np.array_equal(seeded_gumbel(tf.constant([3], tf.int64), 0, 50).numpy(),
                              seeded_gumbel(tf.constant([3], tf.int64), 1, 50).numpy())  # a new draw per step


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    vocab = Vocabulary.build(["abcdefgh ABC"], str(tmp_path_factory.mktemp("vocab")))
    tf.keras.utils.set_random_seed(0)
    return model_lib.build(vocab.size, units=16), vocab


def generate(g, n=4, temperature=1.0, top_k=0, top_p=1.0):
    return g.generate(tf.constant(["ab"] * n), tf.fill([n], 30), tf.fill([n], temperature),
                      tf.fill([n], top_k), tf.fill([n], top_p), tf.range(1, n + 1, dtype=tf.int64))


def test_generator_takes_any_list_of_filters(untrained):
    rnn, vocab = untrained
    default = generate(Generator(rnn, vocab))
    none = generate(Generator(rnn, vocab, filters=[]))
    assert list(default["text"].numpy()) == list(none["text"].numpy())  # top_k 0, top_p 1: filters off

    banned = vocab.chars.index("a") + 1

    class NoA:
        """A filter of its own: bans "a" (always active)."""

        def active(self, controls):
            return tf.reduce_any(controls["top_k"] >= 0)

        def __call__(self, log_probs, controls):
            return tf.where(tf.range(vocab.size)[None, :] == banned, NEG_INF, log_probs)

    out = generate(Generator(rnn, vocab, filters=[NoA(), TopK()]), n=8, temperature=2.0)
    continuations = [c.decode() for c in out["continuation"].numpy()]
    assert "".join(continuations) and all("a" not in c for c in continuations)
