"""The project stands on its own: no references outside the repository; a typed wheel."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".txt", ".ini", ""}
# a relative path that climbs out of its folder, e.g. ../shared/DATA.md or ../../x
RELATIVE_ESCAPE = re.compile(r"(?<![\w.])((?:\.\./)+[\w.\-/]*)")
# places on the developers' machines that a user's clone does not have
MACHINE_PATHS = re.compile(r"/work/|shared/(?:DATA|DESIGN)\.md|shared/hooks|shared/drafts")
# tests whose subject is such references (escaping pkg:// paths, this check itself)
EXEMPT = {"tests/test_packaging.py", "tests/test_resources.py"}


def tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in listed]


def test_no_tracked_file_refers_outside_the_repository() -> None:
    offences = []
    for path in tracked_files():
        if path.suffix not in TEXT_SUFFIXES or not path.is_file() or str(path.relative_to(ROOT)) in EXEMPT:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}"
            if MACHINE_PATHS.search(line):
                offences.append(f"{where}: {line.strip()[:120]}")
            for match in RELATIVE_ESCAPE.finditer(line):
                target = (path.parent / match.group(1)).resolve()
                if not target.is_relative_to(ROOT):
                    offences.append(f"{where}: {match.group(1)!r} resolves outside the repository")
    assert not offences, "references outside the repository:\n" + "\n".join(offences)


def test_the_check_catches_an_outside_reference(tmp_path: Path) -> None:
    line = "see ../shared/DATA.md for the list"
    match = RELATIVE_ESCAPE.search(line)
    assert match is not None and not (ROOT / match.group(1)).resolve().is_relative_to(ROOT)
    assert MACHINE_PATHS.search("python /work/main/x.py")


def test_wheel_ships_py_typed_without_metadata_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
        + [str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    for warning in ("License classifiers are deprecated", "project.license", "SetuptoolsDeprecationWarning"):
        assert warning not in output, output[-2000:]
    wheel = next(tmp_path.glob("lt_transfer-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        assert "lt_transfer/py.typed" in archive.namelist()
