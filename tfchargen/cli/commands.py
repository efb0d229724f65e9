"""The `tfchargen` commands, each ``cmd_NAME(args) -> exit code`` over parsed flags (flags.py).

Each command imports only what it needs, when it runs: ``generate --server`` over REST
imports no TensorFlow.
"""

from __future__ import annotations

import json
import os
import sys

from tfchargen import config
from tfchargen.cli.flags import DEFAULT_PROMPT
from tfchargen.common import quiet
from tfchargen.common.errors import one_line, with_failed_check
from tfchargen.contract import CONTROLS, Controls
from tfchargen.savedmodel.locate import check_run_dir, load_savedmodel, resolve_model


def serving_defaults(args) -> Controls:
    """The ``--default-*`` flags of train and export: serving_default's controls."""
    return Controls(**{name: getattr(args, f"default_{name}") for name in CONTROLS})


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
    if args.format != "savedmodel":
        return _export_portable(args)
    from tfchargen.savedmodel import export as export_lib

    with run_dir_errors(args.run_dir):
        export_lib.export(args.run_dir, args.export_base, jit_compile=args.xla, defaults=serving_defaults(args))
    return 0


def _export_portable(args) -> int:
    """``export --format litert|tfjs|web``: the step model and manifest.json in ``--out``."""
    with run_dir_errors(args.run_dir):
        if args.format == "litert":
            from tfchargen.portable import litert

            litert.export(args.run_dir, args.out, quantize=args.quantize)
        else:
            import importlib

            importlib.import_module(f"tfchargen.portable.{args.format}").export(args.run_dir, args.out)
    return 0


def portable_manifest(model: str, command: str) -> dict | None:
    """The manifest of a portable export given as ``--model``, or None for anything else (a
    SavedModel, or a path locate.py reports on). A folder that holds neither kind, or a
    portable export this command cannot run, is a ValueError in one line."""
    from tfchargen.portable import manifest as manifest_lib
    from tfchargen.savedmodel.locate import is_export, is_run_dir

    if not os.path.isdir(model) or is_export(model) or is_run_dir(model):
        return None
    if not os.path.exists(os.path.join(model, manifest_lib.FILENAME)):
        raise FileNotFoundError(f"{model} holds no model versions (numbered directories or saved_model.pb) and no "
                                f"portable export ({manifest_lib.FILENAME}): give an export base, a version's "
                                "directory or a `tfchargen export --format litert` folder")
    m = manifest_lib.read(model)
    if m["runtime"] != "litert":
        how = (f"with `node export/js/generate.mjs {model}`" if m["runtime"] == "tfjs"
               else "in a browser: serve the folder with any static file server and open index.html")
        raise ValueError(f"{model} is a {m['runtime']} export: `tfchargen {command}` runs SavedModels and LiteRT "
                         f"exports; run this one {how}")
    return m


def _litert_runtime(args):
    """The LiteRT runtime of ``--model``'s folder (imports no TensorFlow)."""
    from tfchargen.portable import litert

    if args.version is not None:
        raise ValueError(f"--version: {args.model} is a LiteRT export (one model, no versions)")
    return litert.Runtime(args.model)


def cmd_generate(args) -> int:
    portable = args.model is not None and portable_manifest(args.model, "generate") is not None
    if portable and args.stream:
        raise ValueError(f"--stream: {args.model} is a LiteRT export; streaming needs a SavedModel's start and "
                         "continue signatures (without --stream the LiteRT loop prints whole rows)")
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
    elif portable:  # NumPy over the LiteRT interpreter: no TensorFlow in this process
        from tfchargen.portable import loop

        out = loop.generate(_litert_runtime(args), [r[0] for r in rows], controls)
    else:
        from tfchargen.savedmodel.call import call

        loaded, _ = load_savedmodel(args.model, args.version)
        out = call(loaded, "generate", {"prompt": [r[0] for r in rows], **controls.rows(len(rows))})
    _print_samples(args, rows, out, table=len(temps) > 1)
    return 0


def _print_samples(args, rows, out, table: bool) -> None:
    """One line per (prompt, temperature, sample) row: its JSON, or its text (``T=...`` first
    in a temperature table)."""
    for i, (p, t, j) in enumerate(rows):
        text = out["text"][i].decode("utf-8")
        if args.json:
            print(json.dumps({"prompt": p, "temperature": t, "sample": j, "text": text,
                              "continuation": out["continuation"][i].decode("utf-8"),
                              "num_chars": int(out["num_chars"][i]),
                              "ended_with_eos": bool(out["ended_with_eos"][i]),
                              "log_prob": float(out["log_prob"][i])}, ensure_ascii=False))
        elif table:
            print(f"T={t:<5} {text}")
        else:
            print(text)


def cmd_evaluate(args) -> int:
    if args.model and portable_manifest(args.model, "evaluate") is not None:
        return _evaluate_portable(args)
    if args.model:
        path = resolve_model(args.model, args.version, "evaluate")
    else:
        check_run_dir(args.run_dir, "evaluate")
    quiet.import_tensorflow()
    from tfchargen.data import pipeline, sources
    from tfchargen.data.vocab import Vocabulary
    from tfchargen.training import evaluate

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


def _evaluate_portable(args) -> int:
    """``evaluate --model`` on a LiteRT export: its step model scores the texts (loop.score);
    TensorFlow only reads the data spec, as for a SavedModel."""
    from tfchargen.portable import loop

    runtime = _litert_runtime(args)
    vocab = loop.Vocab(runtime.manifest)
    quiet.import_tensorflow()
    from tfchargen.data import sources
    from tfchargen.training import evaluate

    text = sources.load(args.data, args.field or "title", args.tfds_data_dir, bad_rows=args.bad_rows)
    total = count = 0.0
    unknown = 0
    for batch in text.batch(256).as_numpy_iterator():
        texts = batch.tolist()
        out = loop.score(runtime, texts)
        total -= float(out["log_prob"].astype("float64").sum())
        count += float(out["num_chars"].sum())
        unknown += sum(vocab.count_unknown(t) for t in texts)
    print(json.dumps({**evaluate.metrics(total, count), "unknown_chars": unknown, "data": args.data}))
    return 0


def cmd_serve(args) -> int:
    from tfchargen.serving.config import ServerConfig

    config = ServerConfig.from_args(args)  # flags and config files, checked before TensorFlow loads
    quiet.import_tensorflow()
    from tfchargen.serving import server

    return server.main(args, config)


COMMANDS = {"train": cmd_train, "export": cmd_export, "generate": cmd_generate, "evaluate": cmd_evaluate,
            "serve": cmd_serve}
