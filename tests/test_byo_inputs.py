"""Bring-your-own data and configs: the anomaly shapes people have, and every bad input
refused in one line naming the file and the field (no traceback)."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from train.arrays import load_data
from train.classify import split_windows
from train.config import ConfigError, load_config
from train.data import DataError
from train.data.byo import SeriesSplit, load_byo

ROOT = Path(__file__).resolve().parents[1]
BASE = "name = 'x'\n[data]\nwindow = 8\nhop = 4\n"


def _config(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _one_line(e: pytest.ExceptionInfo, path: Path, *fragments: str) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "text, fragments",
    [
        (BASE.replace("window", "windw"), ["[data]", "'windw'", "did you mean 'window'"]),
        (BASE + "[train]\nepochs = -1\n", ["[train]", "epochs", "[1, 100000]", "-1"]),
        (BASE + "[train]\nlearning_rate = nan\n", ["[train]", "learning_rate", "finite", "nan"]),
        (BASE + "[train]\nbatch_size = 0\n", ["[train]", "batch_size"]),
        (BASE + "[model]\nhead = 'regress'\n", ["[model]", "head", "'regress'"]),
        (BASE + "[prune]\nmax_val_drp = 1\n", ["[prune]", "did you mean 'max_val_drop'"]),
        (BASE + "[prune]\nsweep = [0.5, 1.5]\n", ["[prune]", "sweep", "(0, 1)"]),
        (BASE + "[bogus]\n", ["unknown key 'bogus'"]),
        (BASE + "[select]\nmetric = 'val_loss'\n", ["[select]", "metric"]),
    ],
)
def test_bad_config_is_one_line_naming_file_and_field(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    p = _config(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    _one_line(e, p, *fragments)


def test_non_utf8_config_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "latin1.toml"
    p.write_bytes("name = 'caf\xe9'\n".encode("latin-1") + BASE.split("\n", 1)[1].encode())
    with pytest.raises(ConfigError) as e:
        load_config(p)
    _one_line(e, p, "not UTF-8", "0xe9")


def test_train_cli_prints_one_line_for_a_bad_config(tmp_path: Path) -> None:
    p = _config(tmp_path, BASE + "[train]\nepochs = -1\n")
    r = subprocess.run(
        [sys.executable, "-m", "train", "--config", str(p), "--out", str(tmp_path / "b")],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "epochs" in lines[0] and str(p) in lines[0], r.stderr


def test_shipped_configs_load() -> None:
    for name in ("har", "anomaly", "basic_motions"):
        cfg = load_config(ROOT / "configs" / f"{name}.toml")
        assert cfg.task == ("forecast" if name == "anomaly" else "classification")


# --------------------------------------------------------------------------- classifier data


def _windows_npz(tmp_path: Path, y: np.ndarray, **extra: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "w.npz"
    n = len(y)
    groups = np.array([f"s{i % 6}" for i in range(n)])
    np.savez(path, X=rng.standard_normal((n, 8, 2)).astype(np.float32), y=y, groups=groups,
             **extra)  # fmt: skip
    return path


def test_one_class_is_refused(tmp_path: Path) -> None:
    path = _windows_npz(tmp_path, np.zeros(24, np.int64))
    d = load_byo(path, window=8)
    with pytest.raises(DataError) as e:
        split_windows(d, 8, 4)
    _one_line(e, path, "1 class", "at least 2")


def test_validation_part_without_a_class_is_refused(tmp_path: Path) -> None:
    n = 24
    groups = np.array([f"s{i % 6}" for i in range(n)])
    split = np.array([{"s0": "val", "s1": "test"}.get(g, "train") for g in groups])
    y = np.array([0 if g == "s0" else i % 3 for i, g in enumerate(groups)])
    path = _windows_npz(tmp_path, y, split=split)
    d = load_byo(path, window=8)
    assert d.split == {"train": ["s2", "s3", "s4", "s5"], "val": ["s0"], "test": ["s1"]}
    with pytest.raises(DataError) as e:
        split_windows(d, 8, 4)
    _one_line(e, path, "val part", "['s0']", "class(es) ['1', '2']")


def test_npz_header_declaring_a_billion_windows_is_refused_before_allocation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "huge.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (1_000_000_000, 128, 6)}
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("X.npy", header.getvalue() + b"\0" * 64)
        zf.writestr("y.npy", b"")
    with pytest.raises(DataError) as e:
        load_byo(path)
    _one_line(e, path, "X", "(1000000000, 128, 6)", "more than the limit")


def test_npz_split_putting_a_group_on_both_sides_is_refused(tmp_path: Path) -> None:
    y = np.arange(24) % 3
    split = np.array(["train"] * 23 + ["test"])  # s5's last window on the other side
    path = _windows_npz(tmp_path, y, split=split)
    with pytest.raises(DataError) as e:
        load_byo(path)
    _one_line(e, path, "'s5'", "both")


# --------------------------------------------------------------------------- anomaly shapes


def _series(n: int = 1200, c: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    x = np.stack([np.sin(2 * np.pi * t / (25 + 5 * k)) for k in range(c)], axis=1)
    return x + 0.05 * rng.standard_normal((n, c))


def _ecg_csv(tmp_path: Path, labels: bool = True, name: str = "ecg.csv") -> Path:
    x = _series()
    lab = np.zeros(len(x), int)
    lab[900:920] = 1
    x[900:920, 0] += 3.0
    rows = ["ecg,label" if labels else "ecg"]
    rows += [f"{v:.5f},{a}" if labels else f"{v:.5f}" for v, a in zip(x[:, 0], lab, strict=True)]
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return path


def test_single_series_with_labels_trains_before_the_first_anomaly(tmp_path: Path) -> None:
    path = _ecg_csv(tmp_path)
    d = load_byo(path, window=32, task="forecast", series=SeriesSplit(margin=132, window=32))
    assert d.task == "forecast" and d.n_channels == 1
    assert d.split == {"train": ["series[0:768]"], "val": [], "test": ["series[768:1200]"]}
    train, test = d.recordings
    assert len(train.counts) == 768 and not (train.labels == 1).any()
    assert np.flatnonzero(test.labels == 1).tolist() == list(range(132, 152))
    assert np.abs(train.counts).max() == 8192  # a quarter of int16 for the training part
    assert d.notes["labelled"] is True


def test_single_series_without_labels_needs_train_end(tmp_path: Path) -> None:
    path = _ecg_csv(tmp_path, labels=False)
    with pytest.raises(DataError) as e:
        load_byo(path, window=32, task="forecast")
    _one_line(e, path, "no labelled anomaly", "train_end")
    d = load_byo(path, window=32, task="forecast", series=SeriesSplit(train_end=600, window=32))
    assert [len(r.counts) for r in d.recordings] == [600, 600]
    assert d.notes["labelled"] is False and (d.recordings[1].labels == -1).all()


def test_train_end_must_not_include_the_anomaly(tmp_path: Path) -> None:
    path = _ecg_csv(tmp_path)
    with pytest.raises(DataError) as e:
        load_byo(path, window=32, task="forecast", series=SeriesSplit(train_end=1000, window=32))
    _one_line(e, path, "train_end = 1000", "labelled anomaly at sample 900")


def test_npz_series_with_train_end_and_several_recordings(tmp_path: Path) -> None:
    x = _series(1500, c=3)
    anomaly = np.zeros(1500, np.int64)
    anomaly[1300:1310] = 1
    rec = np.array(["a"] * 500 + ["b"] * 1000)
    path = tmp_path / "imu.npz"
    np.savez(path, series=x, anomaly=anomaly, recording=rec, sample_rate=np.float64(64.0))
    d = load_byo(path, window=32, task="forecast", series=SeriesSplit(train_end=600, window=32))
    assert d.sample_rate == 64.0 and d.n_channels == 3
    # a trains whole; b trains up to train_end (counted in b) and is tested after it
    assert d.split["train"] == ["a[0:500]", "b[0:600]"] and d.split["test"] == ["b[600:1000]"]
    d2 = load_byo(path, window=32, task="forecast", series=SeriesSplit(margin=100, window=32))
    assert d2.split["train"] == ["a[0:500]", "b[0:700]"]


def test_task_comes_from_the_config_not_the_columns(tmp_path: Path) -> None:
    path = _ecg_csv(tmp_path)
    # a classifier config refuses a series in one line (no Keras shape traceback)
    har = load_config(ROOT / "configs/har.toml")
    with pytest.raises(DataError) as e:
        load_data(har, str(path))
    _one_line(e, path, "no 'recording' or 'subject' column", "head = 'forecast'")
    # the forecaster config reads the same file as a series
    an = load_config(ROOT / "configs/anomaly.toml")
    assert load_data(an, str(path)).task == "forecast"
    # a windows file for a forecaster, and a series file for a classifier
    w = _windows_npz(tmp_path, np.arange(24) % 3)
    with pytest.raises(DataError) as e:
        load_data(an, str(w))
    _one_line(e, w, "missing array 'series'", "head is 'forecast'")
    s = tmp_path / "s.npz"
    np.savez(s, series=_series())
    with pytest.raises(DataError) as e:
        load_data(har, str(s))
    _one_line(e, s, "holds a series", "head = 'forecast'")


def test_packaged_data_set_of_the_other_task_is_named(tmp_path: Path) -> None:
    p = _config(tmp_path, "name = 'x'\n[data]\ndataset = 'kdd_tsad_135'\nwindow = 64\nhop = 1\n")
    with pytest.raises(DataError) as e:
        load_data(load_config(p))
    _one_line(e, p, "[data].dataset", "kdd_tsad_135", "head = 'forecast'")


def test_bad_anomaly_label_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("ecg,is_anomaly\n" + "0.1,0\n" * 5 + "0.2,yes\n")
    with pytest.raises(DataError) as e:
        load_byo(path, task="forecast")
    _one_line(e, path, "row 7", "'is_anomaly'", "'yes'")


@pytest.mark.parametrize("labels", [True, False])
def test_forecaster_trains_on_a_single_series(tmp_path: Path, labels: bool) -> None:
    """The train stage end to end on one series, with and without labels."""
    from edge_runtime.bundle import Bundle
    from train.train import run

    data = _ecg_csv(tmp_path, labels=labels)
    extra = "" if labels else "train_end = 700\n"
    cfg = _config(tmp_path, (ROOT / "configs/anomaly.toml").read_text()
                  .replace("window = 64 ", f"window = 32\n{extra}").replace("epochs = 60", "epochs = 2"))  # fmt: skip
    b = Bundle.open(run(str(cfg), str(tmp_path / "b"), str(data)))
    rep = b.read_json("reports/train.json")["test"]
    assert b.manifest["thresholds"]["anomaly_score"] > 0
    ref = b.load_npz("reference.npz")
    if labels:
        assert rep["hit"] is not None and rep["labelled"] == [132, 151]
        assert len(ref["series_counts"]) == 1200 - 768
    else:
        assert rep["hit"] is None and rep["alarm_events"] >= 0
        assert len(ref["series_counts"]) == 500
    # int8: the device's threshold from the int8 chains on the validation tail; every
    # int8 row of the parity check flags at it, the float row at the float model's
    from quantize.int8 import int8
    from quantize.parity import check

    int8(b.root, calibration_samples=200, arena=False, data_path=str(data))
    th = Bundle.open(b.root).manifest["thresholds"]
    assert th["anomaly_score_int8"] > 0
    assert set(th["anomaly_score_int8_derivation"]["val_max"]) == {
        "litert", "litert_xnnpack", "tflm",
    }  # fmt: skip
    be = check(b.root, progress=False)["backends"]
    assert be["float"]["threshold"] == th["anomaly_score"]
    for name in ("litert", "litert_xnnpack", "tflm"):
        assert be[name]["threshold"] == th["anomaly_score_int8"]
        assert (be[name]["hit"] is None) == (not labels)
