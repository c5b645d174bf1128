"""UCR anomaly archive series "KDD-TSAD 135" (InternalBleeding16), as bundled with ``aeon``.

Files: ``aeon/datasets/data/KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_{TRAIN,TEST}.csv``,
read directly (CSV with header ``timestamp,value,is_anomaly``). The TEST file is the
*whole* series, 7501 points, and its first 1200 points are exactly the TRAIN file
(the anomaly-free part, labels all 0). The labelled anomaly is ``is_anomaly == 1`` at
indices 4187..4198 inclusive (12 points) of the TEST series; since that series
starts at the beginning of the recording, these are also indices into the whole
recording (not into TRAIN followed by TEST).

aeon describes the signal as the heart rate of a patient with internal bleeding;
its sample rate is not documented, so ``sample_rate`` is 1.0 (one step per sample)
and ``notes["sample_rate"]`` says so. The physical unit is not documented either.

Recordings: group ``"train"`` (1200 points, labels 0) and group ``"test"`` (7501
points, 1 inside the anomaly, 0 elsewhere). Split ``{"train": ["train"], "val": [],
"test": ["test"]}``: the train stage holds out the last part (``val_fraction``, 20%)
of the training series itself for validation and the threshold.

Counts: one channel, scale = max |value| over the training part / 8192, so training
values use a quarter of the int16 range and the test series has 4x headroom for
anomalies (its maximum lands at about 8270 counts).
"""

from __future__ import annotations

import csv
import io
from importlib import metadata
from pathlib import Path

import numpy as np

from train.data import Channel, DataError, Recording, SensorData, sha256_files, to_counts

SERIES = "135_UCR_Anomaly_InternalBleeding16"
TRAIN_COUNTS_MAX = 8192  # max |count| of the training part: a quarter of int16


def kdd_tsad_135_dir() -> Path:
    """Directory of the series inside the installed aeon package (aeon is not imported)."""
    try:
        dist = metadata.distribution("aeon")
    except metadata.PackageNotFoundError:
        raise DataError("KDD-TSAD 135: the aeon package is not installed") from None
    return Path(str(dist.locate_file("aeon/datasets/data/KDD-TSAD_135")))


def _read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``timestamp,value,is_anomaly`` CSV -> values (float64) and labels (int16)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    if not rows or [c.strip() for c in rows[0]] != ["timestamp", "value", "is_anomaly"]:
        found = rows[0] if rows else "an empty file"
        raise DataError(f"{path}: expected header timestamp,value,is_anomaly, found {found}")
    body = [r for r in rows[1:] if r]
    try:
        table = np.array(body, dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{path}: non-numeric value: {e}") from e
    if table.ndim != 2 or table.shape[1] != 3:
        raise DataError(f"{path}: expected 3 columns per row, found shape {table.shape}")
    if not np.array_equal(table[:, 0], np.arange(len(table))):
        raise DataError(f"{path}: timestamps are not 0, 1, 2, ...")
    if not np.isfinite(table[:, 1]).all():
        raise DataError(f"{path}: {int((~np.isfinite(table[:, 1])).sum())} non-finite values")
    labels = table[:, 2]
    if not np.isin(labels, (0, 1)).all():
        raise DataError(f"{path}: is_anomaly must be 0 or 1")
    return table[:, 1], labels.astype(np.int16)


def load_kdd_tsad_135() -> SensorData:
    """Load KDD-TSAD 135 as a one-channel forecasting task (see module doc)."""
    folder = kdd_tsad_135_dir()
    train_path = folder / f"{SERIES}_TRAIN.csv"
    test_path = folder / f"{SERIES}_TEST.csv"
    x_train, y_train = _read_series(train_path)
    x_test, y_test = _read_series(test_path)
    if y_train.any():
        raise DataError(f"{train_path}: the training part must be anomaly-free")
    prefix = len(x_train)
    if not np.array_equal(x_test[:prefix], x_train):
        raise DataError(f"{test_path}: does not start with the training part {train_path.name}")
    anomaly = np.flatnonzero(y_test)
    if anomaly.size == 0 or not np.array_equal(anomaly, np.arange(anomaly[0], anomaly[-1] + 1)):
        raise DataError(f"{test_path}: expected one contiguous labelled anomaly")

    scale = float(np.abs(x_train).max()) / TRAIN_COUNTS_MAX
    c_train, clip_train = to_counts(x_train[:, None], scale)
    c_test, clip_test = to_counts(x_test[:, None], scale)
    digest, per_file = sha256_files([train_path, test_path])
    return SensorData(
        dataset_id="ucr-kdd-tsad-135",
        task="forecast",
        sample_rate=1.0,
        channels=[Channel("value", "", scale)],
        label_names=["normal", "anomaly"],
        recordings=[
            Recording(group="train", counts=c_train, labels=y_train),
            Recording(group="test", counts=c_test, labels=y_test),
        ],
        split={"train": ["train"], "val": [], "test": ["test"]},
        source=str(folder),
        source_sha256=digest,
        notes={
            "files": per_file,
            "sample_rate": "not documented (heart rate of a patient); 1.0 = one step per sample",
            "anomaly": [int(anomaly[0]), int(anomaly[-1])],
            "anomaly_index_base": "0-based, inclusive, into the test series (= whole recording)",
            "test_starts_with_train": prefix,
            "scale_rule": f"max |train value| / {TRAIN_COUNTS_MAX}",
            "clipped": int(clip_train.sum() + clip_test.sum()),
        },
    )
