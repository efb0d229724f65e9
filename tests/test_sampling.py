"""The sampling pieces (sampling.py) on their own, and swapped into a Generator: no trained
model needed (an untrained one has a real distribution to sample from)."""

import numpy as np
import pytest
import tensorflow as tf

from tfchargen.data.vocab import Vocabulary
from tfchargen.generation.generator import ControlTensors, Generator
from tfchargen.generation.sampling import (
    NEG_INF,
    Categorical,
    TopK,
    TopP,
    apply_filters,
    inverse_cdf,
    row_key,
    seeded_uniform,
)
from tfchargen.model import charrnn as model_lib


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


def chi_square(counts, probs):
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# The 0.999 quantiles of chi-square with 3 and 5 degrees of freedom: a correct sampler fails
# for one set of seeds in a thousand, a biased one (a wrong temperature, an off-by-one id)
# for nearly all of them.
CHI2_999 = {3: 16.27, 5: 20.52}


def test_seeded_draws_follow_the_tempered_distribution():
    n, t = 20000, 0.7
    p = np.array([0.5, 0.25, 0.15, 0.1], np.float32)
    lp = tf.math.log(tf.tile(p[None], [n, 1]))
    ids = Categorical()(lp, {"temperature": tf.fill([n], t), "seed": tf.range(1, n + 1, dtype=tf.int64)}, 0)
    want = p ** (1 / t) / (p ** (1 / t)).sum()
    assert chi_square(np.bincount(ids.numpy(), minlength=4), want) < CHI2_999[3]


def test_one_seeded_row_over_its_steps_follows_the_filtered_distribution():
    # One row, one seed, 20000 steps: the draws along a stream, with excluded ids between
    # the kept ones and at both ends (top-k keeps 6 of 9).
    n, t = 20000, 1.5
    lp = random_log_probs(1, 9, seed=7)
    filtered = TopK()(lp, {"top_k": tf.constant([6])})
    controls = {"temperature": tf.fill([n], t), "seed": tf.fill([n], tf.constant(12345, tf.int64))}
    ids = Categorical()(tf.tile(filtered, [n, 1]), controls, tf.range(n)).numpy()
    kept = np.isfinite(filtered.numpy()[0])
    assert kept[ids].all()  # -inf is never drawn
    scaled = np.where(kept, filtered.numpy()[0] / t, -np.inf)
    want = np.exp(scaled - scaled.max())
    want /= want.sum()
    counts = np.bincount(ids, minlength=9)
    assert chi_square(counts[kept], want[kept]) < CHI2_999[5]


def test_seeded_uniform_is_uniform_and_new_at_every_step():
    key = row_key(tf.range(1, 50001, dtype=tf.int64))
    u = seeded_uniform(key, 0).numpy()
    assert u.min() > 0 and u.max() <= 1
    assert chi_square(np.bincount((u * 6).astype(int).clip(0, 5), minlength=6), np.full(6, 1 / 6)) < CHI2_999[5]
    steps = seeded_uniform(tf.fill([50000], row_key(tf.constant([3], tf.int64))[0]), tf.range(50000)).numpy()
    assert len(np.unique(steps)) > 49000  # one seed's uniforms over its steps: not a short cycle
    assert abs(steps.mean() - 0.5) < 0.01


def test_inverse_cdf_edges_never_give_an_excluded_id():
    inf = np.inf
    scaled = tf.constant([[-inf, 0.0, -inf, 0.0, -inf],  # excluded at both ends and between
                          [-inf, -inf, -inf, -inf, 3.0],  # one id left, the last
                          [2.0, 2.0, 2.0, 2.0, 2.0],      # all equal
                          [0.0, -200.0, -inf, -inf, -inf]])  # a mass that underflows to 0
    for u in [2.0 ** -24, 0.25, 0.5, 0.5 + 2.0 ** -24, 1 - 2.0 ** -24, 1.0]:
        ids = inverse_cdf(scaled, tf.fill([4], u)).numpy()
        assert np.isfinite(scaled.numpy()[np.arange(4), ids]).all(), u
        assert ids[1] == 4 and ids[3] == 0 and ids[0] in (1, 3), u
        assert ids[2] == min(int(np.ceil(u * 5)) - 1, 4), u  # equal masses: equal intervals
    assert inverse_cdf(scaled, tf.fill([4], 1.0)).numpy()[0] == 3  # u = 1: the last id with mass


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    vocab = Vocabulary.build(["abcdefgh ABC"], str(tmp_path_factory.mktemp("vocab")))
    tf.keras.utils.set_random_seed(0)
    return model_lib.build(vocab.size, units=16), vocab


def generate(g, n=4, temperature=1.0, top_k=0, top_p=1.0):
    return g.generate(tf.constant(["ab"] * n), ControlTensors(tf.fill([n], 30), tf.fill([n], temperature),
                                                              tf.fill([n], top_k), tf.fill([n], top_p),
                                                              tf.range(1, n + 1, dtype=tf.int64)))


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


@pytest.mark.parametrize("jit_compile", [False, True])
def test_seeded_row_alone_and_in_a_batch_of_64_draw_the_same_ids(jit_compile):
    # 200 steps of the sampler on its own, eager-like graph and XLA alike.
    lp = random_log_probs(64, 30, seed=8)
    controls = {"temperature": tf.constant(np.linspace(0.3, 2.0, 64), tf.float32),
                "seed": tf.constant(np.arange(64) * 7919 + 3, tf.int64)}
    draw = tf.function(lambda lp, t, s, step: Categorical()(lp, {"temperature": t, "seed": s}, step),
                       jit_compile=jit_compile)
    row = 37
    for step in range(200):
        together = draw(lp, controls["temperature"], controls["seed"], tf.constant(step)).numpy()
        alone = draw(lp[row:row + 1], controls["temperature"][row:row + 1], controls["seed"][row:row + 1],
                     tf.constant(step)).numpy()
        assert alone[0] == together[row], step


@pytest.mark.parametrize("jit_compile", [False, True])
def test_generator_seeded_row_alone_and_in_a_batch_of_64_give_the_same_text(untrained, jit_compile):
    rnn, vocab = untrained
    g = Generator(rnn, vocab, jit_compile=jit_compile)
    n, row = 64, 21
    prompts = [f"ab{'c' * (i % 5)}" for i in range(n)]
    temperature = np.linspace(0.5, 1.5, n).astype(np.float32)
    seeds = np.arange(1, n + 1, dtype=np.int64) * 104729
    args = lambda sl: (tf.constant(prompts[sl]), ControlTensors(  # noqa: E731
        tf.fill([len(prompts[sl])], 200), tf.constant(temperature[sl]), tf.zeros([len(prompts[sl])], tf.int32),
        tf.ones([len(prompts[sl])]), tf.constant(seeds[sl])))
    together = g.generate(*args(slice(None)))
    alone = g.generate(*args(slice(row, row + 1)))
    assert together["text"].numpy()[row] == alone["text"].numpy()[0]
    assert together["log_prob"].numpy()[row] == pytest.approx(alone["log_prob"].numpy()[0], abs=1e-4)


class PerStep(Categorical):
    """Categorical without lean plans: every batch runs the general step."""

    def plans(self, controls):
        return []


def loop_ops(g, controls):
    """The op types of each decoding loop's body (those holding LogSoftmax; the prompt pass
    is a loop too) in the generate graph for ``controls``' shapes."""
    fn = tf.function(lambda p, c: g.generate(p, c), autograph=False)
    graph = fn.get_concrete_function(tf.constant(["ab"]), controls).graph.as_graph_def()
    lib = {f.signature.name: f for f in graph.library.function}
    bodies = [n.attr["body"].func.name for f in lib.values() for n in f.node_def if n.op in ("While", "StatelessWhile")]
    ops = [{n.op for n in lib[b].node_def} for b in bodies]
    return [o for o in ops if "LogSoftmax" in o]


@pytest.mark.parametrize("kind", ["greedy", "greedy top-k", "seeded", "unseeded", "mixed", "seeded top-p"])
def test_lean_loops_give_the_general_steps_ids(untrained, kind):
    """A batch whose rows all ask for one kind of draw runs a loop chosen once per call;
    its ids, log-probs and endings are those of the general step, row for row."""
    rnn, vocab = untrained
    n = 6
    temperature = {"greedy": 0.0, "greedy top-k": 0.0}.get(kind, 1.3)
    seed = tf.zeros([n], tf.int64) if kind == "unseeded" else tf.range(1, n + 1, dtype=tf.int64)
    controls = ControlTensors(tf.constant([40, 0, 1, 17, 40, 40]), tf.fill([n], temperature),
                              tf.fill([n], 3 if kind == "greedy top-k" else 0),
                              tf.fill([n], 0.8 if kind == "seeded top-p" else 1.0), seed)
    if kind == "mixed":  # greedy and seeded rows: the general step
        controls = controls._replace(temperature=tf.constant([0.0, 1.0, 1.0, 0.5, 0.0, 2.0]),
                                     seed=tf.constant([0, 3, 9, 4, 5, 6], tf.int64))
    prompts = tf.constant(["ab", "", "abc", "h", "ABC ab", "ba"])
    lean, general = (Generator(rnn, vocab, sampler=s).generate(prompts, controls) for s in (Categorical(), PerStep()))
    if kind == "unseeded":  # fresh entropy per call: each row within its own max_length
        for out in (lean, general):
            chars, ended = out["num_chars"].numpy(), out["ended_with_eos"].numpy()
            assert chars[1] == 0 and chars[2] <= 1 and (chars <= controls.max_length.numpy()).all()
            assert all(c == m or e for c, m, e in zip(chars, controls.max_length.numpy(), ended))
        return
    for key in ("text", "num_chars", "ended_with_eos", "log_prob"):
        assert list(lean[key].numpy()) == list(general[key].numpy()), key


def test_the_lean_loops_hold_no_per_step_branches(untrained):
    """The general step branches (If) on each filter and kind of draw at every step; the lean
    loops decide once, before looping."""
    rnn, vocab = untrained
    one = ControlTensors(tf.constant([5]), tf.constant([1.0]), tf.constant([0]), tf.constant([1.0]),
                         tf.constant([1], tf.int64))
    bodies = loop_ops(Generator(rnn, vocab), one)
    branching = [ops & {"If", "StatelessIf"} for ops in bodies]
    assert len(bodies) == 4 and sum(1 for b in branching if not b) == 3  # greedy, seeded, unseeded
    per_step = loop_ops(Generator(rnn, vocab, sampler=PerStep()), one)  # the general step alone
    assert len(per_step) == 1 and per_step[0] & {"If", "StatelessIf"}
