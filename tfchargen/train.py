"""Training: config -> run dir with vocabulary, checkpoints, TensorBoard logs, metrics.json.

Run dir layout:

    config.json             every setting of the run (plain values)
    vocab.txt               the vocabulary (see vocab.py)
    backup/                 Keras BackupAndRestore state: re-running the same command resumes
    checkpoints/epoch-NNN.weights.h5   weights after every epoch
    model.weights.h5        the final weights
    logs/                   TensorBoard (train/ from Keras, eval/ held-out nats/char)
    metrics.json            per epoch: train loss, held-out nats/bits per char, chars/second,
                            the strategy and number of replicas that trained the epoch

Under a tf.distribute strategy (distribute.py) only the chief writes the run dir; other
workers write the same files to a temporary directory that is deleted at the end.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from . import distribute, evaluate, pipeline, sources
from . import model as model_lib
from .generate import Generator
from .vocab import FILENAME as VOCAB_FILE
from .vocab import Vocabulary
from .config import ARCH_KEYS, DEFAULTS, MODEL_KEYS

SAMPLE_PROMPTS = ("Today ", "On Sunday ")
SAMPLE_TEMPERATURES = (0.0, 0.5, 1.0)


def atomic_write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TokenMeanCrossentropy(keras.losses.Loss):
    """Cross-entropy (from logits) averaged over the real targets of the *global* batch.

    Keras' own ``ignore_class`` loss averages over each replica's real targets and then over
    replicas, which weights characters differently whenever replicas hold different amounts
    of padding. Here each replica divides its summed loss by the all-reduced count of real
    targets, so the summed gradients are exactly those of one device over the whole batch.
    (Keras divides a "sum"-reduced loss by nothing, and sums gradients over replicas.)
    """

    def __init__(self, name="token_mean_crossentropy", **kwargs):
        super().__init__(name=name, reduction="sum", **kwargs)

    def call(self, y_true, y_pred):
        labels = tf.cast(y_true, tf.int32)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=y_pred)
        real = tf.cast(labels != 0, nll.dtype)
        count = tf.reduce_sum(real)
        ctx = tf.distribute.get_replica_context()  # None while Keras builds in cross-replica context
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
        return nll * real / tf.maximum(count, 1.0)


class CharCount(keras.metrics.Metric):
    """Counts real (non-padding) target characters: the numerator of characters/second.

    Keras averages metric results over replicas; the result is scaled by the replica count
    so that the average is the global number of characters.
    """

    def __init__(self, name="chars", **kwargs):
        super().__init__(name=name, **kwargs)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.count.assign_add(keras.ops.sum(keras.ops.cast(keras.ops.not_equal(y_true, 0), "float32")))

    def result(self):
        return self.count * float(tf.distribute.get_strategy().num_replicas_in_sync)

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

    def __init__(self, run_dir, rnn, vocab, eval_batches, sample_every=1, log=print, extra=None):
        super().__init__()
        self.run_dir, self.rnn, self.vocab, self.extra = run_dir, rnn, vocab, dict(extra or {})
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
            **self.extra,
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


def _replicated() -> bool:
    ctx = tf.distribute.get_replica_context()
    return ctx is not None and ctx.num_replicas_in_sync > 1


class _ClipSummedGradients:
    """Under a strategy, clips the all-reduced gradients, as one device would.

    Keras 3 clips (``clipnorm``) each replica's share of the gradient before it sums the
    shares over replicas; a share is not the gradient, so that clips something else than
    training on one device does. This clips after the sum instead.
    """

    def _clip_gradients(self, grads):
        return grads if _replicated() else super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        reduced = super()._all_reduce_sum_gradients(grads_and_vars)
        if not _replicated():
            return reduced
        clipped = super()._clip_gradients([g for g, _ in reduced])
        return [(g, v) for g, (_, v) in zip(clipped, reduced)]


class Adam(_ClipSummedGradients, keras.optimizers.Adam):
    pass


class AdamW(_ClipSummedGradients, keras.optimizers.AdamW):
    pass


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
        return AdamW(weight_decay=cfg["weight_decay"], **kw)
    return Adam(**kw)


def load_config(run_dir: str) -> dict:
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir} is not a run dir (no config.json)")
    return json.load(open(path, encoding="utf-8"))


def prepare_run_dir(cfg: dict, run_dir: str, write: bool = True) -> dict:
    """Writes config.json, or checks a resumed run's settings against it (``write=False``:
    check only, as a non-chief worker does)."""
    if write:
        os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "config.json")
    if os.path.exists(path):
        old = json.load(open(path, encoding="utf-8"))
        changed = [k for k in ARCH_KEYS if old.get(k) != cfg.get(k)]
        if changed:
            raise ValueError(
                f"{run_dir} holds a run with different {', '.join(changed)}; "
                "use a new --run-dir or the same settings to resume")
    if write:
        atomic_write_json(path, cfg)
    return cfg


def _all_sum(strategy: tf.distribute.Strategy, values: list[float]) -> list[float]:
    """Sums ``values`` over all replicas of all workers (every worker must call it)."""
    x = tf.constant(values, tf.float64)
    summed = tf.function(lambda: strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(x)), axis=None))()
    return [float(v) for v in summed.numpy()]


class WorkerBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore for every worker of a multi-worker run.

    Writes to its own ``backup_dir`` but restores from ``read_dir`` (the chief's backup, on a
    filesystem every worker can read), so all workers resume from the same epoch and weights;
    with ``strategy`` (multi-worker) the restored epoch is checked to agree across workers.
    """

    def __init__(self, backup_dir, read_dir=None, strategy=None, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.read_dir, self.strategy = read_dir, strategy

    def on_train_begin(self, logs=None):
        if self.read_dir and os.path.abspath(self.read_dir) != os.path.abspath(self.backup_dir):
            os.makedirs(self.backup_dir, exist_ok=True)
            for name in ("latest.weights.h5", "training_metadata.json",
                         "latest.weights.h5.bkp", "training_metadata.json.bkp"):
                if os.path.exists(os.path.join(self.read_dir, name)):
                    shutil.copyfile(os.path.join(self.read_dir, name), os.path.join(self.backup_dir, name))
        super().on_train_begin(logs)
        if self.strategy is not None:
            # All replicas restored the same epoch e iff n * sum(e^2) == sum(e)^2 (Cauchy-Schwarz).
            e = float(getattr(self.model, "_initial_epoch", None) or 0)
            total, squares = _all_sum(self.strategy, [e, e * e])
            if self.strategy.num_replicas_in_sync * squares != total * total:
                raise ValueError(
                    f"workers restored different epochs (this one {int(e)}): the run dir's backup/ must be "
                    "on a filesystem every worker can read (or start a new --run-dir)")


def _patch_for_multi_worker(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Works around two Keras 3 bugs with MultiWorkerMirroredStrategy (keras-team/keras#20585),
    on this model instance only:

    * before training, ``fit`` reduces a whole (inputs, targets) batch with ``strategy.reduce``,
      which CollectiveAllReduceStrategy cannot do for a structure; the batch only gives the
      model its input shapes, so Keras gets the first local replica's batch instead;
    * ``fit`` averages each step's metrics over replicas with ``reduce("MEAN", axis=0)``,
      which fails for scalars; the step returns them as [1] vectors, whose mean over the
      replicas is the same average Keras computes under MirroredStrategy.
    """
    build, step = model._maybe_symbolic_build, model.train_step

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, next(it))
                break
        return build(data_batch=data_batch)

    def train_step(data):
        return tf.nest.map_structure(lambda v: tf.reshape(v, [1]), step(data))

    model._maybe_symbolic_build, model.train_step = maybe_symbolic_build, train_step


def _training_batches(setup: distribute.Setup, train_text, vocab, cfg):
    """The training input: a tf.data.Dataset, or under a strategy a distributed dataset in
    which every input pipeline (one per worker) reads its own shard of the examples.

    ``--batch-size`` is the global batch. A pipeline builds batches of its share
    (global / pipelines) exactly as one device would, then splits each into per-replica
    slices of consecutive rows; on one machine (one pipeline) the replicas of a step thus
    hold the rows of the very batch the default strategy would train on.
    """
    kw = dict(mode=cfg["mode"], window=cfg["window"], seed=cfg["seed"])
    if setup.name == "default":
        return pipeline.training_dataset(train_text, vocab, batch_size=cfg["batch_size"], **kw)
    global_batch = cfg["batch_size"]

    def dataset_fn(ctx: tf.distribute.InputContext):
        per_replica = ctx.get_per_replica_batch_size(global_batch)
        per_pipeline = global_batch // ctx.num_input_pipelines
        text = train_text
        if ctx.num_input_pipelines > 1:  # shard examples (rows) before anything is batched
            text = text.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)

        # Built inside flat_map so that every new iterator starts the same shuffled sequence:
        # Keras takes one batch from a first iterator to build the model under a strategy,
        # then trains from a second one, which a reshuffling dataset would order differently.
        @tf.autograph.experimental.do_not_convert
        def build(_):
            return pipeline.training_dataset(text, vocab, batch_size=per_pipeline, **kw)

        ds = tf.data.Dataset.range(1).flat_map(build)
        if per_replica != per_pipeline:
            ds = ds.rebatch(per_replica)
        return ds.prefetch(tf.data.AUTOTUNE)

    return setup.strategy.distribute_datasets_from_function(dataset_fn)


def train(cfg: dict, run_dir: str, log=print, verbose="auto") -> dict:
    """Trains (or resumes) the run in ``run_dir``; returns the last metrics row (a non-chief
    worker of a multi-worker run returns ``{"chief": False, ...}`` and writes nothing there)."""
    cfg = {**DEFAULTS, **cfg}
    cfg["devices"] = distribute.parse_devices(cfg["devices"])
    # First of all: MultiWorkerMirroredStrategy must set up the runtime before TF runs anything.
    setup = distribute.make(cfg["strategy"], cfg["devices"])
    if setup.name in ("default", "mirrored") and distribute.tf_config().get("cluster"):
        log(f"note: TF_CONFIG is set but --strategy is {setup.name}: this process trains on its own")
    if cfg["batch_size"] % setup.num_replicas:
        raise ValueError(f"--batch-size {cfg['batch_size']} (the global batch) must be a multiple of "
                         f"the {setup.num_replicas} replicas")
    prepare_run_dir(cfg, run_dir, write=setup.is_chief)
    out_dir = run_dir if setup.is_chief else tempfile.mkdtemp(prefix=f"tfchargen-{setup.task_type}{setup.task_id}-")
    try:
        return _train(cfg, run_dir, out_dir, setup, log, verbose)
    finally:
        if out_dir != run_dir:
            shutil.rmtree(out_dir, ignore_errors=True)


def _init_from(cfg) -> str:
    """Checks ``--init-from``'s run against this one; returns the weights file to start from."""
    src = cfg["init_from"]
    old = {**DEFAULTS, **load_config(src)}
    changed = [f"{k} {old[k]!r} there, {cfg[k]!r} here" for k in MODEL_KEYS if old[k] != cfg[k]]
    if changed:
        raise ValueError(f"--init-from {src}: a different model ({'; '.join(changed)})")
    return _weights_file(src)


def steps_per_execution(cfg, steps_per_epoch, strategy_name):
    """Keras' steps_per_execution: N train steps per call, so Python's per-step cost (~4 ms,
    half of a batch-8 step) is paid once per N. Keras rounds an epoch up to a multiple of
    N, so N divides the epoch's steps (exact step counts and schedules); 1 under
    tf.distribute strategies, whose multi-worker path patches Keras' train step."""
    n = int(cfg["steps_per_execution"])
    if n < 1:
        raise ValueError(f"steps_per_execution must be >= 1, got {n}")
    return math.gcd(n, steps_per_epoch) if strategy_name == "default" else 1


def _train(cfg, run_dir, out_dir, setup, log, verbose):
    """``run_dir`` is read (vocabulary, backup to resume from); everything is written to
    ``out_dir``: the run dir on the chief, a temporary directory on other workers."""
    keras.utils.set_random_seed(cfg["seed"])
    tf.config.experimental.enable_op_determinism()
    if setup.name != "default":
        log(f"strategy {setup.name}: {setup.num_replicas} replicas, {setup.num_workers} worker(s), "
            f"this is {setup.task}{' (chief)' if setup.is_chief else ''}")

    train_text = sources.load(cfg["train_data"], cfg["field"], cfg["tfds_data_dir"], cfg["description_chars"], cfg["bad_rows"])
    vocab_path = os.path.join(run_dir, VOCAB_FILE)
    init_weights = _init_from(cfg) if cfg["init_from"] else None
    if os.path.exists(vocab_path):
        vocab = Vocabulary(vocab_path)
    elif init_weights:  # the weights index the old run's vocabulary: keep it
        os.makedirs(out_dir, exist_ok=True)
        shutil.copyfile(os.path.join(cfg["init_from"], VOCAB_FILE), os.path.join(out_dir, VOCAB_FILE) + ".tmp")
        os.replace(os.path.join(out_dir, VOCAB_FILE) + ".tmp", os.path.join(out_dir, VOCAB_FILE))
        vocab = Vocabulary(os.path.join(out_dir, VOCAB_FILE))
    else:
        vocab = Vocabulary.build((t.decode("utf-8", "replace") for t in train_text.as_numpy_iterator()), out_dir)
    log(f"vocabulary: {vocab.size} ids ({len(vocab.chars)} characters + <pad> + <eos>)")

    eval_batches = None
    if cfg["eval_data"] and setup.is_chief:  # the chief scores the whole held-out set itself
        # A title|description run is scored on titles: the part that ends in <eos>.
        field = cfg["eval_field"] or ("title" if cfg["field"] == "title|description" else cfg["field"])
        eval_text = sources.load(cfg["eval_data"], field, cfg["tfds_data_dir"], bad_rows=cfg["bad_rows"])
        eval_batches = pipeline.eval_dataset(eval_text, vocab)

    steps = cfg["steps_per_epoch"]
    if not steps:  # one pass over the data per epoch
        steps = sources.count(pipeline.training_dataset(
            train_text, vocab, mode=cfg["mode"], batch_size=cfg["batch_size"],
            window=cfg["window"], seed=cfg["seed"], repeat=False))
        if steps == 0:
            raise sources.DataError(f"{cfg['train_data']}: no training examples")
    batches = _training_batches(setup, train_text, vocab, cfg)

    with setup.strategy.scope():  # variables (model, optimizer, metrics) mirrored on every replica
        fused = model_lib.use_fused(cfg["fused_lstm"], cfg["cell"], cfg["batch_size"] // setup.num_replicas,
                                    cfg["units"], cfg["weight_drop"],
                                    one_hot=cfg["embedding_dim"] <= 0 and not cfg["dropout"])
        if cfg["weight_drop"] and cfg["cell"] == "lstm" and (
                not fused or cfg["recurrent_dropout"] or tf.config.list_logical_devices("GPU")):
            raise ValueError(model_lib.WEIGHT_DROP_NEEDS_FUSED)
        rnn = model_lib.from_config(cfg, vocab.size, fused=fused)
        if init_weights:  # a resumed run then restores its own backup over these (BackupAndRestore)
            rnn.model.load_weights(init_weights)
        rnn.model.compile(
            optimizer=_optimizer(cfg, steps * cfg["epochs"]),
            loss=TokenMeanCrossentropy(),
            metrics=[CharCount()],
            steps_per_execution=steps_per_execution(cfg, steps, setup.name),
        )
    if setup.name == "multi-worker":
        _patch_for_multi_worker(rnn.model, setup.strategy)
    callbacks = []
    run_cb = None
    if setup.is_chief:
        run_cb = RunCallback(run_dir, rnn, vocab, eval_batches, cfg["sample_every"], log,
                             extra={"strategy": setup.name, "num_replicas": setup.num_replicas})
        callbacks.append(run_cb)
    os.makedirs(os.path.join(out_dir, "checkpoints"), exist_ok=True)
    callbacks += [
        WorkerBackupAndRestore(os.path.join(out_dir, "backup"), read_dir=os.path.join(run_dir, "backup"),
                               strategy=setup.strategy if setup.num_workers > 1 else None,
                               double_checkpoint=True, delete_checkpoint=False),
        AtomicEpochCheckpoint(os.path.join(out_dir, "checkpoints")),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), update_freq="epoch"),
    ]
    rnn.model.fit(batches, epochs=cfg["epochs"], steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
    final = os.path.join(out_dir, "model.weights.h5")
    rnn.model.save_weights(final + ".tmp.weights.h5")
    os.replace(final + ".tmp.weights.h5", final)
    if not setup.is_chief:
        return {"chief": False, "task": setup.task, "strategy": setup.name, "num_replicas": setup.num_replicas}
    return run_cb.history[-1] if run_cb.history else {}


EPOCH_CKPT = re.compile(r"epoch-\d{3,}\.weights\.h5")


class AtomicEpochCheckpoint(keras.callbacks.Callback):
    """checkpoints/epoch-NNN.weights.h5 after every epoch, written aside then renamed.

    Keras' ModelCheckpoint writes in place, so a kill mid-write leaves a truncated newest
    checkpoint; here a kill leaves at most a ``.tmp-*`` file, which nothing reads.
    """

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch, logs=None):
        final = os.path.join(self.directory, f"epoch-{epoch + 1:03d}.weights.h5")
        tmp = os.path.join(self.directory, f".tmp-{os.getpid()}.weights.h5")
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, final)


def load_trained(run_dir: str, **overrides):
    """(config, vocabulary, CharRNN with the run's final or latest weights)."""
    cfg = {**DEFAULTS, **load_config(run_dir)}
    vocab = Vocabulary(os.path.join(run_dir, VOCAB_FILE))
    rnn = model_lib.from_config(cfg, vocab.size, **overrides)
    rnn.model.load_weights(_weights_file(run_dir))
    return cfg, vocab, rnn


def _weights_file(run_dir: str) -> str:
    """The run's final weights, else its newest epoch checkpoint."""
    final = os.path.join(run_dir, "model.weights.h5")
    if os.path.exists(final):
        return final
    ckpts = sorted(n for n in os.listdir(os.path.join(run_dir, "checkpoints"))
                   if EPOCH_CKPT.fullmatch(n)) if os.path.isdir(os.path.join(run_dir, "checkpoints")) else []
    if not ckpts:
        raise FileNotFoundError(f"{run_dir} has no trained weights yet")
    return os.path.join(run_dir, "checkpoints", ckpts[-1])
