"""A run dir: its layout, reading it back, and the one way every file in it is written.

    config.json             every setting of the run (plain values; config.py)
    vocab.txt               the vocabulary (vocab.py)
    backup/                 Keras BackupAndRestore state: re-running the same command resumes
    checkpoints/epoch-NNN.weights.h5   weights after every epoch
    model.weights.h5        the final weights
    logs/                   TensorBoard (train/ from Keras, eval/ held-out nats/char)
    metrics.json            per epoch: train loss, held-out nats/bits per char, chars/second,
                            the strategy and number of replicas that trained the epoch

Every file is written aside (a ``.tmp-*`` name in the same directory), flushed to disk and
renamed over its final name, so a reader or a killed run never sees half a file; nothing
reads ``.tmp-*`` names.
"""

from __future__ import annotations

import json
import os
import re

from tfchargen.common.files import atomic_write_json
from tfchargen.data.vocab import FILENAME as VOCAB
from tfchargen.data.vocab import Vocabulary

CONFIG = "config.json"
BACKUP = "backup"
CHECKPOINTS = "checkpoints"
FINAL_WEIGHTS = "model.weights.h5"
LOGS = "logs"
METRICS = "metrics.json"
EPOCH_CHECKPOINT = re.compile(r"epoch-(\d{3,})\.weights\.h5")


def path(run_dir, *names) -> str:
    """A path inside the run dir.

    >>> path("runs/a", CHECKPOINTS, checkpoint_name(7))
    'runs/a/checkpoints/epoch-007.weights.h5'
    """
    return os.path.join(os.fspath(run_dir), *names)


def checkpoint_name(epoch: int) -> str:
    """The file name of the weights after ``epoch`` (1-based)."""
    return f"epoch-{epoch:03d}.weights.h5"


def load_config(run_dir) -> dict:
    """The run's config.json as saved (callers merge config.DEFAULTS under it)."""
    p = path(run_dir, CONFIG)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{run_dir} is not a run dir (no {CONFIG})")
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def load_metrics(run_dir) -> list[dict]:
    """The rows of metrics.json, one per finished epoch ([] before the first)."""
    p = path(run_dir, METRICS)
    if not os.path.exists(p):
        return []
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def checkpoints(run_dir) -> list[str]:
    """The epoch checkpoints' paths, oldest first."""
    d = path(run_dir, CHECKPOINTS)
    if not os.path.isdir(d):
        return []
    return [os.path.join(d, n) for n in sorted(os.listdir(d)) if EPOCH_CHECKPOINT.fullmatch(n)]


def has_trained(run_dir) -> bool:
    """True once any epoch finished: the run has weights (or metrics) worth protecting."""
    return bool(os.path.exists(path(run_dir, FINAL_WEIGHTS)) or checkpoints(run_dir)
                or load_metrics(run_dir) or os.path.exists(path(run_dir, BACKUP, "training_metadata.json")))


def weights_file(run_dir) -> str:
    """The run's final weights, else its newest epoch checkpoint."""
    final = path(run_dir, FINAL_WEIGHTS)
    if os.path.exists(final):
        return final
    ckpts = checkpoints(run_dir)
    if not ckpts:
        raise FileNotFoundError(f"{run_dir} has no trained weights yet")
    return ckpts[-1]


def load_vocab(run_dir):
    """The run's Vocabulary."""

    return Vocabulary(path(run_dir, VOCAB))


def load_trained(run_dir, **overrides):
    """(config, vocabulary, CharRNN with the run's final or latest weights).

    ``overrides`` go to model.build (e.g. ``use_cudnn=False``).
    """
    from tfchargen.config import DEFAULTS
    from tfchargen.model import charrnn as model_lib

    cfg = {**DEFAULTS, **load_config(run_dir)}
    vocab = load_vocab(run_dir)
    rnn = model_lib.from_config(cfg, vocab.size, **overrides)
    rnn.model.load_weights(weights_file(run_dir))
    return cfg, vocab, rnn


def prepare_run_dir(cfg: dict, run_dir, write: bool = True) -> dict:
    """Writes config.json, or checks a resumed run's settings against it (``write=False``:
    check only, as a non-chief worker does).

    Only a run that finished an epoch is protected: its weights and vocabulary fit its
    settings, so other ARCH_KEYS are refused. A run dir that never trained (its command
    failed before the first epoch ended) takes the new settings; its vocabulary, built
    from the old data, is removed.
    """
    from tfchargen.config import ARCH_KEYS

    p = path(run_dir, CONFIG)
    if os.path.exists(p):
        old = load_config(run_dir)
        changed = [k for k in ARCH_KEYS if old.get(k) != cfg.get(k)]
        if changed and has_trained(run_dir):
            raise ValueError(
                f"{run_dir} holds a run with different {', '.join(changed)}; "
                "use a new --run-dir or the same settings to resume")
        if changed and write and os.path.exists(path(run_dir, VOCAB)):
            os.remove(path(run_dir, VOCAB))
    if write:
        atomic_write_json(p, cfg)
    return cfg
