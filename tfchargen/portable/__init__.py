"""Portable exports (LiteRT, TensorFlow.js): the ids-in/ids-out step model, its manifest, the host loops.
Imports only tfchargen.contract, data.vocab constants and generation.seeds; loop.py and litert.py's runner never TF."""
