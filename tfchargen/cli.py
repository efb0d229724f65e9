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
    g.add_argument("--field", choices=FIELDS, help="AG News field (default title)")
    g.add_argument("--description-chars", type=int, help="keep only the first N characters of descriptions")
    g.add_argument("--eval-field", choices=FIELDS, help="field of --eval-data (default: --field)")
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
                         description="Runs the SavedModel's generate signature (not the Keras model).")
    gen.add_argument("--model", required=True, help="export base (newest version) or one version's directory")
    gen.add_argument("--version", type=int, help="version under --model (default: newest)")
    gen.add_argument("--prompt", action="append", help='repeatable (default "Today ")')
    gen.add_argument("--max-length", type=int, default=100, help="new characters per sample (default 100)")
    gen.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    gen.add_argument("--temperatures", help="comma-separated: print a prompt x temperature table")
    gen.add_argument("--top-k", type=int, default=0, help="0 = off")
    gen.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    gen.add_argument("--seed", type=int, default=0, help="0 = unseeded; sample j of a prompt uses seed+j")
    gen.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    gen.add_argument("--json", action="store_true", help="one JSON object per sample")

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
    return p


def cmd_train(args) -> int:
    from . import train as train_lib

    cfg = dict(train_lib.PRESETS[args.preset]) if args.preset else {}
    for key in train_lib.DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    row = train_lib.train(cfg, args.run_dir)
    if not args.no_export:
        from . import export as export_lib
        base = args.export_base or os.path.join(args.run_dir, "export")
        row["export"] = export_lib.export(args.run_dir, base, **_export_kwargs(args))
    print(json.dumps({"run_dir": args.run_dir, **row}))
    return 0


def cmd_export(args) -> int:
    from . import export as export_lib

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
    return tf.saved_model.load(path), path


def cmd_generate(args) -> int:
    import tensorflow as tf

    loaded, path = load_savedmodel(args.model, args.version)
    prompts = args.prompt or ["Today "]
    temps = [float(t) for t in args.temperatures.split(",")] if args.temperatures else [args.temperature]
    n = max(args.num_samples, 1)
    rows = [(p, t, j) for t in temps for p in prompts for j in range(n)]
    out = loaded.signatures["generate"](
        prompt=tf.constant([r[0] for r in rows]),
        max_length=tf.constant([args.max_length] * len(rows), tf.int32),
        temperature=tf.constant([r[1] for r in rows], tf.float32),
        top_k=tf.constant([args.top_k] * len(rows), tf.int32),
        top_p=tf.constant([args.top_p] * len(rows), tf.float32),
        seed=tf.constant([args.seed + r[2] if args.seed else 0 for r in rows], tf.int64),
    )
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
        text = sources.load(args.data, args.field or "title", args.tfds_data_dir)
        score = loaded.signatures["score"]
        total = count = 0.0
        for batch in text.batch(256):
            out = score(text=batch)
            total -= float(out["log_prob"].numpy().astype("float64").sum())
            count += float(out["num_chars"].numpy().sum())
        result = evaluate.metrics(total, count)
    else:
        cfg, vocab, rnn = train_lib.load_trained(args.run_dir)
        field = args.field or ("title" if cfg["field"] == "title|description" else cfg["field"])
        text = sources.load(args.data, field, args.tfds_data_dir)
        result = evaluate.evaluate_dataset(rnn.model, pipeline.eval_dataset(text, vocab))
    unknown = sum(int(vocab.count_unknown(t).numpy().sum()) for t in text.batch(1024))
    print(json.dumps({**result, "unknown_chars": unknown, "data": args.data}))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .sources import DataError

    try:
        commands = {"train": cmd_train, "export": cmd_export, "generate": cmd_generate, "evaluate": cmd_evaluate}
        return commands[args.command](args)
    except (DataError, FileNotFoundError, PermissionError, ValueError) as e:
        print(f"tfchargen {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfchargen {args.command}: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
