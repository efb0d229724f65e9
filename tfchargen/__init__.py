"""tfchargen: character-level RNN text generation in TensorFlow, built to be deployed."""

__version__ = "0.1.0"
