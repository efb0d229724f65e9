"""The optimizer a run's config describes: Adam or AdamW, a constant or cosine learning
rate, gradient-norm clipping that is the same under a tf.distribute strategy as on one
device, and an optional weight EMA."""

from __future__ import annotations

import keras
import tensorflow as tf


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
    """keras.optimizers.Adam whose ``clipnorm`` clips the summed gradients (same arguments)."""


class AdamW(_ClipSummedGradients, keras.optimizers.AdamW):
    """keras.optimizers.AdamW whose ``clipnorm`` clips the summed gradients (same arguments)."""


def make_optimizer(cfg: dict, total_steps: int) -> keras.optimizers.Optimizer:
    """The optimizer for ``cfg`` (learning_rate, schedule, warmup_steps, clipnorm, ema,
    weight_decay) over a run of ``total_steps`` steps."""
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
