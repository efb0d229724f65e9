"""The `tfchargen` command line: flags, commands, the one-line error form.
May import: everything below it (it is the top layer; nothing imports it)."""

from tfchargen.cli.app import main  # the console script's entry point

__all__ = ["main"]
