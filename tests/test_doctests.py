"""Every docstring example in the packages runs, as river runs its own.

Modules are imported by their installed names (``intentwatch.models.engine``), so an
example sees the same classes as the code it documents.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

from tests.test_layout import modules

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", sorted(modules()))
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=OPTIONS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
