"""The `tfchargen` command line: train, export, generate, evaluate.

Errors a user can cause (a bad flag or value, missing files, bad specs, offline TFDS, a
mismatched run dir) print one line to stderr, ``tfchargen COMMAND: error: ...``, and exit
with code 2; no traceback. Flags and values are checked before TensorFlow is imported, and
each command imports only what it needs (``--help`` and ``generate --server`` over REST
import no TensorFlow). TensorFlow's start-up logs stay off stderr unless ``--verbose`` or the
user's own ``TF_CPP_MIN_LOG_LEVEL`` asks for them (quiet.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from tfchargen import __version__
from tfchargen import config
from tfchargen.common import quiet
from tfchargen.common.errors import one_line, with_failed_check
from tfchargen.savedmodel.locate import check_run_dir, load_savedmodel, resolve_model
from tfchargen.contract import CONTROLS, DEFAULT_CHUNK, MAX_NEW_CHARS, SERVING_DEFAULTS, Controls

FIELDS = ["title", "description", "title+description", "title|description"]
DEFAULT_PROMPT = "Today "
D = config.DEFAULTS
S = SERVING_DEFAULTS


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's error form: one line ``PROG: error: MESSAGE``, exit code 2
    (no usage block: ``PROG --help`` shows it)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def number(kind=int, low=None, high=None, below_high=False):
    """An argparse ``type``: ``kind`` (int or float) in [low, high] (or [low, high) with
    ``below_high``); a bad value is refused with the rule, e.g. ``argument --epochs: must be
    >= 1, not 0``.

    >>> number(int, 1)("3"), number(float, 0, 1, below_high=True)("0.5")
    (3, 0.5)
    """
    if low is not None and high is not None:
        rule = f"in [{low}, {high})" if below_high else f"in {low}..{high}"
    else:
        rule = f">= {low}" if low is not None else f"<= {high}"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
        if ((low is not None and value < low)
                or (high is not None and (value >= high if below_high else value > high))):
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def number_list(text):
    """An argparse ``type``: comma-separated numbers, e.g. ``0.3,0.8``."""
    values = []
    for item in text.split(","):
        try:
            values.append(float(item))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item.strip()!r} is not a number (want comma-separated "
                                             "numbers, e.g. 0.3,0.8)") from None
    return values


def _d(key):
    """The help text's ``(default ...)`` of a train setting, from config.DEFAULTS."""
    return f"(default {D[key]})"


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


def _verbose_flag(p, default):
    p.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="show TensorFlow's start-up logs and warnings (default: quiet, unless "
                   "TF_CPP_MIN_LOG_LEVEL is set)")


def _model_flags(p):
    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=["lstm", "gru", "rnn"], help=f"recurrent cell {_d('cell')}")
    g.add_argument("--layers", type=int, choices=[1, 2, 3], help=f"stacked RNN layers {_d('layers')}")
    g.add_argument("--units", type=number(int, 1), help=f"units per layer {_d('units')}")
    g.add_argument("--embedding-dim", type=number(int, 0),
                   help=f"0 = one-hot input, else an embedding of this size {_d('embedding_dim')}")
    g.add_argument("--dropout", type=number(float, 0, 1, below_high=True),
                   help=f"dropout on RNN inputs and before the output layer {_d('dropout')}")
    g.add_argument("--recurrent-dropout", type=number(float, 0, 1, below_high=True),
                   help=f"dropout on the recurrent state {_d('recurrent_dropout')}")
    g.add_argument("--weight-drop", type=number(float, 0, 1, below_high=True),
                   help="LSTM only: DropConnect on the recurrent kernel while training (AWD-LSTM "
                   f"weight-drop; needs the fused kernel, on CPU) {_d('weight_drop')}")


def _export_flags(p):
    g = p.add_argument_group("serving_default defaults (baked into the SavedModel)")
    g.add_argument("--default-max-length", type=int,
                   help=f"new characters, 0..{MAX_NEW_CHARS} (default {S['max_length']})")
    g.add_argument("--default-temperature", type=float, help=f"0 = greedy (default {S['temperature']})")
    g.add_argument("--default-top-k", type=int, help=f"0 = off (default {S['top_k']})")
    g.add_argument("--default-top-p", type=float, help=f"in (0, 1], 1 = off (default {S['top_p']})")
    g.add_argument("--default-seed", type=int, help=f"0 = unseeded (default {S['seed']})")
    g.add_argument("--xla", action="store_true", help="compile the numeric generation loop with XLA")


def serving_defaults(args) -> Controls:
    """The ``--default-*`` flags of train and export: serving_default's controls."""
    return Controls(**{name: getattr(args, f"default_{name}") for name in CONTROLS})


def _presets_epilog():
    width = max(map(len, config.PRESETS))
    lines = [f"  {name:<{width}}  {config.PRESET_HELP[name]}" for name in config.PRESETS]
    return "presets (--preset NAME fills the flags left unset):\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="tfchargen", description="Character-level RNN text generation in TensorFlow.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _verbose_flag(p, default=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p.commands = {}  # name -> its parser, for errors in the command's own form

    def command(name, **kw):
        s = p.commands[name] = sub.add_parser(name, **kw)
        _verbose_flag(s, default=argparse.SUPPRESS)  # also valid after the command
        return s

    t = command("train", help="train (or resume) a run", formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Train a character-level RNN; re-running the same command resumes an "
                "interrupted run.", epilog=_presets_epilog())
    t.add_argument("--preset", choices=list(config.PRESETS), help="a named recipe (listed below); explicit "
                   "flags override it")
    t.add_argument("--run-dir", required=True, help="where config, vocabulary, checkpoints, logs and metrics go")
    g = t.add_argument_group("data")
    g.add_argument("--train-data", help=f"data spec: csv:PATH[a:b], text:PATH[a:b] or tfds:NAME/SPLIT "
                   f"{_d('train_data')}")
    g.add_argument("--eval-data", help="held-out data spec for per-epoch nats/char (default: none)")
    g.add_argument("--field", choices=FIELDS, help=f"AG News field {_d('field')}")
    g.add_argument("--description-chars", type=number(int, 0),
                   help=f"keep only the first N characters of descriptions; 0 = all {_d('description_chars')}")
    g.add_argument("--eval-field", choices=FIELDS, help="field of --eval-data (default: --field)")
    g.add_argument("--mode", choices=["examples", "windows"],
                   help=f"one example per sequence, or fixed windows {_d('mode')}")
    g.add_argument("--window", type=number(int, 1),
                   help=f"window length (windows mode) / max example length {_d('window')}")
    g.add_argument("--tfds-data-dir", help="TFDS data dir (default: TFDS's own)")
    g.add_argument("--bad-rows", choices=["error", "skip"], help="malformed rows of csv: data (wrong number of "
                   "fields, bad quotes, non-numeric label): error (name the file and line) or skip (warn "
                   f"with their count) {_d('bad_rows')}")
    g = t.add_argument_group("optimization")
    g.add_argument("--epochs", type=number(int, 1), help=f"epochs to train {_d('epochs')}")
    g.add_argument("--steps-per-epoch", type=number(int, 1),
                   help="batches per epoch (default: one pass over the training data)")
    g.add_argument("--batch-size", type=number(int, 1), help=f"sequences per batch, global {_d('batch_size')}")
    g.add_argument("--learning-rate", type=number(float, 0), help=f"peak learning rate {_d('learning_rate')}")
    g.add_argument("--schedule", choices=["constant", "cosine"],
                   help=f"learning rate after warm-up: constant, or cosine decay to 0 {_d('schedule')}")
    g.add_argument("--warmup-steps", type=number(int, 0),
                   help=f"linear warm-up from 0 over this many steps {_d('warmup_steps')}")
    g.add_argument("--weight-decay", type=number(float, 0), help=f"AdamW weight decay; 0 = Adam {_d('weight_decay')}")
    g.add_argument("--clipnorm", type=number(float, 0), help=f"gradient norm clip; 0 = off {_d('clipnorm')}")
    g.add_argument("--ema", type=number(float, 0, 1, below_high=True),
                   help=f"keep an exponential moving average of weights (e.g. 0.999); 0 = off {_d('ema')}")
    g.add_argument("--fused-lstm", choices=["auto", "on", "off"],
                   help="train LSTMs with the fused XLA kernel (fused_lstm.py): auto = where it measured "
                   "faster on CPU (batch <= 16, units >= 256, or one-hot input without dropout); never "
                   f"on GPU {_d('fused_lstm')}")
    g.add_argument("--init-from", help="a trained run dir: start from its weights and vocabulary (fine-tune; "
                   "the model flags must match it; default: new weights)")
    g.add_argument("--steps-per-execution", type=number(int, 1),
                   help=f"train steps per tf.function call (Keras; reduced to divide the epoch) "
                   f"{_d('steps_per_execution')}")
    g.add_argument("--seed", type=int, help=f"seed of weights, shuffling and dropout {_d('seed')}")
    g.add_argument("--sample-every", type=number(int, 0),
                   help="print samples every N epochs and always after the final epoch; 0 = never "
                   f"{_d('sample_every')}")
    _model_flags(t)
    g = t.add_argument_group("devices (README: Training on several devices)")
    g.add_argument("--strategy", choices=["default", "mirrored", "multi-worker"],
                   help="default: one device; mirrored: the GPUs of this machine; multi-worker: "
                   "machines configured by TF_CONFIG, only the chief writes the run dir (--batch-size is "
                   f"global) {_d('strategy')}")
    g.add_argument("--devices", help="mirrored only: comma-separated devices, e.g. GPU:0,GPU:1 (default: all GPUs)")

    g = t.add_argument_group("export at the end")
    g.add_argument("--export-base", help="export the trained model as the next version here "
                   "(default RUN_DIR/export)")
    g.add_argument("--no-export", action="store_true", help="do not export at the end")
    _export_flags(t)

    x = command("export", help="export a run as the next SavedModel version",
                description="Write EXPORT_BASE/<next version>/ atomically (TF Serving layout), "
                "checked in the session-based loader before it becomes visible.")
    x.add_argument("--run-dir", required=True, help="the trained run to export")
    x.add_argument("--export-base", required=True, help="e.g. models/chargen")
    _export_flags(x)

    gen = command("generate", help="generate text with an exported SavedModel",
                  description="Runs the SavedModel's generate signature (not the Keras model), "
                  "locally (--model) or on a TF Serving model server (--server).")
    src = gen.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="export base (newest version) or one version's directory")
    src.add_argument("--server", help="TF Serving address: http://HOST:8501 (REST) or HOST:8500 with "
                     "--protocol grpc")
    gen.add_argument("--version", "--model-version", type=number(int, 0), dest="version",
                     help="version under --model, or the served version with --server (default: newest)")
    gen.add_argument("--model-name", default="chargen", help="served model name with --server (default %(default)s)")
    gen.add_argument("--protocol", choices=["rest", "grpc"], help="with --server (default: grpc for grpc://, "
                     "else rest)")
    gen.add_argument("--timeout", type=number(float, 0), default=60.0,
                     help="seconds per request with --server (default %(default)g)")
    gen.add_argument("--prompt", action="append", help=f"repeatable (default {DEFAULT_PROMPT!r})")
    gen.add_argument("--max-length", type=int, default=S["max_length"],
                     help=f"new characters per sample, 0..{MAX_NEW_CHARS} (default %(default)s)")
    temp = gen.add_mutually_exclusive_group()
    temp.add_argument("--temperature", type=float, default=S["temperature"],
                      help="0 = greedy (default %(default)s)")
    temp.add_argument("--temperatures", type=number_list,
                      help="comma-separated, e.g. 0.3,0.8: print a prompt x temperature table")
    gen.add_argument("--top-k", type=int, default=S["top_k"], help="keep the k likeliest; 0 = off (default %(default)s)")
    gen.add_argument("--top-p", type=float, default=S["top_p"],
                     help="nucleus sampling, in (0, 1]; 1 = off (default %(default)s)")
    gen.add_argument("--seed", type=int, default=S["seed"],
                     help="0 = unseeded; prompt x sample i sends seeds.row_seed(seed, i) (default %(default)s)")
    gen.add_argument("--num-samples", type=number(int, 1), default=1, help="samples per prompt (default %(default)s)")
    gen.add_argument("--json", action="store_true", help="one JSON object per sample")
    gen.add_argument("--stream", action="store_true", help="print one prompt's text chunk by chunk as it "
                     "arrives (the start and continue signatures; --max-length may exceed 2048)")
    gen.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                     help="new characters per chunk with --stream (default %(default)s)")

    from tfchargen.serving import server  # its flags; TensorFlow loads only when `serve` runs
    server.add_arguments(command("serve", help="serve an export base over TF Serving's REST and gRPC APIs"))

    e = command("evaluate", help="held-out nats/char of a trained run or exported model",
                description="Print JSON metrics: nats/char, bits/char, perplexity, characters scored "
                "(real characters plus <eos>, never padding).")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", help="evaluate the run's Keras model")
    src.add_argument("--model", help="evaluate an exported SavedModel through its score signature")
    e.add_argument("--version", type=number(int, 0), help="version under --model (default: newest)")
    e.add_argument("--data", required=True, help="data spec, e.g. csv:PATH[6000:]")
    e.add_argument("--field", choices=FIELDS, help="default: title for --model, else the run's field")
    e.add_argument("--tfds-data-dir", help="TFDS data dir (default: TFDS's own)")
    e.add_argument("--bad-rows", choices=["error", "skip"], default=D["bad_rows"],
                   help="malformed rows of csv: data: error or skip (warn with their count) (default %(default)s)")
    return p


class run_dir_errors:
    """Turns "this run dir's files do not fit together" into one clear line: weights that do
    not match vocab.txt/config.json (one was edited or copied from another run) or a weights
    file that cannot be read (cut short by a crash or a full disk)."""

    def __init__(self, run_dir):
        self.run_dir = run_dir

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is None or isinstance(e, (FileNotFoundError, PermissionError)):
            return False
        msg = str(e)
        if isinstance(e, ValueError) and ("could not be loaded" in msg or "shape" in msg and "match" in msg):
            raise ValueError(f"{self.run_dir}: its saved weights do not fit its vocab.txt and config.json "
                             "(was one of them edited, or copied from another run?); restore them or use "
                             "a new --run-dir") from None
        if isinstance(e, OSError) and ("h5" in msg or "HDF5" in msg or "truncated" in msg or "signature" in msg):
            raise ValueError(f"{self.run_dir}: a weights file cannot be read ({one_line(e)}); remove the damaged "
                             "file (checkpoints/ keeps every epoch) or use a new --run-dir") from None
        if isinstance(e, json.JSONDecodeError):
            raise ValueError(f"{self.run_dir}: config.json or metrics.json is not valid JSON ({one_line(e)})") from None
        return False


def check_values(args) -> str | None:
    """The first flag value outside the SavedModel's contract, checked before anything loads."""
    if args.command == "generate":
        flags = dict(CONTROL_FLAGS, temperature="--temperatures" if args.temperatures else "--temperature")
        controls = Controls(max_length=args.max_length, temperature=args.temperatures or args.temperature,
                            top_k=args.top_k, top_p=args.top_p)
        return control_problem(flags, controls, stream=args.stream)
    if args.command in ("train", "export"):
        return control_problem(SERVING_DEFAULT_FLAGS, serving_defaults(args))
    return None


# -- commands ---------------------------------------------------------------------------------
def cmd_train(args) -> int:
    quiet.import_tensorflow()
    from tfchargen.training import train as train_lib

    cfg = dict(config.PRESETS[args.preset]) if args.preset else {}
    for key in config.DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    with run_dir_errors(args.run_dir):
        row = train_lib.train(cfg, args.run_dir)
    if not args.no_export and row.get("chief", True):  # a non-chief worker exports nothing
        from tfchargen.savedmodel import export as export_lib
        base = args.export_base or os.path.join(args.run_dir, "export")
        with run_dir_errors(args.run_dir):
            row["export"] = export_lib.export(args.run_dir, base, jit_compile=args.xla,
                                              defaults=serving_defaults(args))
    print(json.dumps({"run_dir": args.run_dir, **row}))
    return 0


def cmd_export(args) -> int:
    check_run_dir(args.run_dir, "export")
    quiet.import_tensorflow()
    from tfchargen.savedmodel import export as export_lib

    with run_dir_errors(args.run_dir):
        export_lib.export(args.run_dir, args.export_base, jit_compile=args.xla, defaults=serving_defaults(args))
    return 0


def cmd_generate(args) -> int:
    if args.stream:
        from tfchargen.cli.stream import cli_stream
        return cli_stream(args)
    prompts = args.prompt or [DEFAULT_PROMPT]
    temps = args.temperatures or [args.temperature]
    n = args.num_samples
    rows = [(p, t, j) for t in temps for p in prompts for j in range(n)]
    from tfchargen.generation.seeds import row_seed
    controls = Controls(max_length=args.max_length, temperature=[r[1] for r in rows], top_k=args.top_k,
                        top_p=args.top_p,
                        seed=[row_seed(args.seed, i % (len(prompts) * n)) for i in range(len(rows))])  # seeds.py
    if args.server:
        from tfchargen.serving.client import ServingError, connect

        try:
            with quiet.silenced_stderr():  # gRPC only: tensorflow-serving-api's protos import TensorFlow
                client = connect(args.server, args.model_name, args.protocol, version=args.version,
                                 timeout=args.timeout)
            with client:
                out = client.generate([r[0] for r in rows], controls)
        except ServingError as e:
            print(f"tfchargen generate: error: {with_failed_check(str(e))}", file=sys.stderr)
            return 2
    else:
        from tfchargen.savedmodel.call import call

        loaded, _ = load_savedmodel(args.model, args.version)
        out = call(loaded, "generate", {"prompt": [r[0] for r in rows], **controls.rows(len(rows))})
    for i, (p, t, j) in enumerate(rows):
        text = out["text"][i].decode("utf-8")
        if args.json:
            print(json.dumps({"prompt": p, "temperature": t, "sample": j, "text": text,
                              "continuation": out["continuation"][i].decode("utf-8"),
                              "num_chars": int(out["num_chars"][i]),
                              "ended_with_eos": bool(out["ended_with_eos"][i]),
                              "log_prob": float(out["log_prob"][i])}, ensure_ascii=False))
        elif len(temps) > 1:
            print(f"T={t:<5} {text}")
        else:
            print(text)
    return 0


def cmd_evaluate(args) -> int:
    if args.model:
        path = resolve_model(args.model, args.version, "evaluate")
    else:
        check_run_dir(args.run_dir, "evaluate")
    quiet.import_tensorflow()
    from tfchargen.training import evaluate
    from tfchargen.data import pipeline
    from tfchargen.data import sources
    from tfchargen.data.vocab import Vocabulary

    if args.model:
        loaded, path = load_savedmodel(path)
        vocab = Vocabulary(os.path.join(path, "assets", "vocab.txt"))
        text = sources.load(args.data, args.field or "title", args.tfds_data_dir, bad_rows=args.bad_rows)
        score = loaded.signatures["score"]
        total = count = 0.0
        for batch in text.batch(256):
            out = score(text=batch)
            total -= float(out["log_prob"].numpy().astype("float64").sum())
            count += float(out["num_chars"].numpy().sum())
        result = evaluate.metrics(total, count)
    else:
        from tfchargen.training import rundir

        with run_dir_errors(args.run_dir):
            cfg, vocab, rnn = rundir.load_trained(args.run_dir)
        field = args.field or ("title" if cfg["field"] == "title|description" else cfg["field"])
        text = sources.load(args.data, field, args.tfds_data_dir, bad_rows=args.bad_rows)
        result = evaluate.evaluate_dataset(rnn.model, pipeline.eval_dataset(text, vocab))
    unknown = sum(int(vocab.count_unknown(t).numpy().sum()) for t in text.batch(1024))
    print(json.dumps({**result, "unknown_chars": unknown, "data": args.data}))
    return 0


def cmd_serve(args) -> int:
    quiet.import_tensorflow()
    from tfchargen.serving import server

    return server.main(args)


COMMANDS = {"train": cmd_train, "export": cmd_export, "generate": cmd_generate, "evaluate": cmd_evaluate,
            "serve": cmd_serve}


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
