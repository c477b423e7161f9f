"""docs/architecture.md's rule "private Lightning and jsonargparse API only in _lightning_compat.py",
checked on the source: no other file reaches a private attribute of a trainer, strategy, loop or
LightningModule, or imports a private Lightning/jsonargparse name or module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lt_transfer"
COMPAT = "_lightning_compat.py"
# names the package gives Lightning's objects (a private attribute on one of them is Lightning's)
LIGHTNING_OBJECTS = {
    "trainer", "strategy", "fit_loop", "epoch_loop", "pl_module", "lightning_module",
    "precision_plugin", "accelerator", "checkpoint_connector", "data_connector",
}  # fmt: skip


def _private_uses(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", None)
            if owner in LIGHTNING_OBJECTS:
                found.append(f"line {node.lineno}: {owner}.{node.attr}")
        module = getattr(node, "module", None) or ""
        if isinstance(node, ast.ImportFrom) and module.split(".")[0] in ("lightning", "jsonargparse"):
            private = [a.name for a in node.names if a.name.startswith("_")]
            if private or any(part.startswith("_") for part in module.split(".")):
                found.append(f"line {node.lineno}: from {node.module} import {[a.name for a in node.names]}")
    return found


def test_private_lightning_api_only_in_the_compat_module() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): uses
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != COMPAT and (uses := _private_uses(path.read_text()))
    }
    assert offenders == {}, f"private Lightning API outside {COMPAT}: {offenders}"


def test_the_check_finds_private_uses() -> None:
    source = (
        "from lightning.pytorch.loops.fetchers import _DataFetcher\n"
        "def f(trainer, pl_module):\n"
        "    return trainer.fit_loop._data_fetcher, pl_module._trainer, trainer.strategy._setup_model\n"
    )
    assert len(_private_uses(source)) == 4
    assert _private_uses("def f(self):\n    return self._trainer, trainer.global_step\n") == []
