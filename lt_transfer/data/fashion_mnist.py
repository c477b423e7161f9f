"""Fashion-MNIST from local IDX files: :func:`read_idx`, :func:`load_fashion_mnist`, a DataModule.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) has MNIST's format (28×28 grey, 10 classes,
60k training + 10k test images) with photos of clothes, a harder few-label target. Nothing is
downloaded: the four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, gzipped or not) are read from a folder,
by default :data:`FASHION_MNIST_ROOT`, where the Debian package ``dataset-fashion-mnist``
installs them (``apt-get install dataset-fashion-mnist``). As for MNIST, the last 10k training
images are the validation split: 50k / 10k / 10k.
"""

from __future__ import annotations

import gzip
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lt_transfer.data.digits import DigitsDataModule
from lt_transfer.data.sources import ImageSplit, ImageSplits

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "FashionMNISTDataModule",
    "load_fashion_mnist",
    "VAL_SIZE",
    "read_idx",
    "write_idx",
    "write_tiny_fashion_mnist",
]

#: Where the Debian package ``dataset-fashion-mnist`` puts the IDX files.
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
#: Class names, index = label.
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: The last this many training images are the validation split (as MNIST's 50k / 10k).
VAL_SIZE = 10_000


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped (``.gz``) or not.

    Raises:
        ValueError: a file that is not IDX (bad magic number or type code) or is truncated.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = path.write_bytes(bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + bytes([7, 0, 9]))
        >>> read_idx(path).tolist()
        [7, 0, 9]
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(
            f"read_idx: {str(path)!r} is not an IDX file (it must start with two zero bytes, a type code "
            f"in {sorted(_IDX_TYPES)} and the number of dimensions); got {data[:4]!r}."
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header]) if len(data) >= header else ()
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize if shape else 0
    if len(data) < header or len(data) - header != expected:
        raise ValueError(
            f"read_idx: {str(path)!r} is truncated or padded: its header says shape {tuple(shape)} "
            f"({expected} bytes of data) but it holds {max(len(data) - header, 0)}; fetch the file again."
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends in ``.gz``); returns the path.

    Example:
        >>> import tempfile
        >>> path = write_idx(Path(tempfile.mkdtemp()) / "x-idx3-ubyte.gz", np.zeros((2, 3, 3), np.uint8))
        >>> read_idx(path).shape
        (2, 3, 3)
    """
    path = Path(path)
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(
            f"write_idx: dtype {array.dtype} has no IDX type code; use one of {list(_IDX_CODES)}."
        )
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.dtype(_IDX_TYPES[code])).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(payload)
    return path


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"load_fashion_mnist: no {stem}(.gz) in {str(root)!r}. Install the Debian package "
        f"dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`, it fills {FASHION_MNIST_ROOT}), "
        "or put the four Fashion-MNIST IDX files in a folder and pass root=<that folder>."
    )


@lru_cache(maxsize=2)
def _load(root: str, val_size: int) -> ImageSplits:
    folder = Path(root)
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in _FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"load_fashion_mnist: {split} images of shape {images.shape} and labels of shape "
                f"{labels.shape} in {root!r} do not fit together; expected (N, 28, 28) and (N,)."
            )
    if len(arrays["train_labels"]) <= val_size:
        raise ValueError(
            f"load_fashion_mnist(val_size={val_size}): {root!r} holds {len(arrays['train_labels'])} "
            "training images; the last val_size are the validation split, so more are needed (the full "
            "set has 60,000)."
        )

    def split(images: np.ndarray, labels: np.ndarray) -> ImageSplit:
        return ImageSplit(
            torch.from_numpy(images.astype(np.uint8)), torch.from_numpy(labels.astype(np.int64))
        )

    train_images, train_labels = arrays["train_images"], arrays["train_labels"]
    return ImageSplits(
        split(train_images[:-val_size], train_labels[:-val_size]),
        split(train_images[-val_size:], train_labels[-val_size:]),
        split(arrays["test_images"], arrays["test_labels"]),
    )


def load_fashion_mnist(root: str | Path = FASHION_MNIST_ROOT, val_size: int = VAL_SIZE) -> ImageSplits:
    """Fashion-MNIST as ``uint8`` splits: the full set gives 50k train / 10k val / 10k test.

    Args:
        root: folder of the four IDX files.
        val_size: the last ``val_size`` training images are the validation split.

    Raises:
        FileNotFoundError: a missing IDX file (the message says how to get them).
        ValueError: files that are not IDX or do not fit together.

    Example:
        >>> import tempfile
        >>> root = write_tiny_fashion_mnist(Path(tempfile.mkdtemp()), train=12, test=4)
        >>> splits = load_fashion_mnist(root, val_size=2)
        >>> len(splits.train), len(splits.val), len(splits.test), tuple(splits.test.images.shape[1:])
        (10, 2, 4, (28, 28))
    """
    if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 1:
        raise ValueError(f"load_fashion_mnist(val_size={val_size!r}) must be an int >= 1.")
    return _load(str(Path(root).resolve()), val_size)


def write_tiny_fashion_mnist(root: str | Path, train: int = 20, test: int = 10) -> Path:
    """Write flat grey images (shade = label) in Fashion-MNIST's file layout, for tests and examples.

    Labels cycle through the 10 classes. Returns ``root``.

    Example:
        >>> import tempfile
        >>> sorted(p.name for p in write_tiny_fashion_mnist(Path(tempfile.mkdtemp())).iterdir())[:2]
        ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz']
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        images = np.broadcast_to((labels * 25)[:, None, None], (count, 28, 28))
        write_idx(root / f"{_FILES[f'{split}_images']}.gz", images)
        write_idx(root / f"{_FILES[f'{split}_labels']}.gz", labels)
    return root


class FashionMNISTDataModule(DigitsDataModule):
    """Fashion-MNIST for transfer learning, with the options of :class:`DigitsDataModule`.

    Images are resized to ``image_size``, repeated to 3 channels and ImageNet-normalised by
    default; ``labels_per_class`` makes a few-label training split.

    Args:
        root: folder holding the four IDX files (see the module docstring).
        **kwargs: the other arguments of :class:`DigitsDataModule` (``image_size``, ``channels``,
            ``normalize``, ``labels_per_class``, ``val_samples``, ``test_samples``, ``augment``,
            ``batch_size``, ``num_workers``, ``seed``), by keyword; the CLI lists them with their
            types (``--data.help lt_transfer.FashionMNISTDataModule``). Its ``dataset`` is fixed.

    Example:
        >>> import tempfile
        >>> root = write_tiny_fashion_mnist(Path(tempfile.mkdtemp()), train=10_040, test=10)
        >>> dm = FashionMNISTDataModule(str(root), labels_per_class=2)
        >>> dm.setup("fit")
        >>> len(dm.train_set), len(dm.val_set), dm.class_names[9]
        (20, 10000, 'Ankle boot')
    """

    num_classes = 10
    class_names = list(FASHION_MNIST_CLASSES)
    _fixed_arguments = ("dataset",)  # the data is Fashion-MNIST, whatever the parent's dataset says

    def __init__(self, root: str = FASHION_MNIST_ROOT, **kwargs: Any) -> None:
        super().__init__("mnist", **kwargs)

    def _splits(self) -> ImageSplits:
        return load_fashion_mnist(self.hparams.root)
