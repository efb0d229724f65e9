"""The `tfchargen` command line: flags, commands, the one-line error form.
May import: every package (it is the top layer; nothing inside tfchargen imports it)."""

from tfchargen.cli.app import main  # the console script's entry point

__all__ = ["main"]
