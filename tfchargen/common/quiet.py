"""Quiet start-up for the command line: TensorFlow's logs only when asked for.

Importing TensorFlow writes absl's "All log messages before absl::InitializeLog()" banner,
oneDNN and CUDA-stub notices to file descriptor 2 from C++, before any log level applies;
later C++ logs (cuInit, oneDNN dtype fallbacks) obey ``TF_CPP_MIN_LOG_LEVEL``. So, unless
the user asked for the logs (``--verbose``) or chose a level themselves (their own
``TF_CPP_MIN_LOG_LEVEL``, kept as it is), :func:`configure` sets the level to 3 (fatal only)
and :func:`import_tensorflow` points fd 2 at /dev/null while TensorFlow is imported, then
back. The same rule as ``export/c/quiet.c``. Neither changes what TensorFlow computes (unlike
``TF_ENABLE_ONEDNN_OPTS``).

Python-side, only the named warnings below are filtered, never a whole category.

    >>> configure(verbose=False)
    >>> tf = import_tensorflow()   # no start-up lines on stderr
"""

from __future__ import annotations

import contextlib
import os
import sys

LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"

# (category, regex on the message) of Python warnings that say nothing to a CLI user.
KNOWN_WARNINGS = [
    # Keras' fit() with a tf.data.Dataset, which is shuffled in the pipeline.
    (UserWarning, r"`shuffle=True` was passed, but will be ignored"),
]
# Regexes on records of the "tensorflow" logger that say nothing to a CLI user.
KNOWN_TF_LOGS = [
    # export.session_loader_check loads each export the way TF Serving does (the v1 loader).
    r"load \(from tensorflow\.python\.saved_model\.loader_impl\) is deprecated",
]

_silence_imports = False


def _is_unknown(record) -> bool:
    """A logging filter: False for the records of KNOWN_TF_LOGS."""
    import re

    msg = record.getMessage()
    return not any(re.search(p, msg) for p in KNOWN_TF_LOGS)


def configure(verbose: bool = False) -> None:
    """Sets the rule for this process; call before anything imports TensorFlow.

    Args:
      verbose: keep every log and warning.
    """
    global _silence_imports
    if verbose:
        _silence_imports = False
        return
    import logging
    import warnings

    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    logger = logging.getLogger("tensorflow")  # the logger tf.get_logger() returns
    if _is_unknown not in logger.filters:
        logger.addFilter(_is_unknown)
    if LEVEL_VAR not in os.environ:  # the user's own level wins
        os.environ[LEVEL_VAR] = "3"
        _silence_imports = True


@contextlib.contextmanager
def silenced_stderr():
    """fd 2 on /dev/null while the body runs, if :func:`configure` chose quiet; an exception
    (e.g. a failed import) propagates after fd 2 is back."""
    if not _silence_imports:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow():
    """``import tensorflow`` under :func:`silenced_stderr`; returns the module."""
    with silenced_stderr():
        import tensorflow as tf
    return tf
