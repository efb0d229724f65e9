"""The docstring examples of tfchargen's modules run, and show what they print."""

import doctest
import importlib

import pytest

MODULES = ["tfchargen.contract", "tfchargen.sampling", "tfchargen.rundir", "tfchargen.losses",
           "tfchargen.callbacks", "tfchargen.vocab", "tfchargen.seeds", "tfchargen.batching"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError:
        pytest.skip(f"{name} is not in this tree")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed (see output)"
    assert result.attempted > 0, f"{name} has no examples"
