"""The `tfchargen` command line: train, evaluate.

Errors a user can cause (missing files, bad specs, offline TFDS, a mismatched run dir)
print one line to stderr and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out of the CLI


def _model_flags(p):
    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=["lstm", "gru", "rnn"], help="recurrent cell (default lstm)")
    g.add_argument("--layers", type=int, choices=[1, 2, 3], help="stacked RNN layers (default 1)")
    g.add_argument("--units", type=int, help="units per layer (default 128)")
    g.add_argument("--embedding-dim", type=int, help="0 = one-hot input (default), else an embedding of this size")
    g.add_argument("--dropout", type=float, help="dropout on RNN inputs and before the output layer (default 0)")
    g.add_argument("--recurrent-dropout", type=float, help="dropout on the recurrent state (default 0)")


def build_parser() -> argparse.ArgumentParser:
    from . import train as train_lib

    p = argparse.ArgumentParser(prog="tfchargen", description="Character-level RNN text generation in TensorFlow.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (or resume) a run", description="Train a character-level RNN; "
                       "re-running the same command resumes an interrupted run.")
    t.add_argument("--preset", choices=sorted(train_lib.PRESETS), help="a named recipe; explicit flags override it")
    t.add_argument("--run-dir", required=True, help="where config, vocabulary, checkpoints, logs and metrics go")
    g = t.add_argument_group("data")
    g.add_argument("--train-data", help=f"data spec (default {train_lib.DEFAULTS['train_data']}); "
                   "also csv:PATH[a:b] and text:PATH[a:b]")
    g.add_argument("--eval-data", help="held-out data spec for per-epoch nats/char")
    g.add_argument("--field", choices=["title", "description", "title+description"], help="AG News field (default title)")
    g.add_argument("--eval-field", choices=["title", "description", "title+description"], help="field of --eval-data (default: --field)")
    g.add_argument("--mode", choices=["examples", "windows"], help="one example per sequence (default) or fixed windows")
    g.add_argument("--window", type=int, help="window length (windows mode) / max example length (default 256)")
    g.add_argument("--tfds-data-dir", help="TFDS data dir")
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
    g.add_argument("--seed", type=int)
    g.add_argument("--sample-every", type=int, help="print samples every N epochs (0 = never)")
    _model_flags(t)

    e = sub.add_parser("evaluate", help="held-out nats/char of a trained run", description="Print JSON metrics: "
                       "nats/char, bits/char, perplexity, characters scored (real characters plus <eos>, never padding).")
    e.add_argument("--run-dir", required=True)
    e.add_argument("--data", required=True, help="data spec, e.g. csv:PATH[6000:]")
    e.add_argument("--field", choices=["title", "description", "title+description"], help="default: the run's field")
    e.add_argument("--tfds-data-dir")
    return p


def cmd_train(args) -> int:
    from . import train as train_lib

    cfg = dict(train_lib.PRESETS[args.preset]) if args.preset else {}
    for key in train_lib.DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    row = train_lib.train(cfg, args.run_dir)
    print(json.dumps({"run_dir": args.run_dir, **row}))
    return 0


def cmd_evaluate(args) -> int:
    from . import evaluate, pipeline, sources
    from . import train as train_lib

    cfg, vocab, rnn = train_lib.load_trained(args.run_dir)
    text = sources.load(args.data, args.field or cfg["field"], args.tfds_data_dir)
    result = evaluate.evaluate_dataset(rnn.model, pipeline.eval_dataset(text, vocab))
    unknown = sum(int(vocab.count_unknown(t).numpy().sum()) for t in text.batch(1024))
    print(json.dumps({**result, "unknown_chars": unknown, "data": args.data}))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .sources import DataError

    try:
        return {"train": cmd_train, "evaluate": cmd_evaluate}[args.command](args)
    except (DataError, FileNotFoundError, PermissionError, ValueError) as e:
        print(f"tfchargen {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfchargen {args.command}: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
