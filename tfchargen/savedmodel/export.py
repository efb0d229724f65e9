"""Export: a trained run -> a versioned SavedModel that TF Serving and the C API can load.

    EXPORT_BASE/
      1/  2/  ...           one SavedModel per version (the layout TF Serving watches)
      .tmp-*                a version being written; renamed to N only once it is whole

Signatures (every input and output batched on dimension 0):

    serving_default(prompt)                          defaults baked in at export
    generate(prompt, max_length, temperature, top_k, top_p, seed)
        -> text, continuation, num_chars, ended_with_eos, log_prob
    score(text) -> nats_per_char, log_prob, num_chars
    start(the inputs of generate) -> generate's outputs + state_bytes
    continue(state_bytes, max_length, temperature, top_k, top_p, seed) -> the same

Built with keras.export.ExportArchive (tf.saved_model.save of a tf.Module holding a
Keras 3 model does not load in the session-based loader). Every export is checked in
that loader before it becomes visible.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # no public disable_op_determinism

from tfchargen import contract
from tfchargen.common import files
from tfchargen.contract import Controls
from tfchargen.generation import generator as gen_lib
from tfchargen.generation.generator import ControlTensors
from tfchargen.savedmodel import locate
from tfchargen.savedmodel import warmup as warmup_lib
from tfchargen.training import rundir

VERSION_DIR_PREFIX = files.TMP_PREFIX

@contextlib.contextmanager
def without_op_determinism():
    """Op determinism off inside, restored after: an export traced under it (``tfchargen
    train`` enables it, then exports) would make unseeded sampling draw from the training
    seed in every process that loads the model (generate.unseeded_draw), and the session
    check could not run the self-seeding kernel. Seeded rows do not depend on it."""
    was = tf_config.is_op_determinism_enabled()
    tf_config.disable_op_determinism()
    try:
        yield
    finally:
        if was:
            tf.config.experimental.enable_op_determinism()


def input_signature(name: str) -> list[tf.TensorSpec]:
    """The [B] TensorSpecs of a signature's inputs, in order (contract.SIGNATURES)."""
    return [tf.TensorSpec([None], tf.as_dtype(dtype), name=key)
            for key, dtype in contract.SIGNATURES[name][0].items()]


def signature_functions(g: gen_lib.Generator, defaults: Controls = Controls()):
    """The endpoints as tf.functions with input signatures (autograph off); ``defaults``
    (scalars; None = the serving default) are baked into ``serving_default``."""

    @tf.function(input_signature=input_signature("generate"), autograph=False)
    def generate(prompt, max_length, temperature, top_k, top_p, seed):
        return g.generate(prompt, ControlTensors(max_length, temperature, top_k, top_p, seed))

    @tf.function(input_signature=input_signature("serving_default"), autograph=False)
    def serving_default(prompt):
        return g.generate(prompt, ControlTensors(**{
            name: tf.fill(tf.shape(prompt), tf.constant(value, tf.as_dtype(contract.CONTROL_DTYPES[name])))
            for name, value in defaults.resolved().items()}))

    @tf.function(input_signature=input_signature("score"), autograph=False)
    def score(text):
        return g.score(text)

    @tf.function(input_signature=input_signature("start"), autograph=False)
    def start(prompt, max_length, temperature, top_k, top_p, seed):
        return g.start(prompt, ControlTensors(max_length, temperature, top_k, top_p, seed))

    @tf.function(input_signature=input_signature("continue"), autograph=False)
    def continue_(state_bytes, max_length, temperature, top_k, top_p, seed):
        return g.continue_(state_bytes, ControlTensors(max_length, temperature, top_k, top_p, seed))

    return {"serving_default": serving_default, "generate": generate, "score": score, "start": start,
            "continue": continue_}


def session_loader_check(path: str) -> None:
    """Loads ``path`` the way TF Serving and the C API do (graph + session) and runs
    every signature once; raises if anything fails."""
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        feeds = {"prompt": [b"Today ", b""], "max_length": [3, 0], "temperature": [0.0, 1.0],
                 "top_k": [0, 5], "top_p": [1.0, 0.9], "seed": [1, 0], "text": [b"Today", b""]}
        for name in contract.SIGNATURES:  # `continue` after `start`: it takes start's states
            sig = meta.signature_def[name]
            fetch = {k: v.name for k, v in sig.outputs.items()}
            feed = {v.name: feeds[k] for k, v in sig.inputs.items()}
            out = sess.run(fetch, feed)
            if any(len(v) != 2 for v in out.values()):
                raise RuntimeError(f"signature {name} returned malformed outputs: {out}")
            if contract.STATE in out:
                feeds[contract.STATE] = out[contract.STATE]


def export(run_dir: str, export_base: str, jit_compile: bool = False, log=print,
           defaults: Controls = Controls()) -> str:
    """Exports the run's model as the next version under ``export_base``; returns its path.
    ``defaults``: serving_default's controls (scalars); a value out of range is a ValueError
    with the contract's message."""
    defaults.check()
    with without_op_determinism():
        return _export(run_dir, export_base, jit_compile, log, defaults)


def _export(run_dir, export_base, jit_compile, log, defaults) -> str:
    # A model trained on GPU may carry cuDNN-only ops: export from a non-cuDNN copy.
    _, vocab, rnn = rundir.load_trained(run_dir, use_cudnn=False)
    g = gen_lib.Generator(rnn, vocab, jit_compile=jit_compile)
    fns = signature_functions(g, defaults)

    archive = keras.export.ExportArchive()
    archive.track(rnn.model)
    archive.track(rnn.stepper)
    archive.track(vocab)  # the lookup tables and their asset file (vocab.txt)
    for name, fn in fns.items():
        archive.add_endpoint(name, fn)

    os.makedirs(export_base, exist_ok=True)
    tmp = os.path.join(export_base, f"{VERSION_DIR_PREFIX}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        archive.write_out(tmp, verbose=False)
        warmup_lib.write_warmup(tmp, start=fns["start"])  # TF Serving's assets.extra/tf_serving_warmup_requests
        session_loader_check(tmp)
        while True:  # the next free version; rename is atomic, so a server never sees half
            version = (locate.versions(export_base) or [0])[-1] + 1
            final = os.path.join(export_base, str(version))
            try:
                os.rename(tmp, final)
                break
            except OSError:
                if not os.path.exists(final):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"exported {final}")
    return final
