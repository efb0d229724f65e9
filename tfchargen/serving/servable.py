"""One loaded SavedModel version, run the way TF Serving's Predict runs it: inputs checked
against the signature first, batched signatures through their Batcher, warmup records
replayed before it serves."""

from __future__ import annotations

import os

import numpy as np

from tfchargen import contract
from tfchargen.savedmodel.call import typed_inputs
from tfchargen.serving.batching import DEFAULT_TIMEOUT_MS, Batcher, Stopped, max_length_bucket
from tfchargen.serving.config import LIMITS
from tfchargen.serving.errors import TF_CODES, ServerError

BATCHED_SIGNATURES = ("serving_default", "generate")
STREAM_SIGNATURES = ("start", "continue")


XLA_FLAG = "--xla_cpu_compilation_enabled"


def serve_meta_graph(path: str):
    """The SavedModel's ``serve`` MetaGraphDef."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    (meta,) = [m for m in sm.meta_graphs if "serve" in m.meta_info_def.tags]
    return meta


def xla_functions(meta) -> list[str]:
    """The functions of a MetaGraphDef that must be compiled with XLA (``jit_compile=True``:
    the ``_XlaMustCompile`` attribute, on the function or on a node that calls one)."""
    def must(attrs) -> bool:
        return "_XlaMustCompile" in attrs and attrs["_XlaMustCompile"].b

    found = [f.signature.name for f in meta.graph_def.library.function if must(f.attr)]
    nodes = [n for f in meta.graph_def.library.function for n in f.node_def] + list(meta.graph_def.node)
    found += [n.attr["f"].func.name for n in nodes if must(n.attr) and "f" in n.attr]
    return sorted(set(found))


def check_xla(path: str, meta, xla_enabled: bool) -> None:
    """Refuses a version that needs XLA when XLA JIT is off, as ``tensorflow_model_server`` is
    without ``--xla_cpu_compilation_enabled`` (it disables XLA compilation at start)."""
    needed = xla_functions(meta)
    if needed and not xla_enabled:
        raise RuntimeError(f"{path} requires XLA compilation ({len(needed)} jit_compile functions, e.g. "
                           f"{needed[0]}), which is disabled: start the server with {XLA_FLAG}=true "
                           f"(TF Serving marks it experimental) or export without --xla")


def signature_def_map(path: str, meta=None):
    """The SavedModel's SignatureDefMap (the ``serve`` MetaGraph), as TF Serving reports it."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    meta = meta or serve_meta_graph(path)
    out = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in meta.signature_def.items():
        out.signature_def[key].CopyFrom(sig)
    return out


class Servable:
    """One loaded SavedModel version, run the way TF Serving's Predict runs it.

    Args:
        path: the version's directory.
        version: its number.
        max_batch, batch_timeout_s, batch_threads, max_enqueued_batches, allowed_batch_sizes:
            request batching (batching.py; ``max_batch`` 1 = off).
        xla: whether versions that need XLA (``jit_compile``) may load (``--xla_cpu_compilation_enabled``).

    >>> s = Servable("models/chargen/1", 1)  # doctest: +SKIP
    >>> s.predict("generate", {"prompt": np.array([b"Today "], object), ...})  # doctest: +SKIP
    """

    def __init__(self, path: str, version: int, max_batch: int = 64, batch_timeout_s: float = DEFAULT_TIMEOUT_MS / 1000,
                 batch_threads: int = 2, max_enqueued_batches: int | None = None, allowed_batch_sizes=(),
                 xla: bool = True):
        import tensorflow as tf

        self.tf = tf
        self.path, self.version = path, version
        meta = serve_meta_graph(path)
        check_xla(path, meta, xla)
        self.loaded = tf.saved_model.load(path)
        self.signatures = dict(self.loaded.signatures)
        self.inputs = {name: {k: spec.dtype for k, spec in fn.structured_input_signature[1].items()}
                       for name, fn in self.signatures.items()}
        self.signature_defs = signature_def_map(path, meta)
        self.batchers = {}
        if max_batch > 1:
            for name in BATCHED_SIGNATURES:
                if name not in self.signatures:
                    continue
                bucket = max_length_bucket if "max_length" in self.inputs[name] else (lambda inputs: 0)
                self.batchers[name] = Batcher(self._caller(name), max_batch, batch_timeout_s, batch_threads,
                                              bucket, name=f"v{version}-{name}",
                                              max_enqueued_batches=max_enqueued_batches,
                                              allowed_batch_sizes=allowed_batch_sizes)

    def _caller(self, name: str):
        tf, fn = self.tf, self.signatures[name]

        def call(inputs: dict) -> dict:
            try:
                out = fn(**typed_inputs(fn, inputs))
            except tf.errors.OpError as e:
                raise ServerError(TF_CODES.get(e.error_code, "UNKNOWN"), e.message) from None
            return {k: v.numpy() for k, v in out.items()}
        return call

    def signature(self, name: str) -> str:
        name = name or "serving_default"
        if name not in self.signatures:
            raise ServerError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        return name

    def has_streaming(self) -> bool:
        return all(name in self.signatures for name in STREAM_SIGNATURES)

    def predict(self, signature_name: str, inputs: dict) -> dict:
        """Checks ``inputs`` ({name: np.ndarray}) against the signature, then runs it."""
        name = self.signature(signature_name)
        inputs = check_inputs(inputs, self.inputs[name])
        if name in self.batchers:
            try:
                return self.batchers[name].submit(inputs).result()
            except Stopped as e:
                raise ServerError("UNAVAILABLE", str(e)) from None
        return self._caller(name)(inputs)

    def warm_up(self) -> int:
        """Replays ``assets.extra/tf_serving_warmup_requests`` (if any); returns the count."""
        from tfchargen.savedmodel import warmup

        if not os.path.exists(os.path.join(self.path, warmup.WARMUP_DIR, warmup.WARMUP_FILE)):
            return 0
        logs = warmup.read_warmup(self.path)
        for record in logs:
            request = record.predict_log.request
            inputs = {k: self.tf.make_ndarray(v) for k, v in request.inputs.items()}
            self._caller(self.signature(request.model_spec.signature_name))(inputs)
        return len(logs)

    def stop(self) -> None:
        for b in self.batchers.values():
            b.stop()


def check_inputs(inputs: dict, dtypes: dict) -> dict:
    """The signature's inputs as [B] numpy arrays of its dtypes, or a ServerError.

    Refuses here what would otherwise fail inside a merged batch (wrong names, dtypes,
    shapes, mismatched batch sizes, controls the graph's checks refuse), with TF Serving's
    or the graph's own message.
    """
    if set(inputs) != set(dtypes):
        extra, missing = sorted(set(inputs) - set(dtypes)), sorted(set(dtypes) - set(inputs))
        raise ServerError("INVALID_ARGUMENT", f"input size does not match signature: {len(inputs)}!="
                          f"{len(dtypes)} len({{{', '.join(sorted(inputs))}}}) != len({{"
                          f"{', '.join(sorted(dtypes))}}}). Sent extra: {{{', '.join(extra)}}}. "
                          f"Missing but required: {{{', '.join(missing)}}}.")
    out = {key: _checked_vector(key, inputs[key], dtype) for key, dtype in dtypes.items()}
    rows = {len(v) for v in out.values()}
    if len(rows) > 1:
        bad = next(k for k, v in out.items() if len(v) != len(out[next(iter(out))]))
        raise ServerError("INVALID_ARGUMENT", contract.MSG_ONE_PER_PROMPT.format(name=bad))
    n = rows.pop() if rows else 0
    if n > LIMITS["max_rows"]:
        raise ServerError("INVALID_ARGUMENT", f"{n} rows in one request; at most {LIMITS['max_rows']}")
    if n and set(contract.CONTROLS) <= set(out):  # the graph's own checks, before batching
        err = _control_error(out)
        if err:
            raise ServerError("INVALID_ARGUMENT", f"assertion failed: [{err}]")
    return out


def _checked_vector(key: str, value: np.ndarray, dtype) -> np.ndarray:
    """``value`` if it is a vector of ``dtype`` (a tf.DType), else TF Serving's InvalidArgument."""
    if value.ndim != 1:
        raise ServerError("INVALID_ARGUMENT", f"Expects arg[{key}] to be a vector (shape [-1]) but shape "
                          f"{list(value.shape)} is provided")
    if dtype.name == "string":
        if value.dtype != object or not all(isinstance(v, bytes) for v in value):
            raise ServerError("INVALID_ARGUMENT", f"Expects arg[{key}] to be string but "
                              f"{_dtype_name(value)} is provided")
    elif np.dtype(dtype.as_numpy_dtype) != value.dtype:
        raise ServerError("INVALID_ARGUMENT", f"Expects arg[{key}] to be {dtype.name} but "
                          f"{_dtype_name(value)} is provided")
    return value


def _control_error(inputs: dict) -> str | None:
    """The message of the first control check any row fails, in the graph's order
    (generator.validate_controls: each bound over all rows, max_length's lower one first)."""
    length = inputs["max_length"]
    return contract.Controls(max_length=[length.min(), length.max()], temperature=inputs["temperature"],
                             top_k=inputs["top_k"], top_p=inputs["top_p"]).error()


def _dtype_name(value: np.ndarray) -> str:
    if value.dtype == object:
        return "string" if all(isinstance(v, bytes) for v in value.flat) else "mixed"
    import tensorflow as tf

    return tf.as_dtype(value.dtype).name
