"""The docstring examples of tfchargen's modules run, and show what they print."""

import ast
import doctest
import importlib
import pathlib

import pytest

import tfchargen


def _runs_examples(source: str) -> bool:
    """Whether a module's docstrings hold an example doctest runs (not all ``+SKIP``)."""
    parser = doctest.DocTestParser()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True) or ""
            if any(not e.options.get(doctest.SKIP) for e in parser.get_examples(doc)):
                return True
    return False


def _modules_with_examples() -> list[str]:
    """Every tfchargen module with a docstring example that runs."""
    root = pathlib.Path(tfchargen.__file__).parent
    names = []
    for path in sorted(root.rglob("*.py")):
        if _runs_examples(path.read_text(encoding="utf-8")):
            parts = path.relative_to(root.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed (see output)"
    assert result.attempted > 0, f"{name} has no examples"
