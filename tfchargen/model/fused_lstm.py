"""The LSTM's training kernel: one XLA-compiled loop forward, one backward.

Keras runs an LSTM on CPU as a tf.while_loop of ~20 small TensorFlow ops per timestep,
each paying the executor's per-op cost, and its gradient as a second loop that pops
per-op accumulators. At small batches that overhead, not the matmuls, sets the training
speed, whatever the model size. Here the recurrence is
written once, forward and backward by hand (``tf.custom_gradient``), and each loop is
compiled by XLA, which fuses a timestep's gate math into a couple of kernels:

    forward   z_t = xw_t + h_{t-1} @ R;  i, f, g, o = sig, sig, tanh, sig (z_t);
              c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)
    backward  the same steps in reverse; dR = sum_t h_{t-1}^T dz_t as one matmul after it

Same math and gate order (i, f, c, o) as keras.layers.LSTM with its default activations;
tests/test_pipeline.py checks outputs and gradients against it. The input projection
``xw = x @ kernel + bias`` is one matmul over all timesteps, outside the loop; for one-hot
inputs (``ids``) it is a row gather, and its kernel gradient a segment sum of dz by id
(the one-hot matmul and its gradient would multiply mostly zeros), compiled by XLA.

The time axis is padded to a multiple of PAD_STEPS (zeros after the data), so bucketed
batches of many lengths share a few compilations; the loops stop at the real length. dR
and the matmul projection run in TensorFlow on the real length, unpadded; the gathered
projection on the padded axis, so its XLA gradient also compiles once per bucket.
"""

from __future__ import annotations

import tensorflow as tf

PAD_STEPS = 16  # larger wastes padded steps at small batches; smaller compiles more loops (two per bucket)


def _columns(units):
    """Per gate column (i, f, g, o): the scale s in s tanh(s z) + 1 - s, which is sigmoid for
    s = 1/2 and tanh for s = 1, and whether the column is g (tanh)."""
    scale = tf.concat([tf.fill([2 * units], 0.5), tf.ones([units]), tf.fill([units], 0.5)], 0)
    return scale, scale > 0.75


def _activate(z, scale):
    """All four gates of z [B, 4U] with one tanh. XLA on CPU runs this as one kernel;
    split-then-activate runs as four, and per-kernel cost dominates a small batch's step."""
    return scale * tf.tanh(z * scale) + (1.0 - scale)


@tf.function(jit_compile=True, autograph=False)
def _forward(xw, h0, c0, recurrent, steps):
    """xw [Tp, B, 4U] time-major -> hs, cs [Tp, B, U] and the gates [Tp, B, 4U] (zeros
    after ``steps``)."""
    size = tf.shape(xw)[0]
    hs = tf.TensorArray(xw.dtype, size=size, element_shape=h0.shape)
    cs = tf.TensorArray(xw.dtype, size=size, element_shape=h0.shape)
    acts = tf.TensorArray(xw.dtype, size=size, element_shape=xw.shape[1:])

    scale, _ = _columns(h0.shape[-1])

    def body(t, h, c, hs, cs, acts):
        a = _activate(xw[t] + tf.matmul(h, recurrent), scale)
        i, f, g, o = tf.split(a, 4, axis=-1)
        c = f * c + i * g
        h = o * tf.tanh(c)
        return t + 1, h, c, hs.write(t, h), cs.write(t, c), acts.write(t, a)

    for_ = (tf.constant(0), h0, c0, hs, cs, acts)
    _, _, _, hs, cs, acts = tf.while_loop(lambda t, *_: t < steps, body, for_, maximum_iterations=size)
    return hs.stack(), cs.stack(), acts.stack()


@tf.function(jit_compile=True, autograph=False)
def _backward(dhs, dcs, hs, cs, acts, h0, c0, recurrent, steps):
    """Gradients of the forward pass: dxw [Tp, B, 4U] (zeros after ``steps``), dh0, dc0."""
    size = tf.shape(hs)[0]
    dzs = tf.TensorArray(hs.dtype, size=size, element_shape=acts.shape[1:])
    recurrent_t = tf.transpose(recurrent)
    c_prev_all = tf.concat([c0[None], cs[:-1]], 0)

    _, is_g = _columns(h0.shape[-1])

    def body(t, dh, dc, dzs):  # t = steps - 1 down to 0
        a = acts[t]
        i, f, g, o = tf.split(a, 4, axis=-1)
        tc = tf.tanh(cs[t])
        dh = dh + dhs[t]
        dc = dc + dcs[t] + dh * o * (1.0 - tc * tc)
        dz = tf.concat([dc * g, dc * c_prev_all[t], dc * i, dh * tc], -1) * tf.where(is_g, 1.0 - a * a, a * (1.0 - a))
        return t - 1, tf.matmul(dz, recurrent_t), dc * f, dzs.write(t, dz)

    # The loop's own counter is the time index, counting down from steps - 1 (a runtime
    # value): an index computed from ``steps`` and an upward counter makes XLA treat ``steps``
    # as a compile-time constant, one compilation per sequence length.
    init = (steps - 1, tf.zeros_like(h0), tf.zeros_like(c0), dzs)
    _, dh0, dc0, dzs = tf.while_loop(lambda t, *_: t >= 0, body, init, maximum_iterations=size)
    return dzs.stack(), dh0, dc0


@tf.custom_gradient
def _sequence(xw, h0, c0, recurrent, steps):
    # The tape must not trace into the XLA function (its own gradient would need the loop's
    # TensorLists to cross the XLA boundary): the gradient is grad() below.
    xw, h0, c0, recurrent = (tf.stop_gradient(t) for t in (xw, h0, c0, recurrent))
    hs, cs, acts = _forward(xw, h0, c0, recurrent, steps)

    def grad(dhs, dcs):
        dhs = tf.zeros_like(hs) if dhs is None else dhs
        dcs = tf.zeros_like(cs) if dcs is None else dcs
        dxw, dh0, dc0 = _backward(dhs, dcs, hs, cs, acts, h0, c0, recurrent, steps)
        # dR over the real steps only, outside XLA: TF's matmul is faster here than XLA's
        # dot, and XLA would have to take all Tp padded steps.
        units = h0.shape[-1]
        h_prev = tf.concat([h0[None], hs[:tf.maximum(steps - 1, 0)]], 0)[:steps]
        drec = tf.matmul(tf.reshape(h_prev, [-1, units]), tf.reshape(dxw[:steps], [-1, 4 * units]),
                         transpose_a=True)
        return dxw, dh0, dc0, drec, None

    return (hs, cs), grad


@tf.function(jit_compile=True, autograph=False)
def _projection_grads(dxw, ids, rows):
    """The gathered projection's kernel and bias gradients: a segment sum of dxw [Tp, B, 4U]
    by id into ``rows`` rows, and its plain sum, in one XLA call: XLA's scatter-add and reduce
    are much cheaper than TF's CPU kernels for the same two ops (docs/design.md)."""
    flat = tf.reshape(dxw, [-1, dxw.shape[-1]])
    dkernel = tf.math.unsorted_segment_sum(flat, tf.reshape(ids, [-1]), rows)
    return dkernel, tf.reduce_sum(dkernel, 0)  # every row lands in one segment


@tf.custom_gradient
def _gathered_projection(kernel, bias, ids):
    """one_hot(ids) @ kernel + bias as a row gather, ids [Tp, B] -> [Tp, B, 4U]. The gradient
    is dense (a segment sum of dz by id): a sparse one cost more than the matmul it saved."""
    def grad(dxw):
        dkernel, dbias = _projection_grads(dxw, ids, kernel.shape[0])
        return dkernel, dbias, None

    return tf.gather(kernel + bias, ids), grad  # the bias added once per vocabulary row, not at every position


def lstm(x, h0, c0, kernel, recurrent, bias, lengths, ids=None):
    """A whole LSTM sequence with Keras' weights: x [B, T, I] -> outputs [B, T, U] and the
    states (h, c) after each row's last real step (``lengths`` [B]; padding after them).
    ``ids`` [B, T]: x is one_hot(ids), so the input projection gathers kernel rows."""
    batch, steps = tf.shape(x)[0], tf.shape(x)[1]
    padded = (steps + PAD_STEPS - 1) // PAD_STEPS * PAD_STEPS
    if ids is not None:
        # Gathered on the padded axis (the loops never read past the data; the gradient there
        # is zero), so its XLA gradient compiles once per bucket, not once per length.
        ids = tf.pad(tf.transpose(ids), [[0, padded - steps], [0, 0]])
        xw = _gathered_projection(tf.convert_to_tensor(kernel), tf.convert_to_tensor(bias), ids)
    else:
        xw = tf.einsum("bti,ig->tbg", x, kernel) + bias
        xw = tf.pad(xw, [[0, padded - steps], [0, 0], [0, 0]])  # [Tp, B, 4U], zeros after the data
    run = tf.reduce_max(tf.concat([lengths, [0]], 0))  # no row needs the steps after this
    hs, cs = _sequence(xw, h0, c0, tf.convert_to_tensor(recurrent), run)  # a read, not the variable
    outputs = tf.transpose(hs[:steps], [1, 0, 2])
    last = tf.stack([tf.maximum(lengths - 1, 0), tf.range(batch)], axis=1)
    had = (lengths > 0)[:, None]
    return outputs, tf.where(had, tf.gather_nd(hs, last), h0), tf.where(had, tf.gather_nd(cs, last), c0)
