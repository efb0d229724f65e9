"""Public name of `tfchargen serve`'s server: see tfchargen.serving."""

from tfchargen.serving.server import Server

__all__ = ["Server"]
