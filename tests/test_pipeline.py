import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import TRAIN

from tfchargen.data import pipeline, sources
from tfchargen.data.vocab import Vocabulary
from tfchargen.model import charrnn as model_lib
from tfchargen.model import fused_lstm
from tfchargen.training.losses import TokenMeanCrossentropy


@pytest.fixture(scope="module")
def vocab(tmp_path_factory, data_path):
    ds = sources.load(TRAIN)
    return Vocabulary.build((t.decode() for t in ds.as_numpy_iterator()), tmp_path_factory.mktemp("v"))


def test_targets_are_shifted_inputs_with_eos_last(vocab):
    titles = [t.decode() for t in sources.load(TRAIN).take(50).as_numpy_iterator()]
    ds = pipeline.training_dataset(sources.load(TRAIN).take(50), vocab, batch_size=8, seed=1, repeat=False)
    seen = 0
    for inputs, targets in ds:
        x, y = inputs.numpy(), targets.numpy()
        for row_x, row_y in zip(x, y):
            n = int((row_x != 0).sum())
            assert (row_x[n:] == 0).all() and (row_y[n:] == 0).all()  # padding only at the end
            assert (row_y[:n - 1] == row_x[1:n]).all() and row_y[n - 1] == vocab.eos_id
            assert vocab.decode_py(row_x[:n]) in titles
            seen += 1
    assert seen == 50


def test_examples_are_bucketed_by_length(vocab):
    ds = pipeline.training_dataset(sources.load(TRAIN), vocab, batch_size=32, seed=1, repeat=False)
    real = total = 0
    for inputs, _ in ds:
        real += int(tf.reduce_sum(tf.cast(inputs != 0, tf.int32)))
        total += int(tf.size(inputs))
    assert real / total > 0.85, f"only {real / total:.0%} of batch cells are real characters"


def test_long_examples_fill_their_batches(vocab):
    """Title + description examples (~60-256 characters) land in 16-wide length buckets:
    at most 15 padding cells per row, so batches are nearly all real characters."""
    text = sources.load(TRAIN, field="title|description")
    ds = pipeline.training_dataset(text, vocab, batch_size=32, seed=1, repeat=False)
    real = total = 0
    for inputs, _ in ds:
        real += int(tf.reduce_sum(tf.cast(inputs != 0, tf.int32)))
        total += int(tf.size(inputs))
    assert real / total > 0.95, f"only {real / total:.0%} of batch cells are real characters"


def test_windows_mode_is_a_padding_free_stream(vocab):
    ds = pipeline.training_dataset(sources.load(TRAIN).take(200), vocab, mode="windows", window=64,
                                   batch_size=4, seed=1, repeat=False)
    x, y = next(iter(ds))
    assert x.shape == (4, 64) and y.shape == (4, 64)
    assert not np.any(x.numpy() == 0) and not np.any(y.numpy() == 0)
    assert (y.numpy()[:, :-1] == x.numpy()[:, 1:]).all()
    assert np.any(x.numpy() == vocab.eos_id)  # example boundaries are marked with <eos>


def test_no_padding_reaches_the_loss(vocab):
    """One sequence alone and the same sequence padded inside a batch give the same loss."""
    keras.utils.set_random_seed(0)
    rnn = model_lib.build(vocab.size, units=16)
    rnn.model.compile(loss=TokenMeanCrossentropy())  # the loss training uses
    texts = tf.constant(["Oil prices rise", "A much longer headline about markets and oil"])
    ids = vocab.encode(texts)
    pairs = [pipeline.shift(r, vocab.eos_id) for r in ids]
    alone_x, alone_y = (t[None] for t in pairs[0])
    batch_x = tf.ragged.stack([p[0] for p in pairs]).to_tensor()
    batch_y = tf.ragged.stack([p[1] for p in pairs]).to_tensor()
    assert int(tf.reduce_sum(tf.cast(batch_x[0] == 0, tf.int32))) > 20  # really padded
    alone = rnn.model.evaluate(alone_x, alone_y, verbose=0)
    padded_row = rnn.model.evaluate(batch_x[:1], batch_y[:1], verbose=0)
    np.testing.assert_allclose(alone, padded_row, rtol=1e-6)
    # The logits of the real steps do not depend on the padding after them either.
    np.testing.assert_allclose(rnn.model(alone_x)[0], rnn.model(batch_x)[0, :alone_x.shape[1]], atol=1e-6)


@pytest.mark.parametrize("cell,layers,emb", [("lstm", 1, 0), ("gru", 2, 8), ("rnn", 2, 0), ("lstm", 3, 8)])
def test_stepping_matches_the_full_model(vocab, cell, layers, emb):
    """One character at a time with carried state gives the full model's logits, through the
    stepper model, the cells, and the cells with the gathered input table."""
    rnn = model_lib.build(vocab.size, cell=cell, num_layers=layers, units=16, embedding_dim=emb)
    for w in rnn.model.weights:  # non-zero biases, so a bias mix-up cannot hide
        w.assign(tf.random.normal(w.shape, stddev=0.3, seed=1))
    x = vocab.encode(tf.constant(["Stocks fall"])).to_tensor()
    full = rnn.model(x).numpy()
    states = rnn.zero_states(1)
    step_logits = []
    for t in range(x.shape[1]):
        out = rnn.stepper([x[:, t:t + 1], *states])
        step_logits.append(out[0])
        states = out[1:]
    np.testing.assert_allclose(np.concatenate(step_logits, 1), full, atol=1e-5)
    table = rnn.input_table()
    for tab in (None, table):
        states, logits = rnn.zero_states(1), []
        for t in range(x.shape[1]):
            lg, states = rnn.step(x[:, t], states, table=tab)
            logits.append(lg)
        np.testing.assert_allclose(np.stack(logits, 1), full, atol=1e-5)


@pytest.mark.parametrize("layers,emb,initial", [(1, 0, False), (2, 8, True)])
def test_fused_lstm_trains_exactly_like_keras(vocab, layers, emb, initial):
    """fused_lstm.py's hand-written forward and backward give Keras' LSTM outputs,
    gradients and final states, on real titles padded to different lengths in one batch."""
    keras_rnn = model_lib.build(vocab.size, units=24, num_layers=layers, embedding_dim=emb, fused=False)
    fused_rnn = model_lib.build(vocab.size, units=24, num_layers=layers, embedding_dim=emb, fused=True)
    for a, b in zip(keras_rnn.model.weights, fused_rnn.model.weights):
        a.assign(tf.random.normal(a.shape, stddev=0.3, seed=2))
        b.assign(a)
    titles = sources.load(TRAIN).take(5)
    x = vocab.encode(tf.constant(list(titles.as_numpy_iterator()))).to_tensor()  # ragged -> padded
    lengths = tf.reduce_sum(tf.cast(x != 0, tf.int32), axis=1)
    assert len(set(lengths.numpy().tolist())) > 1 and x.shape[1] > fused_lstm.PAD_STEPS
    y = tf.where(x != 0, tf.roll(x, -1, axis=1), 0)
    states = [tf.random.normal([5, 24], seed=i) for i in range(2 * layers)] if initial else None

    def run(rnn):
        with tf.GradientTape() as tape:
            out = rnn.stepper([x, *(states or rnn.zero_states(5))], training=True)
            nll = tf.nn.sparse_softmax_cross_entropy_with_logits(y, out[0])
            loss = tf.reduce_sum(tf.where(y != 0, nll, 0.0)) + sum(tf.reduce_sum(s * 0.1) for s in out[1:])
        return out, [tf.convert_to_tensor(g) for g in tape.gradient(loss, rnn.model.trainable_weights)]

    (k_out, k_grads), (f_out, f_grads) = run(keras_rnn), run(fused_rnn)
    real = (x != 0)[..., None]
    np.testing.assert_allclose(tf.where(real, f_out[0], 0), tf.where(real, k_out[0], 0), atol=2e-5)
    for k, f in zip(k_out[1:], f_out[1:]):  # each row's states after its own last character
        np.testing.assert_allclose(f, k, atol=2e-5)
    for w, k, f in zip(keras_rnn.model.trainable_weights, k_grads, f_grads):
        np.testing.assert_allclose(f, k, atol=5e-5, err_msg=w.path)


def test_weight_drop_is_dropconnect_on_the_recurrent_kernel(vocab):
    """With weight_drop the fused LSTM trains as Keras' LSTM whose recurrent kernel is R * m / (1 - p)
    for one mask m per batch (AWD-LSTM's weight-drop); inference uses R itself."""
    p = 0.5
    dropped = model_lib.build(vocab.size, units=16, fused=True, weight_drop=p)
    plain = model_lib.build(vocab.size, units=16, fused=False)
    for a in dropped.model.weights:
        a.assign(tf.random.normal(a.shape, stddev=0.3, seed=4))
    x = vocab.encode(tf.constant(list(sources.load(TRAIN).take(4).as_numpy_iterator()))).to_tensor()
    recurrent = dropped.rnns[0].cell.recurrent_kernel
    with tf.GradientTape() as tape:
        out = dropped.model(x, training=True)
        loss = tf.reduce_sum(tf.where((x != 0)[..., None], out, 0.0) ** 2)
    kept = tf.cast(tape.gradient(loss, recurrent) != 0, tf.float32)  # dropped entries get no gradient
    assert 0.4 < float(tf.reduce_mean(kept)) < 0.6
    for a, b in zip(dropped.model.weights, plain.model.weights):
        b.assign(a)
    plain.rnns[0].cell.recurrent_kernel.assign(recurrent * kept / (1 - p))
    real = (x != 0)[..., None]
    np.testing.assert_allclose(tf.where(real, out, 0), tf.where(real, plain.model(x), 0), atol=2e-5)
    for a, b in zip(dropped.model.weights, plain.model.weights):
        b.assign(a)
    np.testing.assert_allclose(dropped.model(x, training=False), plain.model(x), atol=1e-6)
    with pytest.raises(ValueError, match="weight_drop needs the fused"):
        model_lib.build(vocab.size, units=16, fused=False, weight_drop=p).model(x, training=True)


def test_fused_lstm_refuses_padding_before_characters(vocab):
    rnn = model_lib.build(vocab.size, units=16, fused=True)
    left_padded = tf.constant([[0, 0, 5, 6, 7], [5, 6, 7, 8, 9]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="padding after the characters"):
        rnn.model(left_padded, training=True)
    rnn.model(left_padded, training=False)  # inference takes Keras' masked path: fine
