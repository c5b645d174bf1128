"""BasicMotions (UEA archive), as bundled with ``aeon``: a tiny real fixture for fast tests.

Four students wore a smartwatch and performed four activities (standing, running,
walking, badminton); 80 series of 10 s at 10 Hz, 6 channels (3-axis accelerometer,
3-axis gyroscope). Read from the bundled ``BasicMotions_{TRAIN,TEST}.ts`` files with
aeon's ``load_from_ts_file`` given the full path, which reads the file and never
downloads.

The files carry no subject ids, so each series is its own recording: group
``"bm000"``..``"bm039"`` for the official TRAIN file in file order, ``"bm040"``..
``"bm079"`` for TEST, one label for all samples. Split: test = the official TEST
series (40); val = the last two TRAIN series of each class in file order (8);
train = the other 32 TRAIN series. As in the official split, series of one
student may appear on both sides.

Units are not stated in the files. At rest the accelerometer reads ~0 on every axis
and peaks reach ~29, so it is taken as linear acceleration (gravity removed) in
m/s^2; the gyroscope peaks at 34.87, just under 2000 dps = 34.91 rad/s, so it is
taken as rad/s. Scales: accelerometer +-8 g on 16 bits (16 * 9.80665 / 65536 m/s^2
per count), gyroscope +-2000 dps on 16 bits (4000/65536 * pi/180 rad/s per count,
as for HAPT). Nothing clips.
"""

from __future__ import annotations

import math
from importlib import metadata
from pathlib import Path

import numpy as np

from train.data import Channel, DataError, Recording, SensorData, sha256_files, to_counts

STANDARD_GRAVITY = 9.80665
ACC_SCALE = 16.0 * STANDARD_GRAVITY / 65536.0  # m/s^2 per count (+-8 g)
GYRO_SCALE = 4000.0 / 65536.0 * math.pi / 180.0  # rad/s per count (+-2000 dps)
SAMPLE_RATE = 10.0
CHANNELS = [
    Channel("acc_x", "m/s^2", ACC_SCALE),
    Channel("acc_y", "m/s^2", ACC_SCALE),
    Channel("acc_z", "m/s^2", ACC_SCALE),
    Channel("gyro_x", "rad/s", GYRO_SCALE),
    Channel("gyro_y", "rad/s", GYRO_SCALE),
    Channel("gyro_z", "rad/s", GYRO_SCALE),
]
VAL_PER_CLASS = 2


def basic_motions_dir() -> Path:
    try:
        dist = metadata.distribution("aeon")
    except metadata.PackageNotFoundError:
        raise DataError("BasicMotions: the aeon package is not installed") from None
    return Path(str(dist.locate_file("aeon/datasets/data/BasicMotions")))


def _class_labels(path: Path) -> list[str]:
    """Class names in the order of the file's ``@classLabel true ...`` header line."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.lower().startswith("@classlabel"):
                parts = line.split()
                if len(parts) < 3 or parts[1].lower() != "true":
                    break
                return [p.lower() for p in parts[2:]]
            if line.lower().startswith("@data"):
                break
    raise DataError(f"{path}: no '@classLabel true ...' header line")


def load_basic_motions() -> SensorData:
    """Load the 80 BasicMotions series as int16 counts (see module doc)."""
    from aeon.datasets import load_from_ts_file

    folder = basic_motions_dir()
    paths = [folder / "BasicMotions_TRAIN.ts", folder / "BasicMotions_TEST.ts"]
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: file not found in the aeon installation")
    label_names = _class_labels(paths[0])
    if _class_labels(paths[1]) != label_names:
        raise DataError(f"{paths[1]}: class labels differ from {paths[0].name}")

    scale = np.array([c.scale for c in CHANNELS])
    recordings: list[Recording] = []
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    clipped = np.zeros(len(CHANNELS), np.int64)
    for part, path in zip(("train", "test"), paths, strict=True):
        X, y = load_from_ts_file(str(path))
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 3 or X.shape[1:] != (len(CHANNELS), 100):
            raise DataError(f"{path}: expected (n, 6, 100) series, found {X.shape}")
        if not np.isfinite(X).all():
            raise DataError(f"{path}: non-finite values")
        y = [str(v).lower() for v in y]
        unknown = sorted(set(y) - set(label_names))
        if unknown:
            raise DataError(f"{path}: labels {unknown} not in {label_names}")
        groups = [f"bm{len(recordings) + i:03d}" for i in range(len(y))]
        for g, series, name in zip(groups, X, y, strict=True):
            counts, clip = to_counts(series.T, scale)
            clipped += clip
            labels = np.full(len(counts), label_names.index(name), np.int16)
            recordings.append(Recording(group=g, counts=counts, labels=labels))
        if part == "test":
            split["test"] = groups
            continue
        val: set[str] = set()
        for name in label_names:
            val.update([g for g, v in zip(groups, y, strict=True) if v == name][-VAL_PER_CLASS:])
        split["val"] = [g for g in groups if g in val]
        split["train"] = [g for g in groups if g not in val]

    digest, per_file = sha256_files(paths)
    return SensorData(
        dataset_id="uea-basic-motions",
        task="classification",
        sample_rate=SAMPLE_RATE,
        channels=list(CHANNELS),
        label_names=label_names,
        recordings=recordings,
        split=split,
        source=str(folder),
        source_sha256=digest,
        notes={
            "files": per_file,
            "units": "assumed: linear acceleration in m/s^2, angular rate in rad/s",
            "groups": "one recording per series; no subject ids in the data",
            "clipped": {c.name: int(n) for c, n in zip(CHANNELS, clipped, strict=True)},
        },
    )
