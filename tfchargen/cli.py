"""The `tfchargen` command line: train, export, generate, evaluate.

Errors a user can cause (missing files, bad specs, offline TFDS, a mismatched run dir)
print one line to stderr and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out of the CLI


FIELDS = ["title", "description", "title+description", "title|description"]


def _model_flags(p):
    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=["lstm", "gru", "rnn"], help="recurrent cell (default lstm)")
    g.add_argument("--layers", type=int, choices=[1, 2, 3], help="stacked RNN layers (default 1)")
    g.add_argument("--units", type=int, help="units per layer (default 128)")
    g.add_argument("--embedding-dim", type=int, help="0 = one-hot input (default), else an embedding of this size")
    g.add_argument("--dropout", type=float, help="dropout on RNN inputs and before the output layer (default 0)")
    g.add_argument("--recurrent-dropout", type=float, help="dropout on the recurrent state (default 0)")
    g.add_argument("--weight-drop", type=float, help="LSTM only: DropConnect on the recurrent kernel while training "
                   "(AWD-LSTM weight-drop; needs the fused kernel, on CPU); default 0")


def _export_flags(p):
    g = p.add_argument_group("serving_default defaults (baked into the SavedModel)")
    g.add_argument("--default-max-length", type=int, help="new characters (default 100)")
    g.add_argument("--default-temperature", type=float, help="default 0.8")
    g.add_argument("--default-top-k", type=int, help="default 0 (off)")
    g.add_argument("--default-top-p", type=float, help="default 1.0 (off)")
    g.add_argument("--default-seed", type=int, help="default 0 (unseeded)")
    g.add_argument("--xla", action="store_true", help="compile the numeric generation loop with XLA")


def _export_kwargs(args):
    return dict(jit_compile=args.xla, max_length=args.default_max_length, temperature=args.default_temperature,
                top_k=args.default_top_k, top_p=args.default_top_p, seed=args.default_seed)


def build_parser() -> argparse.ArgumentParser:
    from . import config

    p = argparse.ArgumentParser(prog="tfchargen", description="Character-level RNN text generation in TensorFlow.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (or resume) a run", description="Train a character-level RNN; "
                       "re-running the same command resumes an interrupted run.")
    t.add_argument("--preset", choices=sorted(config.PRESETS), help="a named recipe; explicit flags override it")
    t.add_argument("--run-dir", required=True, help="where config, vocabulary, checkpoints, logs and metrics go")
    g = t.add_argument_group("data")
    g.add_argument("--train-data", help=f"data spec (default {config.DEFAULTS['train_data']}); "
                   "also csv:PATH[a:b] and text:PATH[a:b]")
    g.add_argument("--eval-data", help="held-out data spec for per-epoch nats/char")
    g.add_argument("--field", choices=FIELDS, help="AG News field (default title)")
    g.add_argument("--description-chars", type=int, help="keep only the first N characters of descriptions")
    g.add_argument("--eval-field", choices=FIELDS, help="field of --eval-data (default: --field)")
    g.add_argument("--mode", choices=["examples", "windows"], help="one example per sequence (default) or fixed windows")
    g.add_argument("--window", type=int, help="window length (windows mode) / max example length (default 256)")
    g.add_argument("--tfds-data-dir", help="TFDS data dir")
    g.add_argument("--bad-rows", choices=["error", "skip"], help="malformed rows of csv: data (wrong number of "
                   "fields, bad quotes, non-numeric label): error (default: name the file and line) or skip (warn "
                   "with their count)")
    g = t.add_argument_group("optimization")
    g.add_argument("--epochs", type=int)
    g.add_argument("--steps-per-epoch", type=int, help="default: one pass over the training data")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--learning-rate", type=float)
    g.add_argument("--schedule", choices=["constant", "cosine"])
    g.add_argument("--warmup-steps", type=int)
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0 = Adam)")
    g.add_argument("--clipnorm", type=float, help="gradient norm clip (default 1.0, 0 = off)")
    g.add_argument("--ema", type=float, help="keep an exponential moving average of weights (e.g. 0.999); 0 = off")
    g.add_argument("--fused-lstm", choices=["auto", "on", "off"],
                   help="train LSTMs with the fused XLA kernel (fused_lstm.py): auto (default) = where it "
                        "measured faster on CPU (batch <= 16, units >= 256, or one-hot input without "
                        "dropout); never on GPU")
    g.add_argument("--init-from", help="a trained run dir: start from its weights and vocabulary (fine-tune; "
                   "the model flags must match it)")
    g.add_argument("--steps-per-execution", type=int,
                   help="train steps per tf.function call (Keras; default 8, reduced to divide the epoch)")
    g.add_argument("--seed", type=int)
    g.add_argument("--sample-every", type=int, help="print samples every N epochs (0 = never)")
    _model_flags(t)
    g = t.add_argument_group("devices (README: Training on several devices)")
    g.add_argument("--strategy", choices=["default", "mirrored", "multi-worker"],
                   help="default: one device; mirrored: the GPUs of this machine; multi-worker: "
                   "machines configured by TF_CONFIG, only the chief writes the run dir (--batch-size is global)")
    g.add_argument("--devices", help="mirrored only: comma-separated devices, e.g. GPU:0,GPU:1 (default: all GPUs)")

    g = t.add_argument_group("export at the end")
    g.add_argument("--export-base", help="export the trained model as the next version here "
                   "(default RUN_DIR/export)")
    g.add_argument("--no-export", action="store_true", help="do not export at the end")
    _export_flags(t)

    x = sub.add_parser("export", help="export a run as the next SavedModel version",
                       description="Write EXPORT_BASE/<next version>/ atomically (TF Serving layout), "
                       "checked in the session-based loader before it becomes visible.")
    x.add_argument("--run-dir", required=True)
    x.add_argument("--export-base", required=True, help="e.g. models/chargen")
    _export_flags(x)

    gen = sub.add_parser("generate", help="generate text with an exported SavedModel",
                         description="Runs the SavedModel's generate signature (not the Keras model), "
                         "locally (--model) or on a TF Serving model server (--server).")
    src = gen.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="export base (newest version) or one version's directory")
    src.add_argument("--server", help="TF Serving address: http://HOST:8501 (REST) or HOST:8500 with "
                     "--protocol grpc")
    gen.add_argument("--version", "--model-version", type=int, dest="version",
                     help="version under --model, or the served version with --server (default: newest)")
    gen.add_argument("--model-name", default="chargen", help="served model name with --server (default chargen)")
    gen.add_argument("--protocol", choices=["rest", "grpc"], help="with --server (default: grpc for grpc://, "
                     "else rest)")
    gen.add_argument("--timeout", type=float, default=60.0, help="seconds per request with --server (default 60)")
    gen.add_argument("--prompt", action="append", help='repeatable (default "Today ")')
    gen.add_argument("--max-length", type=int, default=100, help="new characters per sample (default 100)")
    gen.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    gen.add_argument("--temperatures", help="comma-separated: print a prompt x temperature table")
    gen.add_argument("--top-k", type=int, default=0, help="0 = off")
    gen.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    gen.add_argument("--seed", type=int, default=0, help="0 = unseeded; sample j of a prompt uses seed+j")
    gen.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    gen.add_argument("--json", action="store_true", help="one JSON object per sample")

    from . import server  # its flags; TensorFlow loads only when `serve` runs
    server.add_arguments(sub.add_parser("serve", help="serve an export base over TF Serving's REST and gRPC APIs"))

    e = sub.add_parser("evaluate", help="held-out nats/char of a trained run or exported model",
                       description="Print JSON metrics: nats/char, bits/char, perplexity, characters scored "
                       "(real characters plus <eos>, never padding).")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", help="evaluate the run's Keras model")
    src.add_argument("--model", help="evaluate an exported SavedModel through its score signature")
    e.add_argument("--version", type=int, help="version under --model (default: newest)")
    e.add_argument("--data", required=True, help="data spec, e.g. csv:PATH[6000:]")
    e.add_argument("--field", choices=FIELDS, help="default: title for --model, else the run's field")
    e.add_argument("--tfds-data-dir")
    e.add_argument("--bad-rows", choices=["error", "skip"], default="error",
                   help="malformed rows of csv: data: error (default) or skip (warn with their count)")
    return p


def cmd_train(args) -> int:
    from . import config
    from . import train as train_lib

    cfg = dict(config.PRESETS[args.preset]) if args.preset else {}
    for key in config.DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    with run_dir_errors(args.run_dir):
        row = train_lib.train(cfg, args.run_dir)
    if not args.no_export and row.get("chief", True):  # a non-chief worker exports nothing
        from . import export as export_lib
        base = args.export_base or os.path.join(args.run_dir, "export")
        with run_dir_errors(args.run_dir):
            row["export"] = export_lib.export(args.run_dir, base, **_export_kwargs(args))
    print(json.dumps({"run_dir": args.run_dir, **row}))
    return 0


def cmd_export(args) -> int:
    from . import export as export_lib

    with run_dir_errors(args.run_dir):
        export_lib.export(args.run_dir, args.export_base, **_export_kwargs(args))
    return 0


def load_savedmodel(model: str, version: int | None = None):
    """(loaded SavedModel, its directory) from an export base or a version directory."""
    import tensorflow as tf

    from .export import versions

    if os.path.exists(os.path.join(model, "saved_model.pb")):
        path = model
    else:
        found = versions(model)
        if not os.path.isdir(model):
            raise FileNotFoundError(f"no such model directory: {model}")
        if version is None and not found:
            raise FileNotFoundError(f"{model} holds no model versions (numbered directories)")
        path = os.path.join(model, str(version if version is not None else found[-1]))
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise FileNotFoundError(f"no SavedModel at {path}")
    try:
        return tf.saved_model.load(path), path
    except (OSError, ValueError, tf.errors.OpError) as e:  # a damaged or foreign saved_model.pb
        raise ValueError(f"{path} is not a loadable SavedModel ({one_line(e)})") from None


def cmd_generate(args) -> int:
    prompts = args.prompt or ["Today "]
    temps = [float(t) for t in args.temperatures.split(",")] if args.temperatures else [args.temperature]
    n = max(args.num_samples, 1)
    rows = [(p, t, j) for t in temps for p in prompts for j in range(n)]
    controls = dict(max_length=[args.max_length] * len(rows), temperature=[r[1] for r in rows],
                    top_k=[args.top_k] * len(rows), top_p=[args.top_p] * len(rows),
                    seed=[args.seed + r[2] if args.seed else 0 for r in rows])
    if args.server:
        from .client import ServingError, connect

        try:
            with connect(args.server, args.model_name, args.protocol, version=args.version,
                         timeout=args.timeout) as client:
                out = client.generate([r[0] for r in rows], **controls)
        except ServingError as e:
            msg = str(e)  # one line: its first, plus a failed graph check's own message
            check = failed_check(msg)
            line = msg.splitlines()[0].strip() + (f" {check}" if check else "")
            print(f"tfchargen generate: error: {line}", file=sys.stderr)
            return 2
    else:
        import tensorflow as tf

        loaded, path = load_savedmodel(args.model, args.version)
        dtypes = dict(max_length=tf.int32, temperature=tf.float32, top_k=tf.int32, top_p=tf.float32, seed=tf.int64)
        out = loaded.signatures["generate"](prompt=tf.constant([r[0] for r in rows]),
                                            **{k: tf.constant(v, dtypes[k]) for k, v in controls.items()})
        out = {k: v.numpy() for k, v in out.items()}
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
    from . import evaluate, pipeline, sources
    from . import train as train_lib

    from .vocab import Vocabulary

    if args.model:
        loaded, path = load_savedmodel(args.model, args.version)
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
        with run_dir_errors(args.run_dir):
            cfg, vocab, rnn = train_lib.load_trained(args.run_dir)
        field = args.field or ("title" if cfg["field"] == "title|description" else cfg["field"])
        text = sources.load(args.data, field, args.tfds_data_dir, bad_rows=args.bad_rows)
        result = evaluate.evaluate_dataset(rnn.model, pipeline.eval_dataset(text, vocab))
    unknown = sum(int(vocab.count_unknown(t).numpy().sum()) for t in text.batch(1024))
    print(json.dumps({**result, "unknown_chars": unknown, "data": args.data}))
    return 0


def failed_check(msg: str) -> str | None:
    """The message of a failed tf.debugging assertion inside an error text, if any."""
    import re

    m = re.search(r"assertion failed: \[(.+?)\](?: \[|$)", msg, flags=re.M)
    return m.group(1) if m else None


def one_line(e: BaseException, limit: int = 400) -> str:
    """The user-facing line of an error: a failed graph assertion's own message, else the
    first line of the message (never a traceback, never tensor dumps)."""
    msg = getattr(e, "message", None) or str(e) or type(e).__name__
    check = failed_check(msg)
    if check:
        return check
    if isinstance(e, OSError) and e.filename and e.strerror:  # e.g. [Errno 13] Permission denied
        return f"{e.strerror}: {e.filename}"
    first = next((line.strip() for line in msg.splitlines() if line.strip()), msg)
    return first if len(first) <= limit else first[:limit] + "..."


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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from . import server
    from .sources import DataError

    try:
        commands = {"train": cmd_train, "export": cmd_export, "generate": cmd_generate, "evaluate": cmd_evaluate,
                    "serve": server.main}
        return commands[args.command](args)
    except (DataError, OSError, ValueError) as e:  # OSError: missing, unreadable, damaged files
        print(f"tfchargen {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(e, tf.errors.InvalidArgumentError):
            raise  # a bug: keep the traceback
        # A control outside the SavedModel's contract (e.g. --max-length 5000): its check's message.
        print(f"tfchargen {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfchargen {args.command}: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
