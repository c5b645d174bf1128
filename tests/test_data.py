"""Data loaders on the real packaged data, and every bring-your-own error case."""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from train.data import DataError, SensorData, sha256_bytes, to_counts
from train.data.basic_motions import load_basic_motions
from train.data.byo import load_byo, split_groups
from train.data.hapt import (
    SIGNAL_COLUMNS,
    TEST_SUBJECTS,
    VAL_SUBJECTS,
    _HaptUnpickler,
    hapt_path,
    load_hapt,
    read_hapt_pickle,
)
from train.data.kdd_tsad import load_kdd_tsad_135
from train.data.registry import load_dataset


def pure_windows(labels: np.ndarray, length: int, hop: int) -> int:
    """Windows of `length` every `hop` samples whose samples all share one label >= 0."""
    if len(labels) < length:
        return 0
    w = np.lib.stride_tricks.sliding_window_view(labels, length)[::hop]
    return int(((w == w[:, :1]).all(axis=1) & (w[:, 0] >= 0)).sum())


def check_common(d: SensorData) -> None:
    assert d.source_sha256 and len(d.source_sha256) == 64
    assert set(d.split) == {"train", "val", "test"}
    parts = [set(d.split[p]) for p in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    groups = {r.group for r in d.recordings}
    assert set().union(*parts) == groups
    for r in d.recordings:
        assert r.counts.dtype == np.int16 and r.counts.ndim == 2
        assert r.counts.shape[1] == d.n_channels
        assert r.labels.dtype == np.int16 and r.labels.shape == (len(r.counts),)
        assert r.labels.min() >= -1 and r.labels.max() < len(d.label_names)


def check_round_trip(counts: np.ndarray, values: np.ndarray, scale: np.ndarray) -> None:
    err = np.abs(counts.astype(np.float64) * scale - values)
    assert (err <= scale / 2 * (1 + 1e-9)).all(), err.max(axis=0)


# --- HAPT -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hapt() -> SensorData:
    return load_hapt()


def test_hapt_structure(hapt: SensorData) -> None:
    check_common(hapt)
    assert hapt.task == "classification"
    assert hapt.sample_rate == 50.0
    assert [c.name for c in hapt.channels] == [
        "acc_x",
        "acc_y",
        "acc_z",
        "gyro_x",
        "gyro_y",
        "gyro_z",
    ]
    assert [c.unit for c in hapt.channels] == ["g"] * 3 + ["rad/s"] * 3
    assert hapt.channels[0].scale == 16 / 65536
    assert hapt.channels[3].scale == pytest.approx(4000 / 65536 * np.pi / 180, rel=1e-15)
    assert hapt.label_names == [
        "WALKING",
        "WALKING_UPSTAIRS",
        "WALKING_DOWNSTAIRS",
        "SITTING",
        "STANDING",
        "LAYING",
    ]
    assert len(hapt.recordings) == 61
    assert len({r.group for r in hapt.recordings}) == 61
    labels = np.concatenate([r.labels for r in hapt.recordings])
    assert set(np.unique(labels).tolist()) == {-1, 0, 1, 2, 3, 4, 5}
    assert sum(len(r.counts) for r in hapt.recordings) == hapt.notes["n_samples"] == 1122772
    assert sum(hapt.notes["clipped"].values()) == 0
    assert hapt.source_sha256 == sha256_bytes(Path(hapt.source).read_bytes())


def test_hapt_split_by_subject(hapt: SensorData) -> None:
    subject = hapt.notes["subject"]
    assert set(subject.values()) == set(range(1, 31))
    by_part = {p: {subject[g] for g in hapt.split[p]} for p in ("train", "val", "test")}
    assert by_part["test"] == set(TEST_SUBJECTS) == {2, 4, 9, 10, 12, 13, 18, 20, 24}
    assert by_part["val"] == set(VAL_SUBJECTS) == {3, 16, 27}
    assert len(by_part["train"]) == 18
    assert not (by_part["train"] & by_part["val"] or by_part["train"] & by_part["test"])
    assert not by_part["val"] & by_part["test"]
    for g, s in subject.items():
        assert g.startswith(f"s{s:02d}e")


def test_hapt_window_counts(hapt: SensorData) -> None:
    n = {p: sum(pure_windows(r.labels, 128, 64) for r in hapt.recordings_of(p)) for p in hapt.split}
    assert n == {"train": 6097, "val": 1046, "test": 2874}
    # FIELD-NOTES: 5992 / 1151 / 2874 with other validation subjects; same total
    assert n["train"] + n["val"] == 5992 + 1151


def test_hapt_round_trip(hapt: SensorData) -> None:
    users = read_hapt_pickle(hapt_path().read_bytes())
    scale = np.array([c.scale for c in hapt.channels])
    frames = [f for u in sorted(users) for f in users[u]]
    assert len(frames) == len(hapt.recordings)
    for rec, frame in zip(hapt.recordings, frames, strict=True):
        values = np.stack([frame[c] for c in SIGNAL_COLUMNS], axis=1)
        check_round_trip(rec.counts, values, scale)
        raw = frame["label"]
        np.testing.assert_array_equal(rec.labels, np.where((raw >= 1) & (raw <= 6), raw - 1, -1))


def test_hapt_unpickler_refuses_other_globals() -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("never",))

    payload = pickle.dumps(Evil(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        _HaptUnpickler(io.BytesIO(payload)).load()
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        read_hapt_pickle(gzip.compress(pickle.dumps({1: [Path("x")]}, protocol=2)))


# --- KDD-TSAD 135 ---------------------------------------------------------------------------


def _kdd_csv(d: SensorData, split: str) -> np.ndarray:
    name = f"135_UCR_Anomaly_InternalBleeding16_{split}.csv"
    return np.loadtxt(Path(d.source) / name, delimiter=",", skiprows=1)


def test_kdd_tsad_135() -> None:
    d = load_kdd_tsad_135()
    check_common(d)
    assert d.task == "forecast" and d.n_channels == 1
    assert d.label_names == ["normal", "anomaly"]
    assert d.split == {"train": ["train"], "val": [], "test": ["test"]}
    (train,) = d.recordings_of("train")
    (test,) = d.recordings_of("test")
    assert train.counts.shape == (1200, 1) and test.counts.shape == (7501, 1)
    assert not train.labels.any()
    np.testing.assert_array_equal(np.flatnonzero(test.labels), np.arange(4187, 4199))
    assert d.notes["anomaly"] == [4187, 4198]
    np.testing.assert_array_equal(test.counts[:1200], train.counts)
    assert np.abs(train.counts).max() == 8192
    assert d.notes["clipped"] == 0
    scale = np.array([d.channels[0].scale])
    for rec, split in ((train, "TRAIN"), (test, "TEST")):
        table = _kdd_csv(d, split)
        check_round_trip(rec.counts, table[:, 1:2], scale)
        np.testing.assert_array_equal(rec.labels, table[:, 2])


# --- BasicMotions ---------------------------------------------------------------------------


def test_basic_motions() -> None:
    d = load_basic_motions()
    check_common(d)
    assert d.sample_rate == 10.0 and d.n_channels == 6
    assert d.label_names == ["standing", "running", "walking", "badminton"]
    assert len(d.recordings) == 80
    assert [r.group for r in d.recordings] == [f"bm{i:03d}" for i in range(80)]
    assert {p: len(g) for p, g in d.split.items()} == {"train": 32, "val": 8, "test": 40}
    per_class = np.zeros(4, int)
    for r in d.recordings:
        assert r.counts.shape == (100, 6)
        assert len(set(r.labels.tolist())) == 1
        per_class[r.labels[0]] += 1
    assert per_class.tolist() == [20, 20, 20, 20]
    val_labels = sorted(r.labels[0] for r in d.recordings_of("val"))
    assert val_labels == [0, 0, 1, 1, 2, 2, 3, 3]
    assert sum(d.notes["clipped"].values()) == 0

    from aeon.datasets import load_from_ts_file

    X = np.concatenate(
        [
            load_from_ts_file(str(Path(d.source) / f"BasicMotions_{s}.ts"))[0]
            for s in ("TRAIN", "TEST")
        ]
    )
    scale = np.array([c.scale for c in d.channels])
    for rec, series in zip(d.recordings, X, strict=True):
        check_round_trip(rec.counts, series.T, scale)


def test_registry() -> None:
    assert load_dataset("kdd_tsad_135").dataset_id == "ucr-kdd-tsad-135"
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset("nope")


# --- counts ---------------------------------------------------------------------------------


def test_to_counts_rounds_half_away_and_clips() -> None:
    x = np.array([[0.5, -0.5], [1.5, -1.5], [2.5, -2.5], [40000.0, -40000.0]])
    counts, clipped = to_counts(x, np.array([1.0, 1.0]))
    assert counts.dtype == np.int16
    assert counts.tolist() == [[1, -1], [2, -2], [3, -3], [32767, -32768]]
    assert clipped.tolist() == [1, 1]


# --- bring your own -------------------------------------------------------------------------


def _windows(n: int = 20, t: int = 16, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, t, c)).astype(np.float32)


def _groups(n: int = 20) -> np.ndarray:
    return np.array([f"g{i % 10}" for i in range(n)])


def _npz(tmp_path: Path, name: str = "w.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _raises(path: Path, *fragments: str, **kw) -> str:
    with pytest.raises(DataError) as e:
        load_byo(path, **kw)
    msg = str(e.value)
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_byo_npz_ints(tmp_path: Path) -> None:
    X = _windows()
    y = np.arange(20) % 3
    path = _npz(tmp_path, X=X, y=y, groups=_groups(), labels=np.array(["a", "b", "c"]))
    d = load_byo(path, window=16)
    assert d.recordings == [] and d.windows.dtype == np.int16 and d.windows.shape == (20, 16, 3)
    assert d.label_names == ["a", "b", "c"]
    np.testing.assert_array_equal(d.window_labels, y)
    assert d.window_groups.tolist() == _groups().tolist()
    assert d.sample_rate == 1.0 and "sample_rate" in d.notes
    scale = np.array([c.scale for c in d.channels])
    np.testing.assert_allclose(scale, np.abs(X).max(axis=(0, 1)) / 32000, rtol=1e-6)
    assert np.abs(d.windows).max() == 32000
    check_round_trip(d.windows, X.astype(np.float64), scale)
    parts = [set(d.split[p]) for p in ("train", "val", "test")]
    assert [len(p) for p in parts] == [6, 2, 2]
    assert set().union(*parts) == set(_groups().tolist())
    assert d.source_sha256 == sha256_bytes(path.read_bytes())


def test_byo_npz_strings_and_metadata(tmp_path: Path) -> None:
    y = np.array(["walk", "sit", "run", "sit"] * 5)
    path = _npz(
        tmp_path,
        X=_windows(),
        y=y,
        groups=np.arange(20) % 4,
        sample_rate=np.float64(50.0),
        channel_names=np.array(["ax", "ay", "az"]),
        units=np.array(["g", "g", "g"]),
        scale=np.array([0.001, 0.001, 0.001]),
    )
    d = load_byo(path)
    assert d.label_names == ["run", "sit", "walk"]
    assert [d.label_names[i] for i in d.window_labels] == y.tolist()
    assert d.sample_rate == 50.0
    assert [(c.name, c.unit, c.scale) for c in d.channels] == [
        (name, "g", 0.001) for name in ("ax", "ay", "az")
    ]
    assert [len(d.split[p]) for p in ("train", "val", "test")] == [2, 1, 1]


def test_split_groups_deterministic() -> None:
    groups = [f"s{i}" for i in range(30)]
    a, b = split_groups(groups, "x"), split_groups(list(reversed(groups)), "x")
    assert a == b
    assert [len(a[p]) for p in ("train", "val", "test")] == [20, 4, 6]


def _csv(tmp_path: Path, text: str, name: str = "s.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _stream(n_per: int = 40, groups: tuple[str, ...] = ("a", "b", "c", "d")) -> str:
    lines = ["time,ax,ay,label,subject"]
    for g in groups:
        for i in range(n_per):
            label = "" if i < 2 else ("walk" if i < 20 else "sit")
            lines.append(f"{i * 0.02:.2f},{np.sin(i):.4f},{i / 10:.2f},{label},{g}")
    return "\n".join(lines) + "\n"


def test_byo_csv(tmp_path: Path) -> None:
    d = load_byo(_csv(tmp_path, _stream()), window=40, sample_rate=50.0)
    assert [c.name for c in d.channels] == ["ax", "ay"]
    assert d.label_names == ["sit", "walk"] and d.sample_rate == 50.0
    assert [r.group for r in d.recordings] == ["a", "b", "c", "d"]
    r = d.recordings[0]
    assert r.counts.shape == (40, 2) and r.counts.dtype == np.int16
    assert r.labels[:3].tolist() == [-1, -1, 1] and r.labels[-1] == 0
    check_common(d)
    assert d.notes["group_column"] == "subject"


def test_byo_csv_integer_labels_sorted_numerically(tmp_path: Path) -> None:
    text = "x,label,recording\n" + "".join(
        f"{i},{[10, 2, -1][i % 3]},r{i // 4}\n" for i in range(12)
    )
    d = load_byo(_csv(tmp_path, text))
    assert d.label_names == ["2", "10"]
    assert d.recordings[0].labels.tolist() == [1, 0, -1, 1]


def test_byo_file_errors(tmp_path: Path) -> None:
    _raises(tmp_path / "missing.npz", "file not found")
    _raises(_csv(tmp_path, "x", name="data.txt"), "unknown extension '.txt'", ".npz or .csv")
    _raises(_csv(tmp_path, "", name="empty.csv"), "empty file")
    (tmp_path / "empty.npz").write_bytes(b"")
    _raises(tmp_path / "empty.npz", "empty file")
    _raises(_csv(tmp_path, "not a zip", name="junk.npz"), "not a readable .npz")
    obj = tmp_path / "obj.npz"
    np.savez(obj, X=np.array([{"a": 1}], dtype=object), y=np.zeros(1), groups=np.zeros(1))
    _raises(obj, "X: object arrays", "without pickle")


def test_byo_npz_errors(tmp_path: Path) -> None:
    X, y, g = _windows(), np.arange(20) % 3, _groups()
    _raises(
        _npz(tmp_path, "a.npz", X=X, groups=g), "missing array(s) ['y']", "found ['X', 'groups']"
    )
    msg = _raises(_npz(tmp_path, "b.npz", X=X, y=y), "missing array 'groups'", "found ['X', 'y']")
    assert "overlapping windows" in msg
    _raises(_npz(tmp_path, "c.npz", X=X[:, :, 0], y=y, groups=g), "must be 3-D", "(20, 16)")
    _raises(_npz(tmp_path, "d.npz", X=X, y=y[:19], groups=g), "y must have shape (20,)", "(19,)")
    _raises(_npz(tmp_path, "e.npz", X=X, y=y, groups=g[:5]), "'groups'", "(20,)", "(5,)")
    bad = X.copy()
    bad[3, 4, 1] = np.nan
    bad[7, 0, 0] = np.inf
    _raises(_npz(tmp_path, "f.npz", X=bad, y=y, groups=g), "2 NaN/inf", "X[3, 4, 1]")
    labels = np.array(["a", "b"])
    _raises(
        _npz(tmp_path, "g.npz", X=X, y=y, groups=g, labels=labels), "not in 'labels'", "[2]", "0..1"
    )
    ys = np.array(["a", "b", "z", "q"] * 5)
    _raises(_npz(tmp_path, "h.npz", X=X, y=ys, groups=g, labels=labels), "['q', 'z']", "['a', 'b']")
    two = np.array(["p", "q"] * 10)
    _raises(_npz(tmp_path, "i.npz", X=X, y=y, groups=two), "at least 3 groups", "found 2")
    _raises(_npz(tmp_path, "j.npz", X=X, y=y, groups=g), "16 samples", "window=32", window=32)
    _raises(_npz(tmp_path, "k.npz", X=X, y=y.astype(float), groups=g), "integers or strings")


def test_byo_csv_errors(tmp_path: Path) -> None:
    _raises(_csv(tmp_path, "1,2,3\n4,5,6\n", name="a.csv"), "no header row")
    _raises(_csv(tmp_path, "ax,label,subject\n", name="b.csv"), "header only")
    _raises(
        _csv(tmp_path, "ax,subject\n1,a\n", name="c.csv"), "no 'label' column", "['ax', 'subject']"
    )
    msg = _raises(_csv(tmp_path, "ax,label\n1,w\n", name="d.csv"), "no 'recording' or 'subject'")
    assert "overlapping windows" in msg
    text = "ax,ay,label,subject\n1,2,w,a\n1,oops,w,a\n"
    _raises(_csv(tmp_path, text, name="e.csv"), "'ay' must be numeric", "'oops'", "row 3")
    text = "ax,label,subject\n1,w,a\nnan,w,a\ninf,w,b\n"
    _raises(_csv(tmp_path, text, name="f.csv"), "2 NaN/inf", "row 3, column 'ax'")
    text = "ax,label,subject\n1,w,a\n1,w\n"
    _raises(_csv(tmp_path, text, name="g.csv"), "row 3 has 2 fields, expected 3")
    short = _stream(groups=("a", "b", "c")) + "0.1,0.2,0.3,walk,tiny\n" * 5
    _raises(
        _csv(tmp_path, short, name="h.csv"),
        "subject 'tiny'",
        "has 5 samples",
        "shorter than one window of 40",
        window=40,
    )
    _raises(_csv(tmp_path, _stream(groups=("a", "b")), name="i.csv"), "at least 3 groups")
    _raises(_csv(tmp_path, "ax,label,subject\n1,,a\n", name="j.csv"), "no labelled sample")
