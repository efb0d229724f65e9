"""Training configuration as plain values: every setting's default, and the named presets.

A run's config.json holds every key of DEFAULTS. The CLI's `train` flags are these keys
(``--learning-rate`` is ``learning_rate``); a preset fills the flags left unset.
"""

from __future__ import annotations

DEFAULT_TRAIN = "tfds:ag_news_subset/train"  # needs network; the README's commands use the CSV

# The text of an AG News example a run trains on (sources.py): one field, both joined, or
# either as its own example.
FIELDS = ("title", "description", "title+description", "title|description")
BAD_ROWS = ("error", "skip")  # malformed rows of csv: data: refuse them, or skip them with a warning
FUSED_CHOICES = ("auto", "on", "off")  # fused_lstm: when LSTMs train with fused_lstm.py's kernel

DEFAULTS = dict(
    train_data=DEFAULT_TRAIN,
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
    fused_lstm="auto",  # LSTM training kernel: auto | on | off (use_fused)
    steps_per_execution=8,  # train steps per tf.function call (Keras); see steps_per_execution()
    seed=0,
    cell="lstm",
    layers=1,
    units=128,
    embedding_dim=0,
    dropout=0.0,
    recurrent_dropout=0.0,
    weight_drop=0.0,  # DropConnect on the LSTM's recurrent kernel (fused kernel only; model.LSTM)
    init_from=None,  # a finished run dir: start from its weights and vocabulary (fine-tuning)
    tfds_data_dir=None,
    bad_rows="error",  # malformed rows of csv: sources: error | skip (sources.py)
    sample_every=1,  # samples every N epochs and after the last (callbacks.should_sample); 0 = never
    strategy="default",
    devices=None,
)

# Named recipes: flags left unset on the command line take these values. Every preset
# samples as DEFAULTS does (sample_every: every N epochs and after the last; 0 = never).
PRESETS = {
    # The teaching example's architecture and batch, to compare against: one LSTM(128) over one-hot.
    "teaching": dict(),
    # AG News titles alone, in one run: the wider regularized LSTM and the schedule the README measures.
    "agnews-titles": dict(units=384, embedding_dim=64, dropout=0.25, batch_size=64, learning_rate=3e-3,
                          schedule="cosine", warmup_steps=200, weight_decay=0.05, epochs=15,
                          steps_per_epoch=200),
    # Stage 1 of the best recipe (README): more of the same news (titles then description starts), scored on titles.
    "agnews-pretrain": dict(field="title|description", description_chars=100, eval_field="title",
                            units=512, embedding_dim=64, dropout=0.35, batch_size=32, learning_rate=1.5e-2,
                            schedule="cosine", warmup_steps=200, weight_decay=0.05, epochs=13,
                            steps_per_epoch=380),
    # Stage 2: --init-from the pretrain run, a gentle well-regularized pass over titles alone (same model).
    "agnews-finetune": dict(units=512, embedding_dim=64, dropout=0.45, batch_size=32, learning_rate=4e-4,
                            schedule="cosine", warmup_steps=20, weight_decay=0.05, epochs=6,
                            steps_per_epoch=200),
    # A model small enough to train in seconds: smoke tests and CI.
    "tiny": dict(units=32, batch_size=32, steps_per_epoch=100, epochs=2, learning_rate=1e-2),
}

# One line per preset for `tfchargen train --help`.
PRESET_HELP = {
    "teaching": "the teaching example's architecture and batch (the defaults)",
    "agnews-titles": "the quality recipe for AG News titles (one run)",
    "agnews-pretrain": "the best recipe, run 1 of 2: each title with the start of its description",
    "agnews-finetune": "the best recipe, run 2 of 2: --init-from the pretrain run, then titles alone",
    "tiny": "a tiny model for smoke tests and CI",
}

# Settings that must not change when a run is resumed: they shape the weights/vocabulary.
# (Not `strategy`: weights checkpoints are strategy-independent, so a run may resume under another.)
ARCH_KEYS = ("train_data", "field", "description_chars", "cell", "layers", "units", "embedding_dim", "init_from")
# What --init-from's run must share with the new run: the weights' shapes.
MODEL_KEYS = ("cell", "layers", "units", "embedding_dim")



# Where ``fused_lstm="auto"`` picks the fused kernel, for people (the CLI's help); use_fused is the rule.
FUSED_AUTO = ("where it trains faster than Keras on CPU: batch <= 16, units >= 256 or one-hot input without "
              "dropout; and always with weight-drop, which only the fused kernel has")


def use_fused(choice: str, cell: str, batch_size: int, units: int, weight_drop: float = 0.0,
              one_hot: bool = False) -> bool:
    """``--fused-lstm``: on, off, or auto (FUSED_AUTO). At small batches per-op cost
    dominates and one-hot input makes the projection a gather; with an embedding at larger
    batches Keras' oneDNN matmuls win. ``one_hot``: one-hot input without input dropout.
    The measurements: docs/design.md.

    >>> use_fused("auto", "lstm", batch_size=64, units=128), use_fused("auto", "lstm", 8, 128)
    (False, True)
    """
    if choice not in FUSED_CHOICES:
        raise ValueError(f"fused_lstm must be one of {FUSED_CHOICES}, got {choice!r}")
    if cell != "lstm" or choice == "off":
        return False
    return choice == "on" or batch_size <= 16 or units >= 256 or weight_drop > 0 or one_hot
