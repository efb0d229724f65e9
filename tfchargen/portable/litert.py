"""LiteRT (formerly TensorFlow Lite): the step model as ``model.tflite``, and a runner for it.

    DIR/model.tflite    one signature, ``step`` (numeric.py), builtin ops only
    DIR/manifest.json   manifest.py

:func:`export` converts (TensorFlow is imported there); :class:`Runtime` runs an export in
``ai_edge_litert``'s interpreter and imports no TensorFlow, so ``tfchargen generate --model
DIR`` works where only the small LiteRT wheel is installed.

Builtin ops only: Flex (SELECT_TF_OPS) kernels are not in the pip runtime nor in most
mobile builds; the converter is told so and every export's op list is checked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile

import numpy as np

from tfchargen.common import files, quiet
from tfchargen.portable import manifest as manifest_lib

RUNTIME = "litert"
QUANTIZE = {"none": "none", "int8": "dynamic_int8"}  # --quantize -> manifest "quantization"
STEP = "step"


def convert(model, quantize: str = "none") -> bytes:
    """The .tflite bytes of ``model`` (numeric.StepModel) with its ``step`` signature.

    ``quantize="int8"``: dynamic-range quantization (int8 weights, float activations), no
    calibration data needed. The function goes through a SavedModel written by Keras'
    ExportArchive (as savedmodel/export.py does), which tracks the model's variables and
    gives the converter a named signature whose inputs and outputs keep their names.
    """
    import keras
    import tensorflow as tf

    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {sorted(QUANTIZE)}, got {quantize!r}")
    archive = keras.export.ExportArchive()
    archive.track(model.rnn.model)
    archive.add_endpoint(STEP, model.named_step)
    tmp = tempfile.mkdtemp(prefix="tfchargen-litert-")
    try:
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[STEP])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic range
        return converter.convert()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def op_names(model_content: bytes) -> list:
    """The distinct operator names of a .tflite model, as the interpreter reports them."""
    from ai_edge_litert.interpreter import Interpreter

    return sorted({op["op_name"] for op in Interpreter(model_content=model_content)._get_ops_details()})


def non_builtin(names) -> list:
    """The op names that are not LiteRT builtins (Flex delegate ops or custom ops)."""
    return [n for n in names if n.startswith("Flex") or n in ("CUSTOM", "DELEGATE")]


def export(run_dir, out_dir, quantize: str = "none", log=print) -> str:
    """Writes ``out_dir/model.tflite`` and ``out_dir/manifest.json`` from a trained run;
    returns ``out_dir``. The manifest is written last, so a folder with a manifest holds a
    whole model."""
    from tfchargen.portable import numeric

    model = numeric.load(run_dir)
    content = convert(model, quantize)
    bad = non_builtin(op_names(content))
    if bad:
        raise ValueError(f"the LiteRT conversion needs non-builtin ops {bad}; the pip runtime cannot run them")
    manifest = manifest_lib.build(model, RUNTIME, QUANTIZE[quantize])
    os.makedirs(out_dir, exist_ok=True)
    with files.atomic_path(os.path.join(out_dir, manifest["model_file"])) as tmp, open(tmp, "wb") as f:
        f.write(content)
    manifest_lib.write(out_dir, manifest)
    log(f"exported {out_dir} (LiteRT, {len(content)} bytes, quantization {manifest['quantization']})")
    return str(out_dir)


@contextlib.contextmanager
def startup_notices_off():
    """fd 2 on /dev/null while the interpreter starts, when TensorFlow's logs would be quiet
    too: the CLI's quiet mode (quiet.py), or a TF_CPP_MIN_LOG_LEVEL of 1 or more, which the
    LiteRT runtime does not read for its own INFO lines (e.g. the XNNPACK delegate's)."""
    level = os.environ.get(quiet.LEVEL_VAR, "0")
    if not (level.isdigit() and int(level) >= 1):
        with quiet.silenced_stderr():  # quiet only if quiet.configure chose it
            yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Runtime:
    """A LiteRT export loaded in ai_edge_litert's interpreter: loop.py's ``runtime``.

    ``step(ids [B] int32, states) -> (log_probs [B, V] float32, states)``; states are a list
    of [B, units] float32 arrays, zeros to start (:meth:`zero_states`).

    Args:
        path: the export folder (its manifest.json must say runtime "litert").
        num_threads: the interpreter's threads (None: its default).

    The batch size is set by resizing the inputs when it changes (the model's batch
    dimension is dynamic); the tensors are then reused for every step of that size.
    """

    def __init__(self, path, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = os.fspath(path)
        self.manifest = manifest_lib.read(self.path, RUNTIME)
        model_file = os.path.join(self.path, self.manifest["model_file"])
        if not os.path.exists(model_file):
            raise manifest_lib.ManifestError(f"{self.path}: {self.manifest['model_file']} is missing")
        try:
            with startup_notices_off():
                self.interpreter = Interpreter(model_path=model_file, num_threads=num_threads)
                self._resize(1)
        except ValueError as e:
            raise manifest_lib.ManifestError(f"{model_file}: not a loadable LiteRT model ({e})") from None

    def _tensor_indexes(self):
        """(input, output) tensor indexes of the step signature, in the manifest's order. The
        signature runner is dropped here: while one is alive the interpreter refuses to resize."""
        signature = self.manifest["signatures"][STEP]
        runner = self.interpreter.get_signature_runner(STEP)
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        return ([inputs[name]["index"] for name in signature["inputs"]],
                [outputs[name]["index"] for name in signature["outputs"]])

    @property
    def num_states(self) -> int:
        return len(self.manifest["states"])

    def zero_states(self, batch: int) -> list:
        return [np.zeros([batch, *shape], np.float32) for shape in self.manifest["states"]]

    def _resize(self, batch: int) -> None:
        if not hasattr(self, "_inputs"):
            self._inputs, self._outputs = self._tensor_indexes()
            self._batch = None
        if batch == self._batch:
            return
        for index, shape in zip(self._inputs, [[]] + self.manifest["states"]):
            self.interpreter.resize_tensor_input(index, [batch, *shape], strict=False)
        self.interpreter.allocate_tensors()
        self._batch = batch

    def step(self, ids, states):
        ids = np.ascontiguousarray(ids, np.int32)
        self._resize(len(ids))
        it = self.interpreter
        it.set_tensor(self._inputs[0], ids)
        for index, s in zip(self._inputs[1:], states):
            it.set_tensor(index, np.ascontiguousarray(s, np.float32))
        it.invoke()
        log_probs, *new = [it.get_tensor(i) for i in self._outputs]
        return log_probs, new
