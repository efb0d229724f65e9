"""The design rule: nothing in the product relies on tf.py_function / tf.numpy_function."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORBIDDEN = re.compile(r"\b(py_function|numpy_function|py_func|EagerPyFunc)\b")


def test_product_code_has_no_py_function():
    files = [p for d in ("tfchargen", "export", "serving") for p in (ROOT / d).rglob("*.py")]
    assert any(p.parent.name == "tfchargen" for p in files), "tfchargen/ sources not found"
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in files
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if FORBIDDEN.search(line)]
    assert hits == [], f"py_function-like calls found: {hits}"
