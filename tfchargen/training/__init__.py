"""Training a run dir: the run dir's layout, losses, optimizers, callbacks, distribution, evaluation.
May import: config, common, data, model, generation (samples while training)."""
