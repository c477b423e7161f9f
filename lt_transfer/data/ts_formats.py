"""Readers for time-series files: UCR/UEA ``.ts``, Monash ``.tsf`` and CSV, into two plain types.

* :class:`LabelledSeries`: classification data, one float array ``(channels, length)`` per
  case (lengths may differ, as in JapaneseVowels) and one string label per case;
* :class:`SeriesCollection`: forecasting data, one 1-D float array per series (lengths may
  differ, as in the M1 competition), with the file's frequency and horizon.

Readers (missing values, ``?`` or ``NaN``, become ``nan``; what to do with them is the data
modules' ``fill=`` policy):

* :func:`read_ts`: the ``.ts`` format of the UCR/UEA archive and ``aeon`` (header lines
  ``@problemName``, ``@univariate``, ``@dimensions``, ``@equalLength``, ``@seriesLength``,
  ``@classLabel true <labels>``, then ``@data``; each case on one line, its channels separated
  by ``:``, values by ``,``, the class label last). Comment lines start with ``#`` or ``%``.
  Time-stamped files (``@timeStamps true``) and regression files (``@targetLabel true``) are
  refused with a message;
* :func:`read_tsf`: the ``.tsf`` format of the Monash forecasting archive (``@attribute
  <name> <type>`` lines, ``@frequency``, ``@horizon``, ``@missing``, ``@equallength``, then
  ``@data``; each series on one line: its attribute values and then its values, separated by
  ``:``);
* :func:`read_labelled_csv`: one univariate series per row, the label in ``label_column``
  (the UCR archive's ``.tsv`` files: label first); shorter rows end in empty cells;
* :func:`read_series_csv`: one series per column with an optional header row (``Airline.csv``:
  ``Date,Passengers``).

Every error names the file and the line.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LabelledSeries",
    "SeriesCollection",
    "read_labelled_csv",
    "read_series_csv",
    "read_ts",
    "read_tsf",
]

_MISSING = ("?", "", "nan", "NaN", "NA")


@dataclass(frozen=True)
class LabelledSeries:
    """Labelled series of one split: ``series[i]`` is a float array ``(channels, length_i)``.

    Attributes:
        series: one float64 array ``(C, L_i)`` per case; every case has the same ``C``.
        labels: one class label (a string) per case.
        class_names: the labels the file declares (``@classLabel``), in its order; ``None``
            when it declares none.
        name: where the data came from (problem name or file), for messages.

    Raises:
        ValueError: a count mismatch, an array that is not 1-D or 2-D, mixed channel counts.

    Example:
        >>> data = LabelledSeries.from_arrays([[1.0, 2.0, 3.0], [4.0, 5.0]], ["a", "b"])
        >>> data.lengths, data.num_channels, data.labels
        ([3, 2], 1, ('a', 'b'))
    """

    series: tuple[np.ndarray, ...]
    labels: tuple[str, ...]
    class_names: tuple[str, ...] | None = None
    name: str = "series"

    def __post_init__(self) -> None:
        if len(self.series) != len(self.labels):
            raise ValueError(
                f"LabelledSeries {self.name!r}: {len(self.series)} series but {len(self.labels)} labels."
            )
        channels = {s.shape[0] for s in self.series if s.ndim == 2}
        if any(s.ndim != 2 for s in self.series) or len(channels) > 1:
            raise ValueError(
                f"LabelledSeries {self.name!r}: every series must be an array (channels, length) with the "
                f"same number of channels; got channel counts {sorted(channels)}."
            )

    def __len__(self) -> int:
        return len(self.series)

    @property
    def lengths(self) -> list[int]:
        """The length of every series."""
        return [int(s.shape[1]) for s in self.series]

    @property
    def num_channels(self) -> int:
        """Channels per series (0 for an empty split)."""
        return int(self.series[0].shape[0]) if self.series else 0

    @classmethod
    def from_arrays(cls, x: Any, y: Sequence[Any], name: str = "arrays") -> LabelledSeries:
        """From an array ``(N, L)`` / ``(N, C, L)`` or a list of ``(L,)`` / ``(C, L)`` arrays, and labels.

        Labels of any type are stored as strings (``1`` and ``"1"`` are the same class).

        Example:
            >>> import numpy as np
            >>> LabelledSeries.from_arrays(np.zeros((4, 2, 10)), [0, 1, 0, 1]).series[0].shape
            (2, 10)
        """
        if isinstance(x, np.ndarray) and x.ndim in (2, 3):
            cases = [np.asarray(row, dtype=np.float64) for row in x]
        elif isinstance(x, (list, tuple)):
            cases = [np.asarray(row, dtype=np.float64) for row in x]
        else:
            raise TypeError(
                f"LabelledSeries.from_arrays(x=...): expected an array (N, L) or (N, C, L) or a list of "
                f"(L,) / (C, L) arrays, got {type(x).__name__} {getattr(x, 'shape', '')}."
            )
        cases = [case[None, :] if case.ndim == 1 else case for case in cases]
        labels = tuple(str(label.item() if hasattr(label, "item") else label) for label in y)
        return cls(tuple(cases), labels, None, name)


@dataclass(frozen=True)
class SeriesCollection:
    """Univariate series for forecasting, with what the file says about them.

    Attributes:
        values: one float64 array ``(L_i,)`` per series.
        names: one name per series.
        frequency: ``"yearly"``, ``"monthly"``, ... when known.
        horizon: the forecast horizon the file declares, when it does.
        start_timestamps: each series' first time stamp, when the file gives them.

    Example:
        >>> collection = SeriesCollection((np.arange(3.0), np.arange(5.0)), ("a", "b"), "yearly")
        >>> collection.lengths, len(collection)
        ([3, 5], 2)
    """

    values: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    frequency: str | None = None
    horizon: int | None = None
    start_timestamps: tuple[str, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if len(self.values) != len(self.names):
            raise ValueError(f"SeriesCollection: {len(self.values)} series but {len(self.names)} names.")
        if any(v.ndim != 1 for v in self.values):
            raise ValueError("SeriesCollection: every series must be a 1-D array.")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def lengths(self) -> list[int]:
        """The length of every series."""
        return [len(v) for v in self.values]


def _numbers(text: str, where: str) -> np.ndarray:
    parts = [part.strip() for part in text.split(",")]
    try:
        return np.array([np.nan if part in _MISSING else float(part) for part in parts], dtype=np.float64)
    except ValueError as error:
        raise ValueError(
            f"{where}: {error}; values must be numbers separated by ',' ('?' = missing)."
        ) from error


def _lines(path: Path) -> list[tuple[int, str]]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        return [(number, line.strip()) for number, line in enumerate(handle, start=1)]


def _is_comment(line: str) -> bool:
    return not line or line.startswith(("#", "%"))


def _flag(value: str) -> bool:
    """Whether a header value starts with ``true`` (``@classLabel true 1 2`` included)."""
    words = value.split()
    return bool(words) and words[0].lower() == "true"


def _existing(path: str | os.PathLike[str], reader: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{reader}({str(path)!r}): no such file.")
    return path


def read_ts(path: str | os.PathLike[str]) -> LabelledSeries:
    """Read a UCR/UEA ``.ts`` classification file (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a time-stamped or regression file, a file without ``@data`` or class labels,
            a case whose label is not declared, whose channel count differs from the header's or
            whose channels differ in length (each named with its line).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "tiny.ts"
        >>> _ = path.write_text("# two channels, unequal lengths\\n@problemName tiny\\n@univariate false\\n"
        ...     "@dimensions 2\\n@equalLength false\\n@classLabel true up down\\n@data\\n"
        ...     "1,2,3:4,5,6:up\\n7,?:8,9:down\\n")
        >>> data = read_ts(path)
        >>> data.name, data.lengths, data.labels, data.class_names
        ('tiny', [3, 2], ('up', 'down'), ('up', 'down'))
        >>> data.series[1].tolist()
        [[7.0, nan], [8.0, 9.0]]
    """
    path = _existing(path, "read_ts")
    header: dict[str, str] = {}
    cases: list[np.ndarray] = []
    labels: list[str] = []
    declared: list[str] | None = None  # set at '@data'
    channels_declared: int | None = None
    for number, line in _lines(path):
        where = f"read_ts({str(path)!r}) line {number}"
        if _is_comment(line):
            continue
        if declared is None:
            if not line.startswith("@"):
                raise ValueError(
                    f"{where}: expected a '@<key> <value>' header line or '@data', got {line[:40]!r}."
                )
            key, _, value = line[1:].partition(" ")
            if key.lower() == "data":
                declared, channels_declared = _check_ts_header(header, where)
            elif key.lower() not in header:  # the first value counts (UnitTest_TEST.ts names two problems)
                header[key.lower()] = value.strip()
            continue
        fields = line.split(":")
        label = fields.pop().strip()
        if declared and label not in declared:
            raise ValueError(f"{where}: class label {label!r} is not one of the declared labels {declared}.")
        channels = [_numbers(text, where) for text in fields]
        if len({len(c) for c in channels}) != 1:
            raise ValueError(
                f"{where}: the case's {len(channels)} channels have different lengths "
                f"{[len(c) for c in channels]}; each channel of a case must have one length."
            )
        expected = channels_declared or (cases[0].shape[0] if cases else len(channels))
        if len(channels) != expected:
            raise ValueError(
                f"{where}: {len(channels)} channels, but the "
                f"{'header declares' if channels_declared else 'first case has'} {expected}."
            )
        cases.append(np.stack(channels))
        labels.append(label)
    if declared is None:
        raise ValueError(f"read_ts({str(path)!r}): no '@data' line; is this a .ts file?")
    name = header.get("problemname", path.stem)
    return LabelledSeries(tuple(cases), tuple(labels), tuple(declared) or None, name)


def _check_ts_header(header: dict[str, str], where: str) -> tuple[list[str], int | None]:
    """The declared class labels and channel count; refuses what :func:`read_ts` does not read."""
    if _flag(header.get("timestamps", "false")):
        raise ValueError(
            f"{where}: time-stamped .ts files (@timeStamps true) are not supported; export the values "
            "without time stamps."
        )
    if _flag(header.get("targetlabel", "false")):
        raise ValueError(
            f"{where}: this .ts file holds regression targets (@targetLabel true), not class labels."
        )
    if not _flag(header.get("classlabel", "false")):
        raise ValueError(
            f"{where}: the file declares no class labels (@classLabel true <labels>); classification "
            "needs them."
        )
    channels = 1 if _flag(header.get("univariate", "false")) else None
    if channels is None and header.get("dimensions", "").isdigit():
        channels = int(header["dimensions"])
    return header["classlabel"].split()[1:], channels


def read_tsf(path: str | os.PathLike[str]) -> SeriesCollection:
    """Read a Monash ``.tsf`` forecasting file (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file without ``@data``, a line with fewer fields than attributes (named
            with its line), a non-numeric value.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "tiny.tsf"
        >>> _ = path.write_text("@relation tiny\\n@attribute series_name string\\n"
        ...     "@attribute start_timestamp date\\n@frequency yearly\\n@horizon 2\\n@data\\n"
        ...     "T1:1990-01-01 00-00-00:1,2,3\\nT2:1991-01-01 00-00-00:4,?,6,7\\n")
        >>> data = read_tsf(path)
        >>> data.names, data.frequency, data.horizon, data.lengths
        (('T1', 'T2'), 'yearly', 2, [3, 4])
        >>> data.start_timestamps[1], data.values[1].tolist()
        ('1991-01-01 00-00-00', [4.0, nan, 6.0, 7.0])
    """
    path = _existing(path, "read_tsf")
    attributes: list[str] = []
    header: dict[str, str] = {}
    values: list[np.ndarray] = []
    rows: list[list[str]] = []
    in_data = False
    for number, line in _lines(path):
        where = f"read_tsf({str(path)!r}) line {number}"
        if _is_comment(line):
            continue
        if not in_data:
            key, _, value = line.lstrip("@").partition(" ")
            key = key.lower()
            if key == "data":
                in_data = True
            elif key == "attribute":
                attributes.append(value.split()[0] if value.split() else f"attribute{len(attributes)}")
            else:
                header[key] = value.strip()
            continue
        fields = line.split(":", len(attributes))
        if len(fields) != len(attributes) + 1:
            raise ValueError(
                f"{where}: expected {len(attributes)} attribute values ({attributes}) and the series, "
                f"separated by ':'; got {len(fields)} fields."
            )
        rows.append(fields[:-1])
        values.append(_numbers(fields[-1], where))
    if not in_data:
        raise ValueError(f"read_tsf({str(path)!r}): no '@data' line; is this a .tsf file?")
    column = {name: [row[i] for row in rows] for i, name in enumerate(attributes)}
    names = column.get("series_name") or [f"T{i + 1}" for i in range(len(values))]
    horizon = int(header["horizon"]) if header.get("horizon", "").isdigit() else None
    starts = column.get("start_timestamp")
    return SeriesCollection(
        tuple(values), tuple(names), header.get("frequency"), horizon, tuple(starts) if starts else None
    )


def _csv_rows(path: Path, delimiter: str | None) -> list[list[str]]:
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        return [row for row in csv.reader(handle, delimiter=delimiter) if any(cell.strip() for cell in row)]


def read_labelled_csv(
    path: str | os.PathLike[str], label_column: int = 0, delimiter: str | None = None
) -> LabelledSeries:
    """Read univariate labelled series, one per row (``.csv``; ``.tsv`` is tab-separated).

    Args:
        path: the file; no header row.
        label_column: the column of the label (0: first, as in the UCR archive; -1: last).
        delimiter: the column separator (default: tab for ``.tsv``, else ``,``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: an empty file, a non-numeric value (named with its row).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "tiny.csv"
        >>> _ = path.write_text("a,1,2,3\\nb,4,5,\\n")
        >>> data = read_labelled_csv(path)
        >>> data.labels, data.lengths
        (('a', 'b'), [3, 2])
    """
    path = _existing(path, "read_labelled_csv")
    rows = _csv_rows(path, delimiter)
    if not rows:
        raise ValueError(f"read_labelled_csv({str(path)!r}): the file holds no rows.")
    cases, labels = [], []
    for number, row in enumerate(rows, start=1):
        where = f"read_labelled_csv({str(path)!r}) row {number}"
        try:
            label = row.pop(label_column).strip()
        except IndexError as error:
            raise ValueError(
                f"{where}: no column {label_column} (label_column) in a row of {len(row)}."
            ) from error
        while row and not row[-1].strip():  # shorter series end in empty cells
            row.pop()
        cases.append(_numbers(",".join(row), where)[None, :])
        labels.append(label[:-2] if label.endswith(".0") and label[:-2].lstrip("-").isdigit() else label)
    return LabelledSeries(tuple(cases), tuple(labels), None, path.stem)


def read_series_csv(
    path: str | os.PathLike[str], columns: Sequence[str] | None = None, delimiter: str | None = None
) -> SeriesCollection:
    """Read series stored one per column, with or without a header row.

    A first row with a non-numeric cell in a selected column is the header. Non-numeric
    columns (dates) are skipped unless named.

    Args:
        path: the file.
        columns: header names of the series columns (default: every numeric column).
        delimiter: the column separator (default: tab for ``.tsv``, else ``,``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a named column that does not exist (the message lists the columns), no
            numeric column.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "sales.csv"
        >>> _ = path.write_text("month,sales\\n2020-01,1.5\\n2020-02,?\\n2020-03,2\\n")
        >>> data = read_series_csv(path)
        >>> data.names, data.values[0].tolist()
        (('sales',), [1.5, nan, 2.0])
    """
    path = _existing(path, "read_series_csv")
    rows = _csv_rows(path, delimiter)
    if not rows:
        raise ValueError(f"read_series_csv({str(path)!r}): the file holds no rows.")

    def number(cell: str, missing: bool) -> bool:
        try:
            float(cell)
        except ValueError:
            return missing and cell.strip() in _MISSING
        return True

    width = max(len(row) for row in rows)
    numeric_columns = [i for i in range(width) if all(number(r[i], True) for r in rows[1:] if i < len(r))]
    # a header: a cell of the first row that is no number, in a column of numbers (or an empty one)
    has_header = any(i < len(rows[0]) and not number(rows[0][i], False) for i in numeric_columns)
    header = [
        (rows[0][i].strip() if has_header and i < len(rows[0]) else "") or f"column{i}" for i in range(width)
    ]
    body = rows[1:] if has_header else rows
    if columns is None:
        selected = list(numeric_columns)
        if has_header and header[0] == "column0" and len(selected) > 1:
            selected = selected[1:]  # an unnamed first column is the index (Lynx.csv: ",0")
    else:
        unknown = [name for name in columns if name not in header]
        if unknown:
            raise ValueError(
                f"read_series_csv({str(path)!r}): no columns {unknown}; the columns are {header}."
            )
        selected = [header.index(name) for name in columns]
    if not selected:
        raise ValueError(f"read_series_csv({str(path)!r}): no numeric column among {header}.")
    values = tuple(
        _numbers(",".join(r[i] if i < len(r) else "" for r in body), f"read_series_csv({str(path)!r})")
        for i in selected
    )
    return SeriesCollection(values, tuple(header[i] for i in selected))
