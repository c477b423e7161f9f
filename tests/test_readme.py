"""README.md's Python snippets run: every fenced ``python`` block is executed, tiny and offline.

Each block runs in a fresh namespace with a temporary folder as the working directory (what
a snippet writes, logs included, stays there). The ``tiny`` fixture makes the blocks fast
without editing the README: every Lightning ``Trainer`` a block builds runs on one CPU
process, for at most 3 epochs of 2 batches (2 batches per validation, test and prediction
run), without progress bar or model summary. Nothing else is changed: data, models and
arguments are the README's own. The README's "your own images" examples read the user's
folders ``photos/`` and ``new_photos/``: the fixture writes small ones (digits as PNG/JPEG).

A block that cannot run offline or fast is marked in the README by an HTML comment alone on
the line before it, ``<!-- readme-test: skip (reason) -->``; it shows up as a skipped test with
that reason (``pytest -rs`` lists them). A failing block fails its test, named after and
pointing at its line in README.md (the traceback's frames read ``README.md:<line>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest

from tests.image_folders import write_photos

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP_MARK = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")

#: What every Trainer built by a README block runs with.
TINY: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "strategy": "auto",
    "limit_train_batches": 2,
    "limit_val_batches": 2,
    "limit_test_batches": 2,
    "limit_predict_batches": 2,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "log_every_n_steps": 1,
}
MAX_EPOCHS = 3


@dataclass(frozen=True)
class Block:
    """A fenced ``python`` block of the README: its first code line (1-based) and its code."""

    line: int
    code: str
    skip: str | None


def python_blocks(text: str) -> list[Block]:
    """The README's ``python`` blocks, with the reason of a skip mark on the line before each.

    Raises:
        ValueError: a block that is never closed, or a skip mark that is not on the line
            before a ``python`` block.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    marks = {number for number, line in enumerate(lines) if SKIP_MARK.fullmatch(line.strip())}
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            end = next((k for k in range(index + 1, len(lines)) if lines[k].strip() == "```"), None)
            if end is None:
                raise ValueError(f"README.md:{index + 1}: the ```python block is never closed.")
            mark = SKIP_MARK.fullmatch(lines[index - 1].strip()) if index > 0 else None
            marks.discard(index - 1)
            code = "\n".join(lines[index + 1 : end])
            blocks.append(Block(index + 2, code, mark["reason"].strip() if mark else None))
            index = end
        index += 1
    if marks:
        stray = ", ".join(f"README.md:{number + 1}" for number in sorted(marks))
        raise ValueError(f"readme-test skip marks not directly above a ```python block: {stray}.")
    return blocks


BLOCKS = python_blocks(README.read_text())


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run in ``tmp_path``; every ``lightning.pytorch.Trainer`` is tiny (see :data:`TINY`)."""
    monkeypatch.chdir(tmp_path)
    write_photos(tmp_path / "photos")
    write_photos(tmp_path / "new_photos" / "unsorted", per_class=2)
    original = pl.Trainer.__init__

    def tiny_init(self: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        kwargs.update(TINY)
        kwargs["max_epochs"] = min(kwargs.get("max_epochs") or MAX_EPOCHS, MAX_EPOCHS)
        original(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "__init__", tiny_init)
    return tmp_path


def _param(block: Block) -> Any:
    marks = [pytest.mark.skip(reason=f"README.md:{block.line}: {block.skip}")] if block.skip else []
    return pytest.param(block, id=f"README.md:{block.line}", marks=marks)


@pytest.mark.parametrize("block", [_param(block) for block in BLOCKS])
def test_readme_python_block_runs(block: Block, tiny: Path) -> None:
    # leading newlines put the code at its README line: tracebacks read README.md:<line>
    code = compile("\n" * (block.line - 1) + block.code, str(README), "exec")
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    try:
        exec(code, namespace)
    except Exception as error:
        raise AssertionError(
            f"the ```python block at README.md:{block.line} failed: {type(error).__name__}: {error}"
        ) from error


def test_blocks_are_found_and_skips_give_a_reason() -> None:
    assert len(BLOCKS) >= 8, [block.line for block in BLOCKS]
    skipped = [f"README.md:{block.line} ({block.skip})" for block in BLOCKS if block.skip]
    assert all(block.skip for block in BLOCKS if block.skip is not None), skipped
    with pytest.raises(ValueError, match="README.md:1"):
        python_blocks("<!-- readme-test: skip (x) -->\n\ntext\n```python\npass\n```")
    with pytest.raises(ValueError, match="never closed"):
        python_blocks("```python\npass\n")
    (block,) = python_blocks("<!-- readme-test: skip (needs a GPU) -->\n```python\nx = 1\n```")
    assert (block.line, block.code, block.skip) == (3, "x = 1", "needs a GPU")
    # a mark quoted in prose is not a mark
    (block,) = python_blocks("write `<!-- readme-test: skip (why) -->` above it\n```python\nx = 1\n```")
    assert block.skip is None
