"""The `tfchargen` command line: train, export, generate, evaluate, serve.

Errors a user can cause (a bad flag or value, missing files, bad specs, offline TFDS, a
mismatched run dir) print one line to stderr, ``tfchargen COMMAND: error: ...``, and exit
with code 2; no traceback. Flags and values are checked before TensorFlow is imported, and
each command imports only what it needs (``--help`` and ``generate --server`` over REST
import no TensorFlow). TensorFlow's start-up logs stay off stderr unless ``--verbose`` or the
user's own ``TF_CPP_MIN_LOG_LEVEL`` asks for them (quiet.py).

The flags are flags.py's, the commands commands.py's; this module checks values and runs one.
"""

from __future__ import annotations

import sys

from tfchargen.cli.commands import COMMANDS, serving_defaults
from tfchargen.cli.flags import build_parser
from tfchargen.common import quiet
from tfchargen.common.errors import one_line
from tfchargen.contract import CONTROLS, Controls

# The flag that sets each control, for messages in the contract's words.
CONTROL_FLAGS = {name: f"--{name.replace('_', '-')}" for name in CONTROLS}
SERVING_DEFAULT_FLAGS = {name: f"--default-{name.replace('_', '-')}" for name in CONTROLS}


def control_problem(flags: dict, controls: Controls, stream: bool = False) -> str | None:
    """The first control outside the signature's contract (Controls.problem), as
    ``argument FLAG: MESSAGE``.

    Args:
      flags: control name -> the flag that set it.
      controls: the values (a scalar or a list of scalars each; None = not given).
      stream: the controls of a stream (its max_length may pass one call's limit).

    >>> control_problem(CONTROL_FLAGS, Controls(max_length=5000))
    'argument --max-length: max_length must be <= 2048'
    """
    found = controls.problem(stream)
    return f"argument {flags[found[0]]}: {found[1]}" if found else None


def check_values(args) -> str | None:
    """The first flag value outside the SavedModel's contract, checked before anything loads."""
    if args.command == "generate":
        flags = dict(CONTROL_FLAGS, temperature="--temperatures" if args.temperatures else "--temperature")
        controls = Controls(max_length=args.max_length, temperature=args.temperatures or args.temperature,
                            top_k=args.top_k, top_p=args.top_p)
        return control_problem(flags, controls, stream=args.stream)
    if args.command == "export":
        return export_problem(args) or control_problem(SERVING_DEFAULT_FLAGS, serving_defaults(args))
    if args.command == "train":
        return control_problem(SERVING_DEFAULT_FLAGS, serving_defaults(args))
    return None


def export_problem(args) -> str | None:
    """``export``'s flags that do not go with its --format."""
    if args.format == "savedmodel":
        if args.out:
            return "argument --out: only with --format litert, tfjs or web (a SavedModel goes to --export-base)"
        if args.export_base is None:
            return "the following arguments are required: --export-base (or --format litert|tfjs|web with --out)"
    else:
        if args.export_base:
            return f"argument --export-base: only with --format savedmodel (--format {args.format} writes to --out)"
        if args.out is None:
            return f"the following arguments are required with --format {args.format}: --out"
        if args.xla or any(v is not None for v in serving_defaults(args).given().values()):
            return f"--xla and --default-*: SavedModel settings, not for --format {args.format}"
    if args.quantize != "none" and args.format != "litert":
        return f"argument --quantize: only with --format litert (not {args.format})"
    return None


def main(argv=None) -> int:
    """Runs one command; returns the exit code (0, 2 for a user's error, 130 interrupted)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # in the command's own form, not the top-level parser's
            parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help, --version, or an error argparse printed
        return 0 if e.code is None else e.code
    problem = check_values(args)
    if problem:
        print(f"tfchargen {args.command}: error: {problem}", file=sys.stderr)
        return 2
    quiet.configure(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except (OSError, ValueError) as e:  # OSError: missing, unreadable, damaged files; ValueError: DataError, bad specs
        print(f"tfchargen {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(e, tf.errors.InvalidArgumentError):
            raise  # a bug: keep the traceback
        # A control outside the SavedModel's contract that slipped past check_values: its check's message.
        print(f"tfchargen {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfchargen {args.command}: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
