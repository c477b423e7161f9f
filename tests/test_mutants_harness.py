"""The mutation harness (scripts/mutants.py) stays current: every mutant applies and names real tests.

No pytest subprocess runs here (``make mutants`` does that); these checks read files only, so a
refactor that moves a mutant's code or renames its test fails the normal suite instead of
silently turning the mutant stale.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutants_harness", ROOT / "scripts" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


MUTANTS = _harness().MUTANTS


def test_ids_are_unique_and_there_are_enough_mutants() -> None:
    ids = [m.id for m in MUTANTS]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(ids) >= 25


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_old_snippet_occurs_exactly_once_and_the_mutant_still_parses(mutant) -> None:  # noqa: ANN001
    assert mutant.file.startswith("lt_transfer/")
    source = (ROOT / mutant.file).read_text(encoding="utf-8")
    assert source.count(mutant.old) == 1, (
        f"stale mutant {mutant.id}: update its old snippet in scripts/mutants.py"
    )
    mutated = mutant.apply(source)
    assert mutated != source
    ast.parse(mutated)  # a mutant must break behaviour, not the import


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_its_tests_exist(mutant) -> None:  # noqa: ANN001
    assert mutant.tests and mutant.guarantee
    for node in mutant.tests:
        path, _, name = node.partition("::")
        test_file = ROOT / path
        assert test_file.is_file(), node
        if name:
            function = re.sub(r"\[.*\]$", "", name)
            assert re.search(rf"^def {re.escape(function)}\(", test_file.read_text(encoding="utf-8"), re.M), (
                node
            )
