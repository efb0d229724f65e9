"""Portable exports (LiteRT, TensorFlow.js): the ids-in/ids-out step model, its manifest, the NumPy host loop.
May import: contract, common, data, model, training (reads the run dir); loop.py, litert.Runtime: no TensorFlow."""
