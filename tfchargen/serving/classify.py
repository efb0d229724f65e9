"""Classify and Regress (TF Serving's ``classifier.cc``/``regressor.cc``) over our models,
which only have Predict signatures: the error TF Serving answers for the signature asked
for (the default ``--enable_signature_method_name_check=false`` checks: one input, one or
two outputs named ``classes``/``scores`` for Classify, one ``outputs`` for Regress, an
``inputs`` input). A signature that would pass is still not run: UNIMPLEMENTED."""

from __future__ import annotations

from tfchargen.serving.errors import ServerError


def _bad(message: str) -> ServerError:
    return ServerError("INVALID_ARGUMENT", message)


def signature_error(signature_defs, signature_name: str, method: str) -> ServerError:
    """The error of ``method`` ("classify" or "regress") on a signature of ``signature_defs``
    (a SignatureDefMap) named ``signature_name`` ("" = serving_default)."""
    name = signature_name or "serving_default"
    if name not in signature_defs.signature_def:
        return _bad(f"No signature was found with the name: {name}")
    sig = signature_defs.signature_def[name]
    if len(sig.inputs) != 1:
        return _bad("Expected one input Tensor.")
    if method == "classify":
        if len(sig.outputs) not in (1, 2):
            return _bad(f"Expected one or two output Tensors, found {len(sig.outputs)}")
        if "inputs" not in sig.inputs:
            return _bad(f"No classification inputs found in SignatureDef: {sig}")
        if "classes" not in sig.outputs and "scores" not in sig.outputs:
            return _bad(f'Expected classification signature outputs to contain at least one of "classes" or '
                        f'"scores". Signature was: {sig}')
    else:
        if len(sig.outputs) != 1:
            return _bad("Expected one output Tensor.")
        if "inputs" not in sig.inputs:
            return _bad(f"No regression inputs found in SignatureDef: {sig}")
        if "outputs" not in sig.outputs:
            return _bad(f"No regression outputs found in SignatureDef: {sig}")
    return ServerError("UNIMPLEMENTED", f"{method} is not supported by tfchargen serve")
