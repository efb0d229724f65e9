"""The Keras callbacks of a training run: per-epoch metrics and samples, checkpoints that
are never half-written, resuming on every worker, and a progress display fit for a log file.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time

import keras
import tensorflow as tf

from tfchargen.common import files
from tfchargen.contract import Controls
from tfchargen.generation.generator import ControlTensors, Generator
from tfchargen.training import distribute, evaluate, rundir

SAMPLE_PROMPTS = ("Today ", "On Sunday ")
SAMPLE_TEMPERATURES = (0.0, 0.5, 1.0)


def sample_table(g: Generator, prompts=SAMPLE_PROMPTS, temperatures=SAMPLE_TEMPERATURES, seed=1,
                 max_length=60) -> list[tuple[float, str]]:
    """(temperature, text) for every prompt x temperature, from the in-graph generator.

    Every row is seeded (``1000 * seed + row``), so a table is reproducible and draws
    nothing from TensorFlow's global random state (training stays the same with or
    without samples).
    """
    rows = [(t, p) for t in temperatures for p in prompts]
    n = len(rows)
    controls = Controls(max_length=max_length, temperature=[t for t, _ in rows], top_k=0, top_p=1.0,
                        seed=[1000 * seed + row for row in range(1, n + 1)])
    out = g.generate(tf.constant([p for _, p in rows]), ControlTensors.of(controls, n))
    return [(t, x.decode("utf-8")) for (t, _), x in zip(rows, out["text"].numpy())]


def should_sample(epoch: int, epochs: int, sample_every: int) -> bool:
    """Samples after every ``sample_every``-th epoch and after the last one; 0 = never.

    >>> [e for e in range(1, 8) if should_sample(e, 7, 3)]
    [3, 6, 7]
    >>> [e for e in range(1, 8) if should_sample(e, 7, 0)]
    []
    """
    return bool(sample_every) and (epoch % sample_every == 0 or epoch == epochs)


class RunCallback(keras.callbacks.Callback):
    """Per epoch: time, held-out metrics, metrics.json (atomic), TensorBoard, a summary
    line and samples (``should_sample``).

    Args:
        run_dir: where metrics.json and logs/eval go.
        rnn: the CharRNN being trained (samples come from its weights as they are).
        vocab: its Vocabulary.
        eval_batches: held-out (inputs, targets) batches, or None.
        sample_every: see ``should_sample``.
        log: prints one line.
        extra: values added to every metrics row.
    """

    def __init__(self, run_dir, rnn, vocab, eval_batches, sample_every=1, log=print, extra=None):
        super().__init__()
        self.run_dir, self.rnn, self.vocab, self.extra = run_dir, rnn, vocab, dict(extra or {})
        self.generator = Generator(rnn, vocab)
        self.eval_batches, self.sample_every, self.log = eval_batches, sample_every, log
        self.path = rundir.path(run_dir, rundir.METRICS)
        self.history = rundir.load_metrics(run_dir)
        self.writer = tf.summary.create_file_writer(rundir.path(run_dir, rundir.LOGS, "eval"))

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
        summary = (f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, {row['train_chars']} chars, "
                   f"{row['chars_per_second']:.0f} chars/s")
        if self.eval_batches is not None:
            m = evaluate.evaluate_dataset(self.model, self.eval_batches)
            row.update(eval_nats_per_char=m["nats_per_char"], eval_bits_per_char=m["bits_per_char"],
                       eval_chars=m["chars"])
            with self.writer.as_default():
                tf.summary.scalar("nats_per_char", m["nats_per_char"], step=epoch + 1)
                tf.summary.scalar("bits_per_char", m["bits_per_char"], step=epoch + 1)
            summary += f"; held-out {m['nats_per_char']:.4f} nats/char ({m['bits_per_char']:.4f} bits/char)"
        self.history = [r for r in self.history if r["epoch"] < epoch + 1] + [row]
        files.atomic_write_json(self.path, self.history)
        self.log(summary)
        if should_sample(epoch + 1, self.params.get("epochs", epoch + 1), self.sample_every):
            for t, text in sample_table(self.generator, seed=epoch + 1):
                self.log(f"  T={t:<4} {text!r}")


class Progress(keras.callbacks.ProgbarLogger):
    """Keras' progress bar without the character counter (metrics.json and the epoch
    summary report it as a count and chars/s; the bar would print it as a float).

    Placed before RunCallback, so the bar's last update ends its line before the summary.
    """

    HIDDEN = ("chars",)

    def _update_progbar(self, batch, logs=None):
        super()._update_progbar(batch, {k: v for k, v in (logs or {}).items() if k not in self.HIDDEN})

    def _finalize_progbar(self, logs):
        super()._finalize_progbar({k: v for k, v in (logs or {}).items() if k not in self.HIDDEN})


def progress_verbosity(verbose="auto", stream=None) -> int:
    """Keras' ``verbose`` for ``fit``: "auto" is the live bar (1) on a terminal, else one
    plain line per epoch (2: no carriage returns or colours in a log file)."""
    if verbose != "auto":
        return verbose
    stream = stream or sys.stdout
    return 1 if hasattr(stream, "isatty") and stream.isatty() else 2


class AtomicEpochCheckpoint(keras.callbacks.Callback):
    """checkpoints/epoch-NNN.weights.h5 after every epoch, written aside then renamed.

    Keras' ModelCheckpoint writes in place, so a kill mid-write leaves a truncated newest
    checkpoint; here a kill leaves at most a ``.tmp-*`` file, which nothing reads.

    Args:
        directory: the checkpoints directory.
    """

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch, logs=None):
        with files.atomic_path(os.path.join(self.directory, rundir.checkpoint_name(epoch + 1))) as tmp:
            self.model.save_weights(tmp, overwrite=True)


class WorkerBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore for every worker of a multi-worker run.

    Writes to its own ``backup_dir`` but restores from ``read_dir`` (the chief's backup, on a
    filesystem every worker can read), so all workers resume from the same epoch and weights;
    with ``strategy`` (multi-worker) the restored epoch is checked to agree across workers.

    Args:
        backup_dir: where this worker writes its backup.
        read_dir: the backup to restore from (default ``backup_dir``).
        strategy: a multi-worker strategy, or None.
        log: when given, says which epoch a resumed run continues after.
        **kwargs: keras.callbacks.BackupAndRestore's.
    """

    FILES = ("latest.weights.h5", "training_metadata.json", "latest.weights.h5.bkp", "training_metadata.json.bkp")

    def __init__(self, backup_dir, read_dir=None, strategy=None, log=None, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.read_dir, self.strategy, self.log = read_dir, strategy, log

    def on_train_begin(self, logs=None):
        if self.read_dir and os.path.abspath(self.read_dir) != os.path.abspath(self.backup_dir):
            os.makedirs(self.backup_dir, exist_ok=True)
            for name in self.FILES:
                if os.path.exists(os.path.join(self.read_dir, name)):
                    shutil.copyfile(os.path.join(self.read_dir, name), os.path.join(self.backup_dir, name))
        super().on_train_begin(logs)
        e = int(getattr(self.model, "_initial_epoch", None) or 0)  # set by BackupAndRestore
        if self.strategy is not None:
            # All replicas restored the same epoch e iff n * sum(e^2) == sum(e)^2 (Cauchy-Schwarz).
            total, squares = distribute.all_sum(self.strategy, [float(e), float(e * e)])
            if self.strategy.num_replicas_in_sync * squares != total * total:
                raise ValueError(
                    f"workers restored different epochs (this one {e}): the run dir's backup/ must be "
                    "on a filesystem every worker can read (or start a new --run-dir)")
        if e and self.log:
            epochs = self.params.get("epochs")
            done = "; nothing left to train" if epochs is not None and e >= epochs else ""
            self.log(f"resuming after epoch {e}{done}")
