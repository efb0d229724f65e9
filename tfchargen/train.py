"""Training: config -> run dir with vocabulary, checkpoints, TensorBoard logs, metrics.json.

Run dir layout:

    config.json             every setting of the run (plain values)
    vocab.txt               the vocabulary (see vocab.py)
    backup/                 Keras BackupAndRestore state: re-running the same command resumes
    checkpoints/epoch-NNN.weights.h5   weights after every epoch
    model.weights.h5        the final weights
    logs/                   TensorBoard (train/ from Keras, eval/ held-out nats/char)
    metrics.json            per epoch: train loss, held-out nats/bits per char, chars/second
"""

from __future__ import annotations

import json
import math
import os
import time

import keras
import tensorflow as tf

from . import evaluate, pipeline, sources
from . import model as model_lib
from .generate import Generator
from .vocab import FILENAME as VOCAB_FILE
from .vocab import Vocabulary

DEFAULTS = dict(
    train_data=sources.DEFAULT_TRAIN,
    eval_data=None,
    field="title",
    eval_field=None,
    description_chars=0,
    mode="examples",
    window=256,
    epochs=1,
    steps_per_epoch=None,
    batch_size=8,
    learning_rate=1e-3,
    schedule="constant",
    warmup_steps=0,
    weight_decay=0.0,
    clipnorm=1.0,
    ema=0.0,
    seed=0,
    cell="lstm",
    layers=1,
    units=128,
    embedding_dim=0,
    dropout=0.0,
    recurrent_dropout=0.0,
    tfds_data_dir=None,
    sample_every=1,
)

# Named recipes: flags left unset on the command line take these values.
PRESETS = {
    # The teaching example's architecture and batch: one LSTM(128) over one-hot, batch 8.
    "teaching": dict(),
    # The quality recipe for AG News titles on 2 CPU cores in about 15 minutes (README).
    "agnews-titles": dict(units=384, embedding_dim=64, dropout=0.35, batch_size=64, learning_rate=3e-3,
                          schedule="cosine", warmup_steps=200, weight_decay=0.05, epochs=15,
                          steps_per_epoch=200, sample_every=5),
    # A tiny model for smoke tests and CI.
    "tiny": dict(units=32, batch_size=32, steps_per_epoch=100, epochs=2, learning_rate=1e-2),
}

# Settings that must not change when a run is resumed: they shape the weights/vocabulary.
ARCH_KEYS = ("train_data", "field", "description_chars", "cell", "layers", "units", "embedding_dim")

SAMPLE_PROMPTS = ("Today ", "On Sunday ")
SAMPLE_TEMPERATURES = (0.0, 0.5, 1.0)


def atomic_write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CharCount(keras.metrics.Metric):
    """Counts real (non-padding) target characters: the numerator of characters/second."""

    def __init__(self, name="chars", **kwargs):
        super().__init__(name=name, **kwargs)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.count.assign_add(keras.ops.sum(keras.ops.cast(keras.ops.not_equal(y_true, 0), "float32")))

    def result(self):
        return self.count

    def reset_state(self):
        self.count.assign(0.0)


def sample_table(g: Generator, prompts=SAMPLE_PROMPTS, temperatures=SAMPLE_TEMPERATURES, seed=1,
                 max_length=60) -> list[tuple[float, str]]:
    """(temperature, text) for every prompt x temperature, from the in-graph generator."""
    rows = [(t, p) for t in temperatures for p in prompts]
    n = len(rows)
    out = g.generate(tf.constant([p for _, p in rows]), tf.fill([n], max_length),
                     tf.constant([t for t, _ in rows], tf.float32), tf.zeros([n], tf.int32),
                     tf.ones([n]), tf.range(1, n + 1, dtype=tf.int64) + 1000 * seed)
    return [(t, x.decode("utf-8")) for (t, _), x in zip(rows, out["text"].numpy())]


class RunCallback(keras.callbacks.Callback):
    """Per epoch: time, held-out metrics, metrics.json (atomic), TensorBoard, samples."""

    def __init__(self, run_dir, rnn, vocab, eval_batches, sample_every=1, log=print):
        super().__init__()
        self.run_dir, self.rnn, self.vocab = run_dir, rnn, vocab
        self.generator = Generator(rnn, vocab)
        self.eval_batches, self.sample_every, self.log = eval_batches, sample_every, log
        self.path = os.path.join(run_dir, "metrics.json")
        self.history = json.load(open(self.path)) if os.path.exists(self.path) else []
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "logs", "eval"))

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.t0
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            "train_loss": float(logs.get("loss", math.nan)),
            "train_chars": int(logs.get("chars", 0)),
            "seconds": seconds,
            "chars_per_second": float(logs.get("chars", 0)) / max(seconds, 1e-9),
        }
        if self.eval_batches is not None:
            m = evaluate.evaluate_dataset(self.model, self.eval_batches)
            row.update(eval_nats_per_char=m["nats_per_char"], eval_bits_per_char=m["bits_per_char"],
                       eval_chars=m["chars"])
            with self.writer.as_default():
                tf.summary.scalar("nats_per_char", m["nats_per_char"], step=epoch + 1)
                tf.summary.scalar("bits_per_char", m["bits_per_char"], step=epoch + 1)
            self.log(f"epoch {epoch + 1}: held-out {m['nats_per_char']:.4f} nats/char "
                     f"({m['bits_per_char']:.4f} bits/char), {row['chars_per_second']:.0f} chars/s")
        self.history = [r for r in self.history if r["epoch"] < epoch + 1] + [row]
        atomic_write_json(self.path, self.history)
        if self.sample_every and (epoch + 1) % self.sample_every == 0:
            for t, text in sample_table(self.generator, seed=epoch + 1):
                self.log(f"  T={t:<4} {text!r}")


def _optimizer(cfg, total_steps):
    lr = cfg["learning_rate"]
    if cfg["schedule"] == "cosine":
        warm = min(cfg["warmup_steps"], max(total_steps - 1, 0))
        lr = keras.optimizers.schedules.CosineDecay(
            0.0 if warm else lr, decay_steps=max(total_steps - warm, 1), alpha=0.02,
            warmup_target=lr if warm else None, warmup_steps=warm)
    elif cfg["schedule"] != "constant":
        raise ValueError(f"schedule must be constant or cosine, got {cfg['schedule']!r}")
    kw = dict(learning_rate=lr, clipnorm=cfg["clipnorm"] or None)
    if cfg["ema"]:
        kw.update(use_ema=True, ema_momentum=cfg["ema"])
    if cfg["weight_decay"]:
        return keras.optimizers.AdamW(weight_decay=cfg["weight_decay"], **kw)
    return keras.optimizers.Adam(**kw)


def load_config(run_dir: str) -> dict:
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir} is not a run dir (no config.json)")
    return json.load(open(path, encoding="utf-8"))


def prepare_run_dir(cfg: dict, run_dir: str) -> dict:
    """Writes config.json, or checks a resumed run's settings against it."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "config.json")
    if os.path.exists(path):
        old = json.load(open(path, encoding="utf-8"))
        changed = [k for k in ARCH_KEYS if old.get(k) != cfg.get(k)]
        if changed:
            raise ValueError(
                f"{run_dir} holds a run with different {', '.join(changed)}; "
                "use a new --run-dir or the same settings to resume")
    atomic_write_json(path, cfg)
    return cfg


def train(cfg: dict, run_dir: str, log=print, verbose="auto") -> dict:
    """Trains (or resumes) the run in ``run_dir``; returns the last metrics row."""
    cfg = {**DEFAULTS, **cfg}
    prepare_run_dir(cfg, run_dir)
    keras.utils.set_random_seed(cfg["seed"])
    tf.config.experimental.enable_op_determinism()

    train_text = sources.load(cfg["train_data"], cfg["field"], cfg["tfds_data_dir"], cfg["description_chars"])
    vocab_path = os.path.join(run_dir, VOCAB_FILE)
    if os.path.exists(vocab_path):
        vocab = Vocabulary(vocab_path)
    else:
        vocab = Vocabulary.build((t.decode("utf-8", "replace") for t in train_text.as_numpy_iterator()), run_dir)
    log(f"vocabulary: {vocab.size} ids ({len(vocab.chars)} characters + <pad> + <eos>)")

    eval_batches = None
    if cfg["eval_data"]:
        # A title|description run is scored on titles: the part that ends in <eos>.
        field = cfg["eval_field"] or ("title" if cfg["field"] == "title|description" else cfg["field"])
        eval_text = sources.load(cfg["eval_data"], field, cfg["tfds_data_dir"])
        eval_batches = pipeline.eval_dataset(eval_text, vocab)

    steps = cfg["steps_per_epoch"]
    if not steps:  # one pass over the data per epoch
        steps = sources.count(pipeline.training_dataset(
            train_text, vocab, mode=cfg["mode"], batch_size=cfg["batch_size"],
            window=cfg["window"], seed=cfg["seed"], repeat=False))
        if steps == 0:
            raise sources.DataError(f"{cfg['train_data']}: no training examples")
    batches = pipeline.training_dataset(
        train_text, vocab, mode=cfg["mode"], batch_size=cfg["batch_size"],
        window=cfg["window"], seed=cfg["seed"])

    rnn = model_lib.from_config(cfg, vocab.size)
    rnn.model.compile(
        optimizer=_optimizer(cfg, steps * cfg["epochs"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
        metrics=[CharCount()],
    )
    run_cb = RunCallback(run_dir, rnn, vocab, eval_batches, cfg["sample_every"], log)
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    callbacks = [
        run_cb,
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"),
                                         double_checkpoint=True, delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(
            os.path.join(run_dir, "checkpoints", "epoch-{epoch:03d}.weights.h5"), save_weights_only=True),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), update_freq="epoch"),
    ]
    rnn.model.fit(batches, epochs=cfg["epochs"], steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
    final = os.path.join(run_dir, "model.weights.h5")
    rnn.model.save_weights(final + ".tmp.weights.h5")
    os.replace(final + ".tmp.weights.h5", final)
    return run_cb.history[-1] if run_cb.history else {}


def load_trained(run_dir: str, **overrides):
    """(config, vocabulary, CharRNN with the run's final or latest weights)."""
    cfg = {**DEFAULTS, **load_config(run_dir)}
    vocab = Vocabulary(os.path.join(run_dir, VOCAB_FILE))
    rnn = model_lib.from_config(cfg, vocab.size, **overrides)
    final = os.path.join(run_dir, "model.weights.h5")
    if not os.path.exists(final):
        ckpts = sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) if os.path.isdir(
            os.path.join(run_dir, "checkpoints")) else []
        if not ckpts:
            raise FileNotFoundError(f"{run_dir} has no trained weights yet")
        final = os.path.join(run_dir, "checkpoints", ckpts[-1])
    rnn.model.load_weights(final)
    return cfg, vocab, rnn
