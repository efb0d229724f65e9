"""The `tfchargen` command line's flags: one function per command (plus the groups commands
share), and :func:`build_parser` to put them together.

Plain Python: building the parser imports no TensorFlow (``--help`` stays fast).
"""

from __future__ import annotations

import argparse
import math

from tfchargen import __version__, config
from tfchargen.contract import DEFAULT_CHUNK, MAX_NEW_CHARS, SERVING_DEFAULTS

DEFAULT_PROMPT = "Today "


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


def train_default(key):
    """The help text's ``(default ...)`` of a train setting, from config.DEFAULTS."""
    return f"(default {config.DEFAULTS[key]})"


def verbose_flag(p, default):
    p.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="show TensorFlow's start-up logs and warnings (default: quiet, unless "
                   "TF_CPP_MIN_LOG_LEVEL is set)")


def data_flags(t):
    g = t.add_argument_group("data")
    g.add_argument("--train-data", help=f"data spec: csv:PATH[a:b], text:PATH[a:b] or tfds:NAME/SPLIT "
                   f"{train_default('train_data')}")
    g.add_argument("--eval-data", help="held-out data spec for per-epoch nats/char (default: none)")
    g.add_argument("--field", choices=config.FIELDS, help=f"AG News field {train_default('field')}")
    g.add_argument("--description-chars", type=number(int, 0),
                   help="keep only the first N characters of descriptions; 0 = all "
                   f"{train_default('description_chars')}")
    g.add_argument("--eval-field", choices=config.FIELDS, help="field of --eval-data (default: --field)")
    g.add_argument("--mode", choices=["examples", "windows"],
                   help=f"one example per sequence, or fixed windows {train_default('mode')}")
    g.add_argument("--window", type=number(int, 1),
                   help=f"window length (windows mode) / max example length {train_default('window')}")
    g.add_argument("--tfds-data-dir", help="TFDS data dir (default: TFDS's own)")
    g.add_argument("--bad-rows", choices=config.BAD_ROWS, help="malformed rows of csv: data (wrong number of "
                   "fields, bad quotes, non-numeric label): error (name the file and line) or skip (warn "
                   f"with their count) {train_default('bad_rows')}")


def optimization_flags(t):
    g = t.add_argument_group("optimization")
    g.add_argument("--epochs", type=number(int, 1), help=f"epochs to train {train_default('epochs')}")
    g.add_argument("--steps-per-epoch", type=number(int, 1),
                   help="batches per epoch (default: one pass over the training data)")
    g.add_argument("--batch-size", type=number(int, 1),
                   help=f"sequences per batch, global {train_default('batch_size')}")
    g.add_argument("--learning-rate", type=number(float, 0),
                   help=f"peak learning rate {train_default('learning_rate')}")
    g.add_argument("--schedule", choices=["constant", "cosine"],
                   help=f"learning rate after warm-up: constant, or cosine decay to 0 {train_default('schedule')}")
    g.add_argument("--warmup-steps", type=number(int, 0),
                   help=f"linear warm-up from 0 over this many steps {train_default('warmup_steps')}")
    g.add_argument("--weight-decay", type=number(float, 0),
                   help=f"AdamW weight decay; 0 = Adam {train_default('weight_decay')}")
    g.add_argument("--clipnorm", type=number(float, 0), help=f"gradient norm clip; 0 = off {train_default('clipnorm')}")
    g.add_argument("--ema", type=number(float, 0, 1, below_high=True),
                   help=f"keep an exponential moving average of weights (e.g. 0.999); 0 = off {train_default('ema')}")
    g.add_argument("--fused-lstm", choices=config.FUSED_CHOICES,
                   help=f"train LSTMs with the fused XLA kernel (fused_lstm.py): auto = {config.FUSED_AUTO}; "
                   f"never on GPU {train_default('fused_lstm')}")
    g.add_argument("--init-from", help="a trained run dir: start from its weights and vocabulary (fine-tune; "
                   "the model flags must match it; default: new weights)")
    g.add_argument("--steps-per-execution", type=number(int, 1),
                   help=f"train steps per tf.function call (Keras; reduced to divide the epoch) "
                   f"{train_default('steps_per_execution')}")
    g.add_argument("--seed", type=int, help=f"seed of weights, shuffling and dropout {train_default('seed')}")
    g.add_argument("--sample-every", type=number(int, 0),
                   help="print samples every N epochs and always after the final epoch; 0 = never "
                   f"{train_default('sample_every')}")


def model_flags(t):
    g = t.add_argument_group("model")
    g.add_argument("--cell", choices=["lstm", "gru", "rnn"], help=f"recurrent cell {train_default('cell')}")
    g.add_argument("--layers", type=int, choices=[1, 2, 3], help=f"stacked RNN layers {train_default('layers')}")
    g.add_argument("--units", type=number(int, 1), help=f"units per layer {train_default('units')}")
    g.add_argument("--embedding-dim", type=number(int, 0),
                   help=f"0 = one-hot input, else an embedding of this size {train_default('embedding_dim')}")
    g.add_argument("--dropout", type=number(float, 0, 1, below_high=True),
                   help=f"dropout on RNN inputs and before the output layer {train_default('dropout')}")
    g.add_argument("--recurrent-dropout", type=number(float, 0, 1, below_high=True),
                   help=f"dropout on the recurrent state {train_default('recurrent_dropout')}")
    g.add_argument("--weight-drop", type=number(float, 0, 1, below_high=True),
                   help="LSTM only: DropConnect on the recurrent kernel while training (AWD-LSTM "
                   f"weight-drop; needs the fused kernel, on CPU) {train_default('weight_drop')}")


def device_flags(t):
    g = t.add_argument_group("devices (README: Training on several devices)")
    g.add_argument("--strategy", choices=["default", "mirrored", "multi-worker"],
                   help="default: one device; mirrored: the GPUs of this machine; multi-worker: "
                   "machines configured by TF_CONFIG, only the chief writes the run dir (--batch-size is "
                   f"global) {train_default('strategy')}")
    g.add_argument("--devices", help="mirrored only: comma-separated devices, e.g. GPU:0,GPU:1 (default: all GPUs)")


def serving_default_flags(p):
    """``--default-*`` (the controls baked into serving_default) and ``--xla``."""
    g = p.add_argument_group("serving_default defaults (baked into the SavedModel)")
    g.add_argument("--default-max-length", type=int,
                   help=f"new characters, 0..{MAX_NEW_CHARS} (default {SERVING_DEFAULTS['max_length']})")
    g.add_argument("--default-temperature", type=float,
                   help=f"0 = greedy (default {SERVING_DEFAULTS['temperature']})")
    g.add_argument("--default-top-k", type=int, help=f"0 = off (default {SERVING_DEFAULTS['top_k']})")
    g.add_argument("--default-top-p", type=float, help=f"in (0, 1], 1 = off (default {SERVING_DEFAULTS['top_p']})")
    g.add_argument("--default-seed", type=int, help=f"0 = unseeded (default {SERVING_DEFAULTS['seed']})")
    g.add_argument("--xla", action="store_true", help="compile the numeric generation loop with XLA")


def presets_epilog():
    width = max(map(len, config.PRESETS))
    lines = [f"  {name:<{width}}  {config.PRESET_HELP[name]}" for name in config.PRESETS]
    return "presets (--preset NAME fills the flags left unset):\n" + "\n".join(lines)


def train_flags(t):
    t.add_argument("--preset", choices=list(config.PRESETS), help="a named recipe (listed below); explicit "
                   "flags override it")
    t.add_argument("--run-dir", required=True, help="where config, vocabulary, checkpoints, logs and metrics go")
    data_flags(t)
    optimization_flags(t)
    model_flags(t)
    device_flags(t)
    g = t.add_argument_group("export at the end")
    g.add_argument("--export-base", help="export the trained model as the next version here "
                   "(default RUN_DIR/export)")
    g.add_argument("--no-export", action="store_true", help="do not export at the end")
    serving_default_flags(t)


EXPORT_FORMATS = ("savedmodel", "litert", "tfjs", "web")  # savedmodel: --export-base; the others: --out


def export_flags(x):
    x.add_argument("--run-dir", required=True, help="the trained run to export")
    x.add_argument("--format", choices=EXPORT_FORMATS, default="savedmodel",
                   help="savedmodel: the next version under --export-base (text in, text out); litert, tfjs, "
                   "web: the ids-in/ids-out step model and manifest.json in --out (docs/other-languages.md) "
                   "(default %(default)s)")
    x.add_argument("--export-base", help="with --format savedmodel (required there), e.g. models/chargen")
    x.add_argument("--out", help="with --format litert, tfjs or web (required there): the folder to write")
    x.add_argument("--quantize", choices=["none", "int8"], default="none",
                   help="with --format litert: int8 = dynamic-range int8 weights (default %(default)s)")
    serving_default_flags(x)


def generate_source_flags(gen):
    """Where generate's model is: a local SavedModel or a TF Serving server."""
    src = gen.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="export base (newest version), one version's directory, or a LiteRT "
                     "export's folder (`tfchargen export --format litert`)")
    src.add_argument("--server", help="TF Serving address: http://HOST:8501 (REST) or HOST:8500 with "
                     "--protocol grpc")
    gen.add_argument("--version", "--model-version", type=number(int, 0), dest="version",
                     help="version under --model, or the served version with --server (default: newest)")
    gen.add_argument("--model-name", default="chargen", help="served model name with --server (default %(default)s)")
    gen.add_argument("--protocol", choices=["rest", "grpc"], help="with --server (default: grpc for grpc://, "
                     "else rest)")
    gen.add_argument("--timeout", type=number(float, 0), default=60.0,
                     help="seconds per request with --server (default %(default)g)")


def generate_flags(gen):
    generate_source_flags(gen)
    gen.add_argument("--prompt", action="append", help=f"repeatable (default {DEFAULT_PROMPT!r})")
    gen.add_argument("--max-length", type=int, default=SERVING_DEFAULTS["max_length"],
                     help=f"new characters per sample, 0..{MAX_NEW_CHARS} (default %(default)s)")
    temp = gen.add_mutually_exclusive_group()
    temp.add_argument("--temperature", type=float, default=SERVING_DEFAULTS["temperature"],
                      help="0 = greedy (default %(default)s)")
    temp.add_argument("--temperatures", type=number_list,
                      help="comma-separated, e.g. 0.3,0.8: print a prompt x temperature table")
    gen.add_argument("--top-k", type=int, default=SERVING_DEFAULTS["top_k"],
                     help="keep the k likeliest; 0 = off (default %(default)s)")
    gen.add_argument("--top-p", type=float, default=SERVING_DEFAULTS["top_p"],
                     help="nucleus sampling, in (0, 1]; 1 = off (default %(default)s)")
    gen.add_argument("--seed", type=int, default=SERVING_DEFAULTS["seed"],
                     help="0 = unseeded; prompt x sample i sends seeds.row_seed(seed, i) (default %(default)s)")
    gen.add_argument("--num-samples", type=number(int, 1), default=1, help="samples per prompt (default %(default)s)")
    gen.add_argument("--json", action="store_true", help="one JSON object per sample")
    gen.add_argument("--stream", action="store_true", help="print one prompt's text chunk by chunk as it "
                     "arrives (the start and continue signatures; --max-length may exceed 2048)")
    gen.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                     help="new characters per chunk with --stream (default %(default)s)")


def evaluate_flags(e):
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", help="evaluate the run's Keras model")
    src.add_argument("--model", help="evaluate an exported SavedModel through its score signature, or a "
                     "LiteRT export's folder through the LiteRT runtime")
    e.add_argument("--version", type=number(int, 0), help="version under --model (default: newest)")
    e.add_argument("--data", required=True, help="data spec, e.g. csv:PATH[6000:]")
    e.add_argument("--field", choices=config.FIELDS, help="default: title for --model, else the run's field")
    e.add_argument("--tfds-data-dir", help="TFDS data dir (default: TFDS's own)")
    e.add_argument("--bad-rows", choices=config.BAD_ROWS, default=config.DEFAULTS["bad_rows"],
                   help="malformed rows of csv: data: error or skip (warn with their count) (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; ``parser.commands`` maps a command's name to its parser."""
    p = Parser(prog="tfchargen", description="Character-level RNN text generation in TensorFlow.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbose_flag(p, default=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p.commands = {}  # name -> its parser, for errors in the command's own form

    def command(name, **kw):
        s = p.commands[name] = sub.add_parser(name, **kw)
        verbose_flag(s, default=argparse.SUPPRESS)  # also valid after the command
        return s

    train_flags(command("train", help="train (or resume) a run", formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Train a character-level RNN; re-running the same command resumes an "
                        "interrupted run.", epilog=presets_epilog()))
    export_flags(command("export", help="export a run as the next SavedModel version, or for LiteRT or TF.js",
                         description="Write EXPORT_BASE/<next version>/ atomically (TF Serving layout), "
                         "checked in the session-based loader before it becomes visible; or, with --format "
                         "litert, tfjs or web, a portable export in --out."))
    generate_flags(command("generate", help="generate text with an exported SavedModel or LiteRT export",
                           description="Runs the SavedModel's generate signature (not the Keras model), "
                           "locally (--model) or on a TF Serving model server (--server); or, for a LiteRT "
                           "export's folder, the same loop in NumPy over the LiteRT interpreter (no TensorFlow)."))

    from tfchargen.serving import server  # its flags; TensorFlow loads only when `serve` runs
    server.add_arguments(command("serve", help="serve an export base over TF Serving's REST and gRPC APIs"))

    evaluate_flags(command("evaluate", help="held-out nats/char of a trained run or exported model",
                           description="Print JSON metrics: nats/char, bits/char, perplexity, characters scored "
                           "(real characters plus <eos>, never padding)."))
    return p
