"""Readers of .ts, .tsf and CSV series against small hand-written files; aeon's shipped data;
the preprocessing functions (NaN policy, z-normalisation, length)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lt_transfer.data import (
    LabelledSeries,
    fill_missing,
    fit_length,
    load_forecasting,
    load_ucr,
    read_labelled_csv,
    read_series_csv,
    read_ts,
    read_tsf,
    stack_series,
    ucr_names,
    z_normalize,
)

UNIVARIATE = """# a comment
% another comment
@problemName Tiny
@timeStamps false
@missing false
@univariate true
@equalLength true
@seriesLength 4
@classLabel true 2 10 1
@data
1,2,3,4:10
0.5,-1,2e1,4:2
4,3,2,1:1
"""

MULTIVARIATE = """@problemName Multi
@univariate false
@dimensions 3
@equalLength false
@classLabel true walk run
@data
1,2,3:4,5,6:7,8,9:walk
1,?:2,3:NaN,4:run
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_univariate_ts(tmp_path: Path) -> None:
    data = read_ts(_write(tmp_path, "u.ts", UNIVARIATE))
    assert data.name == "Tiny"
    assert data.labels == ("10", "2", "1") and data.class_names == ("2", "10", "1")
    assert data.lengths == [4, 4, 4] and data.num_channels == 1
    assert data.series[1].tolist() == [[0.5, -1.0, 20.0, 4.0]]


def test_multivariate_unequal_ts_with_missing_values(tmp_path: Path) -> None:
    data = read_ts(_write(tmp_path, "m.ts", MULTIVARIATE))
    assert data.num_channels == 3 and data.lengths == [3, 2]
    second = data.series[1]
    assert second.shape == (3, 2)
    assert np.isnan(second[0, 1]) and np.isnan(second[2, 0]) and second[1].tolist() == [2.0, 3.0]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (UNIVARIATE.replace("@timeStamps false", "@timeStamps true"), "time-stamped"),
        (UNIVARIATE.replace("@classLabel true 2 10 1", "@targetLabel true"), "regression targets"),
        (UNIVARIATE.replace("@classLabel true 2 10 1", "@classLabel false"), "declares no class labels"),
        (UNIVARIATE.replace("4,3,2,1:1", "4,3,2,1:7"), r"line 13: class label '7' is not one of"),
        (UNIVARIATE.replace("4,3,2,1:1", "4,3:2,1:1"), r"line 13: 2 channels, but the header declares 1"),
        (MULTIVARIATE.replace("1,?:2,3:NaN,4:run", "1,2:2,3,4:5,6:run"), "different lengths"),
        (UNIVARIATE.replace("4,3,2,1:1", "4,x,2,1:1"), r"line 13: could not convert string to float"),
        (UNIVARIATE.replace("@data\n", ""), "expected a '@<key> <value>' header line"),
        ("@problemName empty\n@classLabel true a\n", "no '@data' line"),
    ],
)
def test_ts_errors_name_the_line(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_ts(_write(tmp_path, "bad.ts", text))


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="read_ts"):
        read_ts("/no/such/file.ts")


def test_tsf(tmp_path: Path) -> None:
    text = (
        "# comment\n@relation test\n@attribute series_name string\n@attribute start_timestamp date\n"
        "@frequency quarterly\n@horizon 4\n@missing true\n@equallength false\n@data\n"
        "A:1979-01-01 00-00-00:25092.5,24271,?\nB:1973-01-01 00-00-00:1,2,3,4,5\n"
    )
    data = read_tsf(_write(tmp_path, "t.tsf", text))
    assert data.names == ("A", "B") and data.frequency == "quarterly" and data.horizon == 4
    assert data.lengths == [3, 5] and np.isnan(data.values[0][2]) and data.values[0][0] == 25092.5
    assert data.start_timestamps == ("1979-01-01 00-00-00", "1973-01-01 00-00-00")
    with pytest.raises(ValueError, match=r"line 12: expected 2 attribute values"):
        read_tsf(_write(tmp_path, "bad.tsf", text + "C:1,2\n"))


def test_labelled_csv_and_tsv(tmp_path: Path) -> None:
    data = read_labelled_csv(_write(tmp_path, "d.tsv", "1.0\t0.5\t0.25\n2\t1\t2\t3\n"))
    assert data.labels == ("1", "2") and data.lengths == [2, 3]
    last = read_labelled_csv(_write(tmp_path, "d.csv", "1,2,up\n3,?,down\n"), label_column=-1)
    assert last.labels == ("up", "down") and np.isnan(last.series[1][0, 1])


def test_series_csv_header_detection(tmp_path: Path) -> None:
    with_header = read_series_csv(_write(tmp_path, "a.csv", "Date,Passengers\n1949-01,112\n1949-02,118\n"))
    assert with_header.names == ("Passengers",) and with_header.values[0].tolist() == [112.0, 118.0]
    index_column = read_series_csv(_write(tmp_path, "b.csv", ",0\n1821,269\n1822,321\n"))
    assert index_column.names == ("0",) and index_column.values[0].tolist() == [269.0, 321.0]
    plain = read_series_csv(_write(tmp_path, "c.csv", "1,2\n3,4\n"))
    assert plain.names == ("column0", "column1") and plain.values[1].tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match=r"no columns \['Sales'\]; the columns are"):
        read_series_csv(tmp_path / "a.csv", columns=["Sales"])


def test_from_arrays_and_checks() -> None:
    data = LabelledSeries.from_arrays(np.zeros((3, 2, 5)), np.array([1, 2, 1]))
    assert data.labels == ("1", "2", "1") and data.num_channels == 2
    with pytest.raises(ValueError, match="2 series but 1 labels"):
        LabelledSeries.from_arrays([[1.0], [2.0]], ["a"])
    with pytest.raises(ValueError, match="same number of channels"):
        LabelledSeries.from_arrays([np.zeros((1, 3)), np.zeros((2, 3))], ["a", "b"])


def test_aeon_ships_ucr_and_forecasting_data() -> None:
    names = ucr_names()
    assert {"ArrowHead", "GunPoint", "OSULeaf", "ACSF1", "ItalyPowerDemand", "BasicMotions"} <= set(names)
    assert "Covid3Month" not in names  # a regression set
    train, test = load_ucr("BasicMotions")
    assert (len(train), len(test), train.num_channels) == (40, 40, 6)
    with pytest.raises(ValueError, match=r"not shipped by the installed aeon package; choose one of \['AC"):
        load_ucr("Wafer")
    m1 = load_forecasting("m1_yearly")
    assert len(m1) == 181 and m1.horizon == 6 and max(m1.lengths) == 58
    assert load_forecasting("airline").lengths == [144]
    with pytest.raises(ValueError, match="choose one of"):
        load_forecasting("m4_hourly")


def test_fill_policies() -> None:
    series = [np.array([[np.nan, 2.0, np.nan, 4.0, np.nan]])]
    assert fill_missing(series, "interpolate")[0].tolist() == [[2.0, 2.0, 3.0, 4.0, 4.0]]
    assert fill_missing(series, -1)[0].tolist() == [[-1.0, 2.0, -1.0, 4.0, -1.0]]
    with pytest.raises(ValueError, match=r"series 'b' has 3 missing value\(s\)"):
        fill_missing([np.zeros((1, 2)), series[0]], None, names=["a", "b"])
    with pytest.raises(ValueError, match="a channel without any value"):
        fill_missing([np.full((1, 3), np.nan)], "interpolate")
    with pytest.raises(ValueError, match="fill='mean'"):
        fill_missing(series, "mean")  # type: ignore[arg-type]


def test_normalise_and_length() -> None:
    x = z_normalize(np.array([[1.0, 2.0, 3.0, 4.0]]))
    assert abs(x.mean()) < 1e-12 and abs(x.std() - 1) < 1e-12
    resampled = fit_length([np.array([[0.0, 10.0, 0.0]])], 5, "resample")[0]
    assert resampled.tolist() == [[0.0, 5.0, 10.0, 5.0, 0.0]]
    with pytest.raises(ValueError, match="series 0 has 6 points, not length=5; .*length_mode='resample'"):
        fit_length([np.zeros((1, 6))], 5, "pad")
    with pytest.raises(ValueError, match="length_mode='pad' or 'resample'"):
        fit_length([np.zeros((1, 4))], 5, "error")
    with pytest.raises(ValueError, match="different shapes"):
        stack_series([np.zeros((1, 4)), np.zeros((1, 5))])
