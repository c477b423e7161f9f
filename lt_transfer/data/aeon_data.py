"""The time-series data that the ``aeon`` package ships in its wheel, found and read offline.

``aeon`` is installed with ``--no-deps`` (its numba requirement is not installed), so it is
never imported: its files are found with :func:`lt_transfer.resources.package_path` under
``aeon/datasets/data/`` and parsed by :mod:`lt_transfer.data.ts_formats`.

* UCR/UEA classification sets: ``<Folder>/<Name>_TRAIN.ts`` with ``<Name>_TEST.ts`` beside it
  (:func:`ucr_names` lists them: ArrowHead, GunPoint, OSULeaf, ACSF1, ItalyPowerDemand,
  BasicMotions, JapaneseVowels, PickupGestureWiimoteZ, ...; :func:`load_ucr` reads one);
* forecasting data (:data:`FORECASTING_SETS`, :func:`load_forecasting`): the 181 M1 yearly
  series (``m1_yearly``, horizon 6), Airline passengers, Lynx, ShampooSales, solar.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lt_transfer.data.ts_formats import LabelledSeries, SeriesCollection, read_series_csv, read_ts, read_tsf
from lt_transfer.resources import package_path

__all__ = ["FORECASTING_SETS", "aeon_data_folder", "load_forecasting", "load_ucr", "ucr_names"]

#: Forecasting data shipped by aeon: name → (file inside ``aeon/datasets/data``, frequency).
FORECASTING_SETS: dict[str, tuple[str, str]] = {
    "m1_yearly": ("m1_yearly_dataset/m1_yearly_dataset.tsf", "yearly"),
    "airline": ("Airline/Airline.csv", "monthly"),
    "lynx": ("Lynx/Lynx.csv", "yearly"),
    "shampoo_sales": ("ShampooSales/ShampooSales.csv", "monthly"),
    "solar": ("solar/solar.csv", "half_hourly"),
}


def aeon_data_folder() -> Path:
    """The ``aeon/datasets/data`` folder of the installed ``aeon`` package.

    Raises:
        FileNotFoundError: aeon is not installed (the message names the pip command).

    Example:
        >>> aeon_data_folder().name
        'data'
    """
    return package_path("aeon", "datasets", "data")


def _declares_classes(path: Path) -> bool:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            words = line.strip().lower().split()
            if words[:1] == ["@data"]:
                return False
            if words[:2] == ["@classlabel", "true"]:
                return True
    return False


@lru_cache(maxsize=1)
def _ucr_files() -> dict[str, tuple[Path, Path]]:
    found = {}
    for train in sorted(aeon_data_folder().glob("*/*_TRAIN.ts")):
        name = train.name.removesuffix("_TRAIN.ts")
        test = train.with_name(f"{name}_TEST.ts")
        if test.is_file() and _declares_classes(train):
            found[name] = (train, test)
    return found


def ucr_names() -> list[str]:
    """Names of the classification sets aeon ships (train and test files, class labels).

    Example:
        >>> {"ArrowHead", "GunPoint", "JapaneseVowels"} <= set(ucr_names())
        True
    """
    return list(_ucr_files())


def load_ucr(name: str) -> tuple[LabelledSeries, LabelledSeries]:
    """Read the train and test split of the UCR/UEA set ``name`` that aeon ships.

    Raises:
        ValueError: a name aeon does not ship (the message lists those it does).

    Example:
        >>> train, test = load_ucr("GunPoint")
        >>> len(train), len(test), train.lengths[0], train.class_names
        (50, 150, 150, ('1', '2'))
    """
    files = _ucr_files()
    if name not in files:
        raise ValueError(
            f"UCR data set {name!r} is not shipped by the installed aeon package; choose one of "
            f"{sorted(files)}, or pass your own .ts / .csv files (train=..., test=...)."
        )
    train, test = files[name]
    return read_ts(train), read_ts(test)


def load_forecasting(name: str) -> SeriesCollection:
    """Read the forecasting data ``name`` of :data:`FORECASTING_SETS`.

    Raises:
        ValueError: an unknown name (the message lists the known ones).

    Example:
        >>> m1 = load_forecasting("m1_yearly")
        >>> len(m1), m1.horizon, m1.frequency, min(m1.lengths)
        (181, 6, 'yearly', 15)
    """
    if name not in FORECASTING_SETS:
        raise ValueError(
            f"forecasting data {name!r} is not one aeon ships; choose one of {sorted(FORECASTING_SETS)}, or "
            "pass a .tsf / .csv file or a list of series."
        )
    relative, frequency = FORECASTING_SETS[name]
    path = aeon_data_folder().joinpath(*relative.split("/"))
    if path.suffix == ".tsf":
        return read_tsf(path)
    collection = read_series_csv(path)
    return SeriesCollection(collection.values, collection.names, frequency)
