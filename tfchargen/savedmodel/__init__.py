"""The SavedModel: export of a trained run as the next version, warmup records, locating and loading versions,
calling a loaded version's signatures.
May import: contract, common, data, model, generation, training (reads the run dir)."""
