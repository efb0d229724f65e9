"""manifest.json: what a host needs besides the model file (docs/other-languages.md).

The vocabulary with ids, the padding and <eos> ids, the normalization rules, the
architecture and state shapes, the contract's limits, the sampling rule's version and the
signatures' tensor names. Reading it imports no TensorFlow (``tfchargen generate --model``
on a LiteRT export runs without it).
"""

from __future__ import annotations

import json
import os

from tfchargen import __version__, contract
from tfchargen.common.files import atomic_write_json

FILENAME = "manifest.json"
FORMAT = "tfchargen-portable"
FORMAT_VERSION = 1
SAMPLING = "tfchargen-sampling-1"  # the host loop's rule (loop.py); bumped if it ever changes
MODEL_FILES = {"litert": "model.tflite", "tfjs": "model.json", "web": "model.json"}
QUANTIZATIONS = ("none", "dynamic_int8")


class ManifestError(ValueError):
    """A folder that is not a usable portable export (one clear line for the CLI)."""


def space_like() -> list:
    """The characters vocab.normalize_py turns into a space, found by asking it (one rule)."""
    from tfchargen.data.vocab import normalize_py

    return [c for c in map(chr, range(0x3000)) if c != " " and normalize_py(c) == " "]


def build(model, runtime: str, quantization: str = "none", signatures: dict | None = None) -> dict:
    """The manifest of ``model`` (numeric.StepModel) exported for ``runtime``.

    ``signatures``: {name: {"inputs": [...], "outputs": [...]}}; default: the step alone.
    """
    from tfchargen.data import vocab as vocab_lib
    from tfchargen.training import rundir

    if runtime not in MODEL_FILES:
        raise ValueError(f"runtime must be one of {sorted(MODEL_FILES)}, got {runtime!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    entries = list(model.vocab_entries)
    cfg = model.config
    metrics = rundir.load_metrics(model.run_dir)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "runtime": runtime,
        "model_file": MODEL_FILES[runtime],
        "quantization": quantization,
        "vocabulary": entries,
        "pad_id": vocab_lib.PAD_ID,
        "eos_id": len(entries) - 1,
        "segment_separator": vocab_lib.SEGMENT_SEPARATOR,
        "space_like": space_like(),
        "cell": cfg["cell"],
        "layers": cfg["layers"],
        "units": cfg["units"],
        "embedding_dim": cfg["embedding_dim"],
        "states": model.state_shapes,
        "max_prompt_chars": contract.MAX_PROMPT_CHARS,
        "max_new_chars": contract.MAX_NEW_CHARS,
        "sampling": SAMPLING,
        "signatures": signatures or {"step": {"inputs": model.input_names, "outputs": model.output_names}},
        "source": {
            "run_dir": os.path.abspath(model.run_dir),
            "step": metrics[-1]["epoch"] if metrics else None,  # epochs trained (metrics.json)
            "weights": os.path.basename(rundir.weights_file(model.run_dir)),
            "tfchargen_version": __version__,
        },
    }


def write(out_dir, manifest: dict) -> str:
    """Writes ``out_dir/manifest.json`` (whole or not at all); returns its path."""
    path = os.path.join(os.fspath(out_dir), FILENAME)
    atomic_write_json(path, manifest)
    return path


def read(path, runtime: str | None = None) -> dict:
    """The manifest of an export folder (or of a manifest.json path), checked: our format,
    a format_version and sampling rule this code implements, and ``runtime`` if given
    (a str or a tuple of accepted ones). Anything else is a ManifestError with one line."""
    path = os.fspath(path)
    file = os.path.join(path, FILENAME) if os.path.isdir(path) else path
    if not os.path.exists(file):
        where = path if os.path.isdir(path) else os.path.dirname(path) or "."
        raise ManifestError(f"{where} holds no {FILENAME}: not a portable export "
                            "(`tfchargen export --format litert --out DIR` writes one)")
    try:
        with open(file, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise ManifestError(f"{file}: not a readable manifest ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ManifestError(f"{file}: not a {FORMAT} manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{file}: format_version {m.get('format_version')!r} is not supported (this "
                            f"tfchargen reads {FORMAT_VERSION}); export the model again with this version")
    if m.get("sampling") != SAMPLING:
        raise ManifestError(f"{file}: sampling rule {m.get('sampling')!r} is not supported (this tfchargen "
                            f"implements {SAMPLING})")
    wanted = (runtime,) if isinstance(runtime, str) else runtime
    if wanted and m.get("runtime") not in wanted:
        raise ManifestError(f"{os.path.dirname(file) or '.'} is a {m.get('runtime')} export; this needs "
                            f"{' or '.join(wanted)} (`tfchargen export --format {wanted[0]}`)")
    return m
