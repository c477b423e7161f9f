"""pkg:// references stay inside their package; offline files are found without importing."""

from __future__ import annotations

from pathlib import Path

import pytest

from lt_transfer.resources import package_path, resolve_package_uri


@pytest.mark.parametrize(
    "uri",
    [
        "pkg://mnist/../../../etc/passwd",
        "pkg://mnist/data/../../torch/__init__.py",
        "pkg://mnist//etc/passwd",
        "pkg://../mnist/data/mnist.pkl.gz",
        "pkg://mnist/data\\..\\..\\torch",
    ],
)
def test_package_uri_escapes_are_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="package"):
        resolve_package_uri(uri)


def test_link_out_of_the_package_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "fake_weights_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    secret = tmp_path / "secret.pth"
    secret.write_text("not yours")
    (package / "weights.pth").symlink_to(secret)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(ValueError, match="outside the package folder"):
        resolve_package_uri("pkg://fake_weights_pkg/weights.pth")


def test_files_inside_the_package_resolve() -> None:
    path = resolve_package_uri("pkg://mnist/data/mnist.pkl.gz")
    assert path.is_file() and path == package_path("mnist", "data", "mnist.pkl.gz")


def test_missing_package_names_the_install_docs() -> None:
    with pytest.raises(FileNotFoundError, match="docs/data.md"):
        package_path("no_such_package_xyz", "file.bin")
