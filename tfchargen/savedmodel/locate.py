"""Where models are on disk: an export base's versions, a run dir versus an export, and
loading one version with ``tf.saved_model.load`` alone (no Keras, no training code).

Plain ``os`` calls until a model is loaded, so a wrong path is reported before TensorFlow
is imported. TF Serving's layout: ``EXPORT_BASE/1/``, ``EXPORT_BASE/2/``, ...
"""

from __future__ import annotations

import os

from tfchargen.common import quiet
from tfchargen.common.errors import one_line


def versions(export_base: str) -> list[int]:
    """The numbered version directories of an export base, ascending: TF Serving's layout
    (``EXPORT_BASE/1/``, ``EXPORT_BASE/2/``, ...; a ``.tmp-*`` version being written is not one)."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(d) for d in os.listdir(export_base) if d.isdigit())


def complete_versions(export_base: str) -> dict[int, str]:
    """{version: path} of the complete versions under an export base (a directory named
    by a number holding saved_model.pb; ``tfchargen export`` renames a version into place
    only once it is whole)."""
    try:
        names = os.listdir(export_base)
    except OSError:
        return {}
    return {int(d): os.path.join(export_base, d) for d in names
            if d.isdigit() and os.path.exists(os.path.join(export_base, d, "saved_model.pb"))}


def newest(path: str) -> str:
    """A version directory as given, or the newest version under an export base;
    FileNotFoundError if there is none.

    >>> import tempfile; base = tempfile.mkdtemp()
    >>> for d in ("1", "12", "3", ".tmp-4"): os.mkdir(os.path.join(base, d))
    >>> os.path.basename(newest(base)), versions(base)
    ('12', [1, 3, 12])
    """
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    found = versions(path)
    if not found:
        raise FileNotFoundError(f"no SavedModel in {path} (neither saved_model.pb nor numbered versions)")
    return os.path.join(path, str(found[-1]))


def is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and not os.path.exists(
        os.path.join(path, "saved_model.pb"))


def is_export(path: str) -> bool:
    return os.path.exists(os.path.join(path, "saved_model.pb")) or bool(versions(path))


def run_dir_hint(path: str, command: str) -> str:
    """What to do with a run dir given as --model."""
    export = os.path.join(path, "export")
    ways = [f"--run-dir {path}"] if command == "evaluate" else []
    if versions(export):
        ways.append(f"--model {export} (its export)")
    if command != "evaluate":
        ways.append(f"`tfchargen export --run-dir {path} --export-base DIR` first")
    return f"{path} is a run dir, not an exported model: use {', or '.join(ways)}"


def check_run_dir(path: str, command: str) -> None:
    """Refuses an export given as --run-dir, with what to use instead."""
    if not is_run_dir(path) and is_export(path):
        use = f"--model {path}" if command == "evaluate" else f"it as it is (`tfchargen generate --model {path}`)"
        raise ValueError(f"{path} is an exported model, not a run dir: use {use}")


def resolve_model(model: str, version: int | None = None, command: str = "generate") -> str:
    """The SavedModel directory that ``--model`` (an export base or one version's
    directory) and ``--version`` name; a wrong path raises with what is there instead."""
    if os.path.exists(os.path.join(model, "saved_model.pb")):
        return model
    if not os.path.isdir(model):
        raise FileNotFoundError(f"no such model directory: {model}")
    if is_run_dir(model):
        raise ValueError(run_dir_hint(model, command))
    found = versions(model)
    if version is None and not found:
        raise FileNotFoundError(f"{model} holds no model versions (numbered directories)")
    path = os.path.join(model, str(version if version is not None else found[-1]))
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        there = f"versions there: {', '.join(map(str, found))}" if found else "it holds no model versions"
        raise FileNotFoundError(f"no SavedModel at {path} ({there})")
    return path


def load_savedmodel(model: str, version: int | None = None, command: str = "generate"):
    """(loaded SavedModel, its directory) from an export base or a version directory, with
    tf.saved_model.load alone (no Keras model, no training code)."""
    path = resolve_model(model, version, command)
    tf = quiet.import_tensorflow()
    try:
        return tf.saved_model.load(path), path
    except (OSError, ValueError, tf.errors.OpError) as e:  # a damaged or foreign saved_model.pb
        raise ValueError(f"{path} is not a loadable SavedModel ({one_line(e)})") from None
