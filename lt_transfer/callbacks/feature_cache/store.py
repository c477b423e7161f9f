"""Where cached features live: in memory or in a memory-mapped file, one store per loader.

A :class:`FeatureStore` holds the features of the rows one rank caches (compact rows, mapped
from data-set indices) and the other fields of those samples, and hands out cached samples in
the data set's own shape with a :class:`~.cached_features.CachedFeatures` input.
:class:`StorageSpec` allocates its feature matrix: its dtype, the memory limit and what
happens above it (an error, or a memory-mapped file that is deleted with the store).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info

from lt_transfer.callbacks.feature_cache.batch_layout import SampleLayout
from lt_transfer.callbacks.feature_cache.cached_features import CachedFeatures

__all__ = ["DTYPES", "FeatureCacheMemoryError", "FeatureStore", "LimitAction", "StorageDtype", "StorageSpec"]

StorageDtype = Literal["float32", "float16", "bfloat16"]
LimitAction = Literal["error", "memmap"]
#: The storage dtypes by name.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


class FeatureCacheMemoryError(MemoryError):
    """The estimated cache size exceeds ``max_memory_mb`` and ``on_limit="error"``.

    Example:
        >>> issubclass(FeatureCacheMemoryError, MemoryError)
        True
    """


@dataclass(frozen=True)
class StorageSpec:
    """How a store's feature matrix is allocated.

    Attributes:
        dtype: storage dtype name (features are served as ``float32``).
        max_memory_mb: limit for one store in MiB, ``None`` for none.
        on_limit: above the limit, ``"error"`` raises :class:`FeatureCacheMemoryError`,
            ``"memmap"`` maps the matrix to a file in ``memmap_dir``.
        memmap_dir: folder of those files (``None``: the system temp folder).

    Example:
        >>> features, path, size = StorageSpec("float16", None).allocate(10, 4, "train")
        >>> features.shape, features.dtype, path, size
        (torch.Size([10, 4]), torch.float16, None, 80)
    """

    dtype: StorageDtype = "float32"
    max_memory_mb: float | None = 4096.0
    on_limit: LimitAction = "error"
    memmap_dir: str | None = None

    def allocate(self, rows: int, width: int, name: str) -> tuple[torch.Tensor, str | None, int]:
        """An empty ``(rows, width)`` matrix, the path of its file (or ``None``) and its size in bytes.

        Raises:
            FeatureCacheMemoryError: above the limit with ``on_limit="error"``.
        """
        dtype = DTYPES[self.dtype]
        itemsize = torch.empty((), dtype=dtype).element_size()
        estimate = rows * width * itemsize
        megabytes = estimate / 2**20
        rank_zero_info(
            f"FeatureCache: caching {rows} {name} samples x {width} features as {self.dtype}: "
            f"{megabytes:.1f} MiB per rank."
        )
        if self.max_memory_mb is None or megabytes <= self.max_memory_mb:
            return torch.empty((rows, width), dtype=dtype), None, estimate
        if self.on_limit == "error":
            raise FeatureCacheMemoryError(
                f"FeatureCache: the {name} cache needs {megabytes:.1f} MiB ({rows} samples x {width} "
                f"features x {itemsize} bytes) > max_memory_mb={self.max_memory_mb}. Raise "
                "max_memory_mb, use dtype='float16' or 'bfloat16', or on_limit='memmap' to store "
                "it in a memory-mapped file."
            )
        handle, path = tempfile.mkstemp(prefix="feature_cache_", suffix=".bin", dir=self.memmap_dir)
        os.close(handle)
        with open(path, "wb") as file:
            file.truncate(max(estimate, 1))
        rank_zero_info(f"FeatureCache: above max_memory_mb={self.max_memory_mb}; memory-mapped at {path}.")
        features = torch.from_file(path, shared=True, size=rows * width, dtype=dtype).view(rows, width)
        return features, path, estimate


class FeatureStore:
    """The cached features and other fields of one loader's samples (on this rank).

    Rows are compact: only the data-set ``indices`` given here get one. The feature matrix is
    attached once its width is known (:meth:`attach`), then rows are filled (:meth:`fill`).

    Args:
        num_samples: size of the data set.
        indices: the data-set indices this store holds (repeats allowed).
        layout: the shape of the data set's samples.
        cache_id: the id stamped on every :class:`CachedFeatures` it serves.
        out_dtype: the dtype the backbone returned (cached features are handed back in it).

    Example:
        >>> store = FeatureStore(4, [1, 3], SampleLayout("tuple", (0, 1), 0), cache_id=3)
        >>> store.attach(torch.empty(store.num_rows, 2), None, [torch.tensor([0])])
        >>> store.fill(torch.tensor([1, 3]), torch.tensor([[1.0, 1.0], [3.0, 3.0]]), [torch.tensor([0, 1])])
        >>> (x, y), = store.samples([3])
        >>> type(x).__name__, x.tolist(), int(x.sample_indices), x.cache_id, int(y)
        ('CachedFeatures', [3.0, 3.0], 3, 3, 1)
    """

    def __init__(
        self,
        num_samples: int,
        indices: Sequence[int],
        layout: SampleLayout,
        cache_id: int,
        out_dtype: torch.dtype = torch.float32,
    ) -> None:
        unique = torch.as_tensor(sorted(set(indices)), dtype=torch.long)
        self.row_of = torch.full((num_samples,), -1, dtype=torch.long)
        self.row_of[unique] = torch.arange(len(unique))
        self.num_rows = len(unique)
        self.layout = layout
        self.cache_id = cache_id
        self.out_dtype = out_dtype
        self.features: torch.Tensor | None = None
        self.fields: list[torch.Tensor] = []  # per non-input field: (rows, ...)
        self.path: str | None = None  # the memory-mapped file, if any

    def attach(
        self, features: torch.Tensor, path: str | None, field_examples: Sequence[torch.Tensor]
    ) -> None:
        """Use ``features`` (``(num_rows, D)``, from :meth:`StorageSpec.allocate`) as the matrix.

        ``field_examples`` are batches of the other fields (their dtype and trailing shape).
        """
        self.features, self.path = features, path
        self.fields = [torch.empty((self.num_rows, *f.shape[1:]), dtype=f.dtype) for f in field_examples]

    def fill(self, indices: torch.Tensor, features: torch.Tensor, fields: Sequence[torch.Tensor]) -> None:
        """Store the features and other fields of the samples at data-set ``indices``."""
        assert self.features is not None, "attach() the feature matrix first"
        rows = self.row_of[indices.cpu()]
        self.features[rows] = features.to(device="cpu", dtype=self.features.dtype)
        for target, field in zip(self.fields, fields, strict=True):
            target[rows] = field.cpu()

    def holds(self, indices: Sequence[int]) -> bool:
        """Whether every data-set index in ``indices`` has a row here.

        Example:
            >>> store = FeatureStore(4, [1, 3], SampleLayout("tensor", (), None), cache_id=1)
            >>> store.holds([3, 1]), store.holds([1, 2])
            (True, False)
        """
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return bool((self.row_of[index] >= 0).all())

    def missing(self, indices: Sequence[int]) -> list[int]:
        """The data-set indices in ``indices`` without a row here, once each, in order.

        Example:
            >>> store = FeatureStore(5, [1, 3], SampleLayout("tensor", (), None), cache_id=1)
            >>> store.missing([4, 1, 0, 4])
            [4, 0]
        """
        unique = list(dict.fromkeys(int(i) for i in indices))
        if not unique:
            return []
        absent = (self.row_of[torch.as_tensor(unique, dtype=torch.long)] < 0).tolist()
        return [i for i, gone in zip(unique, absent, strict=True) if gone]

    def held_indices(self) -> torch.Tensor:
        """The data-set indices that have a row, ascending."""
        return torch.nonzero(self.row_of >= 0).flatten()

    def copy_rows(self, other: FeatureStore) -> None:
        """Copy every row of ``other`` (same data set and layout) into this store.

        Raises:
            ValueError: a row of ``other`` has no place here.
        """
        assert self.features is not None and other.features is not None
        indices = other.held_indices()
        if not self.holds(indices.tolist()):
            raise ValueError("FeatureStore.copy_rows: the other store holds samples this one has no row for.")
        source, target = other.row_of[indices], self.row_of[indices]
        self.features[target] = other.features[source].to(self.features.dtype)
        for mine, theirs in zip(self.fields, other.fields, strict=True):
            mine[target] = theirs[source]

    def samples(self, indices: Sequence[int]) -> list[Any]:
        """Cached samples for data-set ``indices``, shaped as the data set's own."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        rows = self.row_of[index]
        if bool((rows < 0).any()):
            missing = index[rows < 0][:5].tolist()
            raise RuntimeError(f"FeatureCache: samples {missing} are not in the cache of this rank.")
        assert self.features is not None
        features = self.features[rows].float()
        inputs = [
            CachedFeatures(row, i, self.cache_id)
            for row, i in zip(features.unbind(0), index.unbind(0), strict=True)
        ]
        fields = [field[rows].unbind(0) for field in self.fields]
        return self.layout.samples(inputs, fields)

    def release(self) -> None:
        """Free the features (and delete the memory-mapped file)."""
        self.features = None
        self.fields = []
        if self.path is not None and os.path.exists(self.path):
            os.remove(self.path)
        self.path = None
