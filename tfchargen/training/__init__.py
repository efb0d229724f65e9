"""Training a run dir: its layout, losses, optimizers, callbacks, distribution, evaluation.
May import: contract, config, common, data, model, generation (samples while training)."""
