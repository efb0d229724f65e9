"""The SavedModel: export of a trained run as the next version, warmup records, locating and loading versions.
May import: contract, common, data, model, generation, training (reads the run dir)."""
