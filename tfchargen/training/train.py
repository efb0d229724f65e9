"""Training: config -> run dir with vocabulary, checkpoints, TensorBoard logs, metrics.json.

The run dir's layout is rundir.py's. The pieces of a run live in their own modules: the
loss and character counter (losses.py), the optimizer (optimizers.py), the callbacks
(callbacks.py), the tf.distribute strategy (distribute.py); this module puts them together.

Under a tf.distribute strategy (distribute.py) only the chief writes the run dir; other
workers write the same files to a temporary directory that is deleted at the end.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from tfchargen.common import files
from tfchargen.config import DEFAULTS, MODEL_KEYS, use_fused
from tfchargen.data import pipeline, sources
from tfchargen.data.vocab import Vocabulary
from tfchargen.model import charrnn as model_lib
from tfchargen.training import distribute, rundir
from tfchargen.training.callbacks import (
    AtomicEpochCheckpoint,
    Progress,
    RunCallback,
    WorkerBackupAndRestore,
    progress_verbosity,
)
from tfchargen.training.losses import CharCount, TokenMeanCrossentropy
from tfchargen.training.optimizers import make_optimizer


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
    rundir.prepare_run_dir(cfg, run_dir, write=setup.is_chief)
    out_dir = run_dir if setup.is_chief else tempfile.mkdtemp(prefix=f"tfchargen-{setup.task_type}{setup.task_id}-")
    try:
        return _train(cfg, run_dir, out_dir, setup, log, verbose)
    finally:
        if out_dir != run_dir:
            shutil.rmtree(out_dir, ignore_errors=True)


def _init_from(cfg) -> str:
    """Checks ``--init-from``'s run against this one; returns the weights file to start from."""
    src = cfg["init_from"]
    old = {**DEFAULTS, **rundir.load_config(src)}
    changed = [f"{k} {old[k]!r} there, {cfg[k]!r} here" for k in MODEL_KEYS if old[k] != cfg[k]]
    if changed:
        raise ValueError(f"--init-from {src}: a different model ({'; '.join(changed)})")
    return rundir.weights_file(src)


def steps_per_execution(cfg, steps_per_epoch, strategy_name):
    """Keras' steps_per_execution: N train steps per call, so Python's per-step cost (a
    large share of a small batch's step) is paid once per N. Keras rounds an epoch up to a
    multiple of N, so N divides the epoch's steps (exact step counts and schedules); 1 under
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

    train_text = sources.load(cfg["train_data"], cfg["field"], cfg["tfds_data_dir"], cfg["description_chars"],
                              cfg["bad_rows"])
    init_weights = _init_from(cfg) if cfg["init_from"] else None
    vocab = _vocabulary(cfg, run_dir, out_dir, train_text, init_weights)
    log(f"vocabulary: {vocab.size} ids ({len(vocab.chars)} characters + <pad> + <eos>)")
    eval_batches = _eval_batches(cfg, vocab) if cfg["eval_data"] and setup.is_chief else None
    steps = _steps_per_epoch(cfg, train_text, vocab)
    batches = _training_batches(setup, train_text, vocab, cfg)
    rnn = _compiled_model(cfg, setup, vocab, steps, init_weights)
    verbose = progress_verbosity(verbose)
    callbacks, run_cb = _callbacks(cfg, setup, run_dir, out_dir, rnn, vocab, eval_batches, log, verbose)
    rnn.model.fit(batches, epochs=cfg["epochs"], steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
    with files.atomic_path(rundir.path(out_dir, rundir.FINAL_WEIGHTS)) as tmp:
        rnn.model.save_weights(tmp)
    if not setup.is_chief:
        return {"chief": False, "task": setup.task, "strategy": setup.name, "num_replicas": setup.num_replicas}
    return run_cb.history[-1] if run_cb.history else {}


def _vocabulary(cfg, run_dir, out_dir, train_text, init_weights) -> Vocabulary:
    """The run's vocabulary: a resumed run's own, an ``--init-from`` run's (its weights index
    it), else built from the training text; a new one is written to ``out_dir``."""
    if os.path.exists(rundir.path(run_dir, rundir.VOCAB)):
        return rundir.load_vocab(run_dir)
    if init_weights:
        with files.atomic_path(rundir.path(out_dir, rundir.VOCAB)) as tmp:
            shutil.copyfile(rundir.path(cfg["init_from"], rundir.VOCAB), tmp)
        return rundir.load_vocab(out_dir)
    return Vocabulary.build((t.decode("utf-8", "replace") for t in train_text.as_numpy_iterator()), out_dir)


def _eval_batches(cfg, vocab):
    """The held-out set, batched for evaluation; the chief scores all of it itself."""
    # A title|description run is scored on titles: the part that ends in <eos>.
    field = cfg["eval_field"] or ("title" if cfg["field"] == "title|description" else cfg["field"])
    eval_text = sources.load(cfg["eval_data"], field, cfg["tfds_data_dir"], bad_rows=cfg["bad_rows"])
    return pipeline.eval_dataset(eval_text, vocab)


def _steps_per_epoch(cfg, train_text, vocab) -> int:
    """``steps_per_epoch``, or the batches of one pass over the training data."""
    if cfg["steps_per_epoch"]:
        return cfg["steps_per_epoch"]
    steps = sources.count(pipeline.training_dataset(
        train_text, vocab, mode=cfg["mode"], batch_size=cfg["batch_size"],
        window=cfg["window"], seed=cfg["seed"], repeat=False))
    if steps == 0:
        raise sources.DataError(f"{cfg['train_data']}: no training examples")
    return steps


def _compiled_model(cfg, setup: distribute.Setup, vocab, steps, init_weights):
    """The CharRNN, compiled under the strategy (its variables mirrored on every replica)."""
    with setup.strategy.scope():
        fused = use_fused(cfg["fused_lstm"], cfg["cell"], cfg["batch_size"] // setup.num_replicas,
                          cfg["units"], cfg["weight_drop"],
                          one_hot=cfg["embedding_dim"] <= 0 and not cfg["dropout"])
        if cfg["weight_drop"] and cfg["cell"] == "lstm" and (
                not fused or cfg["recurrent_dropout"] or tf.config.list_logical_devices("GPU")):
            raise ValueError(model_lib.WEIGHT_DROP_NEEDS_FUSED)
        rnn = model_lib.from_config(cfg, vocab.size, fused=fused)
        if init_weights:  # a resumed run then restores its own backup over these (BackupAndRestore)
            rnn.model.load_weights(init_weights)
        rnn.model.compile(
            optimizer=make_optimizer(cfg, steps * cfg["epochs"]),
            loss=TokenMeanCrossentropy(),
            metrics=[CharCount()],
            steps_per_execution=steps_per_execution(cfg, steps, setup.name),
        )
    if setup.name == "multi-worker":
        distribute.patch_for_multi_worker(rnn.model, setup.strategy)
    return rnn


def _callbacks(cfg, setup: distribute.Setup, run_dir, out_dir, rnn, vocab, eval_batches, log, verbose):
    """(the callbacks of fit, the RunCallback that keeps the metrics: None off the chief)."""
    # Order matters at the end of an epoch: the bar ends its line, then the summary and
    # metrics.json are written, then the backup (a kill in between retrains the epoch).
    callbacks = [Progress()] if verbose else []
    run_cb = None
    if setup.is_chief:
        run_cb = RunCallback(run_dir, rnn, vocab, eval_batches, cfg["sample_every"], log,
                             extra={"strategy": setup.name, "num_replicas": setup.num_replicas})
        callbacks.append(run_cb)
    os.makedirs(rundir.path(out_dir, rundir.CHECKPOINTS), exist_ok=True)
    callbacks += [
        WorkerBackupAndRestore(rundir.path(out_dir, rundir.BACKUP), read_dir=rundir.path(run_dir, rundir.BACKUP),
                               strategy=setup.strategy if setup.num_workers > 1 else None,
                               log=log if setup.is_chief else None,
                               double_checkpoint=True, delete_checkpoint=False),
        AtomicEpochCheckpoint(rundir.path(out_dir, rundir.CHECKPOINTS)),
        keras.callbacks.TensorBoard(rundir.path(out_dir, rundir.LOGS), update_freq="epoch"),
    ]
    return callbacks, run_cb
