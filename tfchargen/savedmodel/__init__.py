"""The SavedModel: exporting a run as the next version, warmup records, locating versions, calling their signatures.
May import: contract, common, data, model, generation, training (reads the run dir)."""
