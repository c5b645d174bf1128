"""Bring your own data: windows or a sample stream for a classifier, a series for an
anomaly forecaster. The task comes from the config's head (``softmax`` or ``forecast``),
never from which columns a file happens to have.

Everything in such a file is untrusted: it is validated before use and every
problem is a :class:`DataError` that names the file, the problem, and what was
expected versus found. ``.npz`` files are read by :func:`edge_runtime.bundle.read_npz`:
no pickles, every array's size checked from its header before it is allocated.

Classifier, ``.npz`` (windows):

* ``X``: (N, T, C) float windows (required);
* ``y``: (N,) integer class indices or strings (required);
* ``groups``: (N,) subject or recording id of every window (required);
* ``split``: (N,) ``train`` / ``val`` / ``test`` per window (optional; each group in
  one part; default: the group split below);
* ``labels``: (K,) class names (optional; with string ``y`` the default is the
  sorted distinct values of ``y``, with integer ``y`` it is ``"0" .. str(max y)``);
* ``sample_rate``: scalar in Hz (optional; default 1.0, one step per sample, noted
  in ``notes["sample_rate"]``);
* ``channel_names``, ``units``: (C,) strings (optional; ``ch0..`` and ``""``);
* ``scale``: (C,) physical units per count (optional; default max |X| of the
  channel over the file / 32000, so the largest value is 32000 counts).

The windows go to ``SensorData.windows`` (int16 counts), ``window_labels`` and
``window_groups``; ``recordings`` is empty.

Classifier, ``.csv`` (sample stream): a header row is required; one row per sample; a
``label`` column (class names or integers; an empty cell or ``-1`` = unlabelled), a
``recording`` or ``subject`` column (``recording`` wins when both exist), an
optional ``time`` / ``timestamp`` column (ignored); every other column is a channel and
must be numeric. Each run of consecutive rows with the same group value is one
:class:`Recording` of that group, in row order. Label names are the distinct
labels, sorted numerically when they are all integers, else as text. The sample
rate comes from the ``sample_rate`` argument, else 1.0 (noted). Units are unknown
(``""``); scales follow the same max |x| / 32000 rule.

Classifier data without groups is refused: windows cut from one recording overlap, and
a shuffled-window split puts near-copies of training windows into the test set.
Split by group: the distinct groups are sorted, shuffled with
``numpy.random.default_rng(0)``; ``round(0.2 G)`` go to test, ``round(0.15 G)`` to
val (at least one each), the rest to train. Fewer than 3 groups are refused.

Forecaster (anomaly), one series or several recordings, labels optional:

* ``.npz``: ``series`` (N, C) (or (N,)), ``anomaly`` (N,) 0 / 1 (-1 unlabelled,
  optional), ``recording`` (N,) ids (optional), ``sample_rate``, ``channel_names``,
  ``units``, ``scale`` as above;
* ``.csv``: channel columns, an optional ``label`` or ``is_anomaly`` column (0, 1,
  empty), an optional ``recording`` / ``subject`` column, ``time`` / ``timestamp``
  ignored.

The series is cut by :func:`series_split`: an anomaly-free training part (ending at
``[data].train_end`` or at the first labelled anomaly minus ``[data].margin``; its
chronological tail is the validation part, ``val_fraction``) and the test part that
follows. The scale puts the largest |value| of the training parts at 8192 counts (a
quarter of int16, as for KDD-TSAD 135), leaving headroom for anomalies.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.bundle import BundleError, read_npz
from train.data import Channel, DataError, Recording, SensorData, sha256_bytes, to_counts

FULL_SCALE_COUNTS = 32000
MAX_VALUES = 1 << 28  # refuse files that would expand beyond this many values
MAX_FILE_BYTES = 1 << 31  # refuse larger files before reading them
GROUP_COLUMNS = ("recording", "subject")
LABEL_COLUMNS = ("label", "is_anomaly")  # a series' anomaly labels: either name
IGNORED_COLUMNS = ("time", "timestamp")
PARTS = ("train", "val", "test")
LEAK = (
    "a split by shuffled windows puts overlapping windows of one recording "
    "on both sides and inflates test accuracy"
)


def split_groups(groups: list[str], where: str) -> dict[str, list[str]]:
    """Deterministic group split: ~20% test, ~15% val (>= 1 each), the rest train."""
    distinct = sorted(set(groups))
    n = len(distinct)
    if n < 3:
        raise DataError(
            f"{where}: a split by group needs at least 3 groups (train, val, test), "
            f"found {n}: {distinct}"
        )
    order = [distinct[i] for i in np.random.default_rng(0).permutation(n)]
    n_test = max(1, round(0.2 * n))
    n_val = max(1, round(0.15 * n))
    if n_test + n_val >= n:
        n_test, n_val = 1, 1
    return {
        "train": sorted(order[n_test + n_val :]),
        "val": sorted(order[n_test : n_test + n_val]),
        "test": sorted(order[:n_test]),
    }


def auto_scale(values: np.ndarray) -> np.ndarray:
    """Per-channel scale: max |x| / 32000 (1.0 for an all-zero channel)."""
    peak = np.abs(values.reshape(-1, values.shape[-1])).max(axis=0).astype(np.float64)
    return np.where(peak > 0, peak / FULL_SCALE_COUNTS, 1.0)


def _check_finite(values: np.ndarray, where: str, describe) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{where}: {int(bad.sum())} NaN/inf values, expected none; first at {describe(first)}"
        )


def _strings(value: np.ndarray, name: str, n: int, where: str) -> list[str]:
    a = np.asarray(value)
    if a.ndim != 1 or len(a) != n:
        raise DataError(f"{where}: '{name}' must have shape ({n},), found {a.shape}")
    if a.dtype.kind not in "USiu":
        raise DataError(f"{where}: '{name}' must hold strings, found dtype {a.dtype}")
    if a.dtype.kind == "S":
        return [v.decode("utf-8", "replace") for v in a.tolist()]
    return [str(v) for v in a.tolist()]


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz``: no pickles, every member's size checked from its
    header before anything is allocated (:func:`edge_runtime.bundle.read_npz`)."""
    try:
        return read_npz(path, max_bytes=MAX_VALUES * 8)
    except BundleError as e:
        msg = str(e).replace("not a valid .npz file", "not a readable .npz file")
        if "object arrays" in msg:
            msg += " (they cannot be read without pickle)"
        raise DataError(msg) from None


def _load_npz(path: Path, raw: bytes, sample_rate: float | None, window: int | None) -> SensorData:
    where = str(path)
    arrays = _read_npz(path)
    names = sorted(arrays)
    if "series" in arrays and "X" not in arrays:
        raise DataError(
            f"{where}: holds a series ('series'), but the config's [model] head is 'softmax' "
            f"(a classifier needs windows X, y, groups); for anomaly data set head = 'forecast'"
        )
    X, y, groups = arrays.get("X"), arrays.get("y"), arrays.get("groups")
    if X is None or y is None:
        missing = [k for k, v in (("X", X), ("y", y)) if v is None]
        raise DataError(
            f"{where}: missing array(s) {missing}; expected X, y, groups; found {names}"
        )
    if groups is None:
        raise DataError(
            f"{where}: missing array 'groups' (subject or recording id per window), "
            f"found {names}; it is required because {LEAK}"
        )
    labels_arr, rate_arr = arrays.get("labels"), arrays.get("sample_rate")
    ch_arr, unit_arr, scale_arr = (
        arrays.get("channel_names"),
        arrays.get("units"),
        arrays.get("scale"),
    )
    split_arr = arrays.get("split")

    if X.ndim != 3:
        raise DataError(
            f"{where}: X must be 3-D (N windows, T samples, C channels), found {X.shape}"
        )
    if X.dtype.kind not in "fiu":
        raise DataError(f"{where}: X must be numeric, found dtype {X.dtype}")
    n, t, c = X.shape
    if n == 0 or t == 0 or c == 0:
        raise DataError(f"{where}: X is empty, shape {X.shape}")
    if X.size > MAX_VALUES:
        raise DataError(f"{where}: X has {X.size} values, more than the limit {MAX_VALUES}")
    if window is not None and t != window:
        raise DataError(f"{where}: windows have {t} samples, expected window={window}")
    X = X.astype(np.float32)
    _check_finite(X, where, lambda i: f"X[{i[0]}, {i[1]}, {i[2]}]")

    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{where}: y must have shape ({n},) to match X, found {y.shape}")
    group_ids = _strings(groups, "groups", n, where)

    label_names: list[str] | None = None
    if labels_arr is not None:
        if labels_arr.ndim != 1 or len(labels_arr) == 0:
            raise DataError(f"{where}: 'labels' must be a non-empty 1-D list of names")
        label_names = _strings(labels_arr, "labels", len(labels_arr), where)
        if len(set(label_names)) != len(label_names):
            raise DataError(f"{where}: 'labels' has duplicate names: {label_names}")
    if y.dtype.kind in "US":
        ys = _strings(y, "y", n, where)
        if label_names is None:
            label_names = sorted(set(ys))
        unknown = sorted(set(ys) - set(label_names))
        if unknown:
            raise DataError(
                f"{where}: labels in y not in 'labels': {unknown}; labels are {label_names}"
            )
        index = {name: i for i, name in enumerate(label_names)}
        y_idx = np.array([index[v] for v in ys], dtype=np.int64)
    elif y.dtype.kind in "iu":
        y_idx = y.astype(np.int64)
        if label_names is None:
            if y_idx.min() < 0:
                raise DataError(f"{where}: y has negative class indices: {int(y_idx.min())}")
            label_names = [str(i) for i in range(int(y_idx.max()) + 1)]
        bad = (y_idx < 0) | (y_idx >= len(label_names))
        if bad.any():
            raise DataError(
                f"{where}: labels in y not in 'labels': {sorted(set(y_idx[bad].tolist()))}; "
                f"expected 0..{len(label_names) - 1} ({len(label_names)} names)"
            )
    else:
        raise DataError(f"{where}: y must hold integers or strings, found dtype {y.dtype}")

    notes: dict = {}
    if rate_arr is not None:
        if rate_arr.size != 1 or rate_arr.dtype.kind not in "fiu":
            raise DataError(f"{where}: 'sample_rate' must be one number, found {rate_arr!r}")
        file_rate = float(rate_arr.reshape(()))
        if sample_rate is not None and sample_rate != file_rate:
            raise DataError(
                f"{where}: sample_rate {sample_rate} given, but the file says {file_rate}"
            )
        sample_rate = file_rate
    sample_rate = _check_rate(sample_rate, where, notes)

    ch_names = _strings(ch_arr, "channel_names", c, where) if ch_arr is not None else None
    units = _strings(unit_arr, "units", c, where) if unit_arr is not None else [""] * c
    if scale_arr is not None:
        if scale_arr.shape != (c,) or scale_arr.dtype.kind not in "fiu":
            raise DataError(f"{where}: 'scale' must be {c} numbers, found {scale_arr.shape}")
        scale = scale_arr.astype(np.float64)
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise DataError(f"{where}: 'scale' must be finite and > 0, found {scale.tolist()}")
        notes["scale"] = "from the file"
    else:
        scale = auto_scale(X)
        notes["scale"] = f"max |X| per channel / {FULL_SCALE_COUNTS}"
    counts, clipped = to_counts(X, scale)
    notes["clipped"] = int(clipped.sum())
    channels = _channels(ch_names, units, scale, c)
    return SensorData(
        dataset_id=f"byo:{path.name}",
        task="classification",
        sample_rate=sample_rate,
        channels=channels,
        label_names=label_names,
        recordings=[],
        split=split_groups(group_ids, where)
        if split_arr is None
        else _explicit_split(split_arr, group_ids, where),
        source=str(path),
        source_sha256=sha256_bytes(raw),
        windows=counts,
        window_labels=y_idx.astype(np.int16),
        window_groups=np.array(group_ids, dtype=str),
        notes=notes,
    )


def _explicit_split(value: np.ndarray, groups: list[str], where: str) -> dict[str, list[str]]:
    """The ``split`` array: per window ``train``, ``val`` or ``test``; each group in one part."""
    parts = _strings(value, "split", len(groups), where)
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        raise DataError(f"{where}: 'split' values must be {list(PARTS)}, found {bad}")
    of: dict[str, str] = {}
    for g, part in zip(groups, parts, strict=True):
        if of.setdefault(g, part) != part:
            raise DataError(
                f"{where}: group {g!r} is in both '{of[g]}' and '{part}' of 'split'; a group "
                f"(subject or recording) belongs to one part because {LEAK}"
            )
    out = {p: sorted(g for g, q in of.items() if q == p) for p in PARTS}
    empty = [p for p in PARTS if not out[p]]
    if empty:
        raise DataError(f"{where}: 'split' has no window in {empty}; expected train, val and test")
    return out


def _check_rate(sample_rate: float | None, where: str, notes: dict) -> float:
    if sample_rate is None:
        notes["sample_rate"] = "not given; 1.0 assumed (one step per sample)"
        return 1.0
    if not (np.isfinite(sample_rate) and sample_rate > 0):
        raise DataError(f"{where}: sample_rate must be a positive number, found {sample_rate}")
    return float(sample_rate)


def _channels(
    names: list[str] | None, units: list[str], scale: np.ndarray, c: int
) -> list[Channel]:
    names = names or [f"ch{i}" for i in range(c)]
    return [Channel(names[i], units[i], float(scale[i])) for i in range(c)]


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_table(path: Path, raw: bytes, label_cols: tuple[str, ...]) -> tuple[list[str], dict]:
    """Header and columns of a sample-stream CSV, every row of the header's width."""
    where = str(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text: {e}") from e
    rows = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if not rows:
        raise DataError(f"{where}: empty file, expected a header row and one row per sample")
    header = [h.strip() for h in rows[0]]
    if all(_is_number(h) for h in header):
        raise DataError(f"{where}: no header row, expected column names, found {rows[0]}")
    if len(set(header)) != len(header):
        raise DataError(f"{where}: duplicate column names in the header {header}")
    body = rows[1:]
    if not body:
        raise DataError(f"{where}: header only, no samples")
    width = len(header)
    for i, r in enumerate(body):
        if len(r) != width:
            raise DataError(f"{where}: row {i + 2} has {len(r)} fields, expected {width}")
    channel_cols = [h for h in header if h not in (*label_cols, *IGNORED_COLUMNS, *GROUP_COLUMNS)]
    if not channel_cols:
        raise DataError(f"{where}: no channel columns besides {header}")
    if len(body) * len(channel_cols) > MAX_VALUES:
        raise DataError(f"{where}: more than {MAX_VALUES} values")
    cols = {h: [r[j].strip() for r in body] for j, h in enumerate(header)}
    return header, cols


def _csv_values(path: Path, cols: dict, channel_cols: list[str]) -> np.ndarray:
    where = str(path)
    n = len(next(iter(cols.values())))
    values = np.empty((n, len(channel_cols)), np.float64)
    for k, name in enumerate(channel_cols):
        try:
            values[:, k] = np.array(cols[name], dtype=np.float64)
        except ValueError:
            i = next(i for i, v in enumerate(cols[name]) if not _is_number(v))
            raise DataError(
                f"{where}: channel column '{name}' must be numeric, found {cols[name][i]!r} "
                f"in row {i + 2}"
            ) from None
    _check_finite(values, where, lambda i: f"row {i[0] + 2}, column '{channel_cols[i[1]]}'")
    return values


def _runs(group_vals: list[str]) -> list[tuple[int, int]]:
    """[start, end) of each run of equal consecutive values."""
    starts = [0] + [i for i in range(1, len(group_vals)) if group_vals[i] != group_vals[i - 1]]
    return list(zip(starts, [*starts[1:], len(group_vals)], strict=True))


def _load_csv(path: Path, raw: bytes, sample_rate: float | None, window: int | None) -> SensorData:
    where = str(path)
    header, cols = _csv_table(path, raw, ("label",))
    if "label" not in header:
        raise DataError(f"{where}: no 'label' column, found columns {header}")
    group_col = next((g for g in GROUP_COLUMNS if g in header), None)
    if group_col is None:
        raise DataError(
            f"{where}: no 'recording' or 'subject' column, found columns {header}; "
            f"one is required because {LEAK} (a single series for anomaly detection needs "
            f"the config's [model] head = 'forecast')"
        )
    channel_cols = [h for h in header if h not in ("label", *IGNORED_COLUMNS, *GROUP_COLUMNS)]
    values = _csv_values(path, cols, channel_cols)

    raw_labels = cols["label"]
    named = sorted({v for v in raw_labels if v not in ("", "-1")})
    if not named:
        raise DataError(f"{where}: the 'label' column has no labelled sample")
    if all(_is_int(v) for v in named):
        named = sorted(named, key=int)
    index = {v: i for i, v in enumerate(named)}
    labels = np.array([index.get(v, -1) for v in raw_labels], dtype=np.int16)

    group_vals = cols[group_col]
    if any(g == "" for g in group_vals):
        i = group_vals.index("")
        raise DataError(f"{where}: empty '{group_col}' in row {i + 2}, expected an id")
    recordings: list[Recording] = []
    notes: dict = {}
    sample_rate = _check_rate(sample_rate, where, notes)
    scale = auto_scale(values)
    counts, clipped = to_counts(values, scale)
    for a, b in _runs(group_vals):
        if window is not None and b - a < window:
            raise DataError(
                f"{where}: {group_col} '{group_vals[a]}' (rows {a + 2}-{b + 1}) has {b - a} "
                f"samples, shorter than one window of {window}"
            )
        recordings.append(Recording(group_vals[a], counts[a:b], labels[a:b]))
    notes.update(
        {
            "scale": f"max |x| per channel / {FULL_SCALE_COUNTS}",
            "clipped": int(clipped.sum()),
            "group_column": group_col,
            "ignored_columns": [h for h in header if h in IGNORED_COLUMNS],
        }
    )
    return SensorData(
        dataset_id=f"byo:{path.name}",
        task="classification",
        sample_rate=sample_rate,
        channels=_channels(channel_cols, [""] * len(channel_cols), scale, len(channel_cols)),
        label_names=named,
        recordings=recordings,
        split=split_groups(group_vals, where),
        source=str(path),
        source_sha256=sha256_bytes(raw),
        notes=notes,
    )


# --------------------------------------------------------------------------- series (anomaly)


@dataclass(frozen=True)
class SeriesSplit:
    """Where a series' anomaly-free training part ends (see :func:`series_split`).

    ``train_end``: a sample index (as the UCR archive names its files), counted in
    the test recording; else the first labelled anomaly minus ``margin`` samples.
    """

    train_end: int | None = None
    margin: int = 164
    window: int = 64


def _anomaly_labels(values: list[str] | np.ndarray, where: str, describe) -> np.ndarray:
    """0 / 1 anomaly labels; an empty cell or -1 is unlabelled (-1)."""
    out = np.empty(len(values), np.int16)
    for i, v in enumerate(values):
        v = str(v).strip()
        if v in ("", "-1"):
            out[i] = -1
        elif v in ("0", "1", "0.0", "1.0", "False", "True", "false", "true"):
            out[i] = 1 if v in ("1", "1.0", "True", "true") else 0
        else:
            raise DataError(
                f"{where}: {describe(i)}: an anomaly label must be 0, 1 or empty, found {v!r}"
            )
    return out


def _load_csv_series(
    path: Path, raw: bytes, sample_rate: float | None, series: SeriesSplit
) -> SensorData:
    where = str(path)
    header, cols = _csv_table(path, raw, LABEL_COLUMNS)
    label_col = next((c for c in LABEL_COLUMNS if c in header), None)
    group_col = next((g for g in GROUP_COLUMNS if g in header), None)
    channel_cols = [
        h for h in header if h not in (*LABEL_COLUMNS, *IGNORED_COLUMNS, *GROUP_COLUMNS)
    ]
    values = _csv_values(path, cols, channel_cols)
    n = len(values)
    labels = (
        np.full(n, -1, np.int16)
        if label_col is None
        else _anomaly_labels(cols[label_col], where, lambda i: f"row {i + 2}, '{label_col}'")
    )
    groups = cols[group_col] if group_col else ["series"] * n
    if group_col and any(g == "" for g in groups):
        i = groups.index("")
        raise DataError(f"{where}: empty '{group_col}' in row {i + 2}, expected an id")
    notes = {
        "group_column": group_col,
        "label_column": label_col,
        "ignored_columns": [h for h in header if h in IGNORED_COLUMNS],
    }
    return _series_data(path, raw, values, labels, groups, sample_rate, series, notes,
                        channel_cols, [""] * len(channel_cols), None)  # fmt: skip


def _npz_series(
    path: Path, raw: bytes, arrays: dict[str, np.ndarray], sample_rate: float | None,
    window: int | None, series: SeriesSplit,
) -> SensorData:  # fmt: skip
    where = str(path)
    if "series" not in arrays:
        hint = " (these are windows X, y: a classifier's data, [model] head = 'softmax')" if (
            "X" in arrays) else ""  # fmt: skip
        raise DataError(
            f"{where}: missing array 'series' (N samples, C channels), found {sorted(arrays)}; "
            f"the config's [model] head is 'forecast'{hint}"
        )
    x = arrays["series"]
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.dtype.kind not in "fiu" or 0 in x.shape:
        raise DataError(
            f"{where}: 'series' must be a numeric (N, C) array, found {x.shape} {x.dtype}"
        )
    n, c = x.shape
    values = x.astype(np.float64)
    _check_finite(values, where, lambda i: f"series[{i[0]}, {i[1]}]")
    labels = np.full(n, -1, np.int16)
    if "anomaly" in arrays:
        a = arrays["anomaly"]
        if a.shape != (n,) or a.dtype.kind not in "biuf":
            raise DataError(f"{where}: 'anomaly' must be {n} numbers 0/1/-1, found {a.shape}")
        labels = _anomaly_labels(a.astype(np.int64).tolist(), where, lambda i: f"anomaly[{i}]")
    groups = ["series"] * n
    if "recording" in arrays:
        groups = _strings(arrays["recording"], "recording", n, where)
    rate = arrays.get("sample_rate")
    if rate is not None:
        if rate.size != 1 or rate.dtype.kind not in "fiu":
            raise DataError(f"{where}: 'sample_rate' must be one number, found {rate!r}")
        file_rate = float(rate.reshape(()))
        if sample_rate is not None and sample_rate != file_rate:
            raise DataError(
                f"{where}: sample_rate {sample_rate} given, but the file says {file_rate}"
            )
        sample_rate = file_rate
    names = (_strings(arrays["channel_names"], "channel_names", c, where)
             if "channel_names" in arrays else [f"ch{i}" for i in range(c)])  # fmt: skip
    units = _strings(arrays["units"], "units", c, where) if "units" in arrays else [""] * c
    scale = None
    if "scale" in arrays:
        scale = arrays["scale"]
        if scale.shape != (c,) or scale.dtype.kind not in "fiu":
            raise DataError(f"{where}: 'scale' must be {c} numbers, found {scale.shape}")
        scale = scale.astype(np.float64)
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise DataError(f"{where}: 'scale' must be finite and > 0, found {scale.tolist()}")
    return _series_data(path, raw, values, labels, groups, sample_rate, series, {}, names, units,
                        scale)  # fmt: skip


def _series_data(
    path: Path, raw: bytes, values: np.ndarray, labels: np.ndarray, groups: list[str],
    sample_rate: float | None, series: SeriesSplit, notes: dict, names: list[str],
    units: list[str], scale: np.ndarray | None,
) -> SensorData:  # fmt: skip
    """A forecaster's data: recordings cut into anomaly-free training parts and one test part."""
    where = str(path)
    sample_rate = _check_rate(sample_rate, where, notes)
    bounds = _runs(list(groups))
    ids = [groups[a] for a, _ in bounds]
    if len(set(ids)) != len(ids):
        dup = next(g for g in ids if ids.count(g) > 1)
        raise DataError(
            f"{where}: recording {dup!r} appears in {ids.count(dup)} separate runs of rows; "
            f"expected each recording's samples together, in time order"
        )
    parts = series_split([labels[a:b] for a, b in bounds], ids, series, where)
    # Counts: the scale puts the largest |value| of the training parts at a quarter of
    # int16 (as for KDD-TSAD 135), leaving 4x headroom for anomalies.
    train_vals = np.concatenate([values[bounds[i][0] + a : bounds[i][0] + b]
                                 for i, a, b, part in parts if part == "train"])  # fmt: skip
    if scale is None:
        peak = np.abs(train_vals).max(axis=0)
        scale = np.where(peak > 0, peak / SERIES_TRAIN_COUNTS_MAX, 1.0)
        notes["scale"] = f"max |training value| per channel / {SERIES_TRAIN_COUNTS_MAX}"
    else:
        notes["scale"] = "from the file"
    counts, clipped = to_counts(values, scale)
    notes["clipped"] = int(clipped.sum())
    recordings, split = [], {"train": [], "val": [], "test": []}
    for i, a, b, part in parts:
        lo = bounds[i][0]
        name = f"{ids[i]}[{a}:{b}]"
        recordings.append(Recording(name, counts[lo + a : lo + b], labels[lo + a : lo + b]))
        split[part].append(name)
    test = recordings[-1]
    notes["parts"] = {r.group: p for r, (_, _, _, p) in zip(recordings, parts, strict=True)}
    notes["labelled"] = bool((test.labels == 1).any())
    return SensorData(
        dataset_id=f"byo:{path.name}",
        task="forecast",
        sample_rate=sample_rate,
        channels=_channels(names, units, np.asarray(scale, np.float64), values.shape[1]),
        label_names=["normal", "anomaly"],
        recordings=recordings,
        split=split,
        source=str(path),
        source_sha256=sha256_bytes(raw),
        notes=notes,
    )


SERIES_TRAIN_COUNTS_MAX = 8192


def series_split(
    labels: list[np.ndarray], ids: list[str], s: SeriesSplit, where: str
) -> list[tuple[int, int, int, str]]:
    """The parts of a forecaster's recordings: ``(recording, start, end, "train"|"test")``.

    - The test recording is the last one holding a labelled anomaly (without labels:
      the last recording). Its training part is ``[0, e)`` with ``e = train_end``, else
      the first labelled anomaly minus ``margin``; its test part is ``[e, n)``, streamed
      from a zero state. ``e`` < one window leaves it no training part.
    - Every other recording trains: whole, or, when it holds labelled anomalies, up to
      its first one minus ``margin`` (the rest is not used).
    - Training parts must be anomaly-free and at least 2 windows long in total.
    """
    labelled = [i for i, lab in enumerate(labels) if (lab == 1).any()]
    t = labelled[-1] if labelled else len(labels) - 1
    first = [int(np.flatnonzero(lab == 1)[0]) if (lab == 1).any() else None for lab in labels]
    n_t = len(labels[t])
    if s.train_end is not None:
        e = s.train_end
        if not 0 < e < n_t:
            raise DataError(
                f"{where}: [data].train_end = {e} is outside recording {ids[t]!r} (0..{n_t})"
            )
        if first[t] is not None and e > first[t]:
            raise DataError(
                f"{where}: [data].train_end = {e} includes the labelled anomaly at sample "
                f"{first[t]} of {ids[t]!r}; expected the anomaly-free part to end before it"
            )
    elif first[t] is not None:
        e = max(0, first[t] - s.margin)
    elif len(labels) > 1:
        e = 0
    else:
        raise DataError(
            f"{where}: no labelled anomaly and no [data].train_end: expected one of them to "
            f"say where the anomaly-free training part ends"
        )
    parts = []
    for i, lab in enumerate(labels):
        if i == t:
            continue
        end = len(lab) if first[i] is None else max(0, first[i] - s.margin)
        if end >= s.window:
            parts.append((i, 0, end, "train"))
    if e >= s.window:
        parts.append((t, 0, e, "train"))
    n_train = sum(b - a for _, a, b, _ in parts)
    if n_train < 2 * s.window:
        raise DataError(
            f"{where}: the anomaly-free training part has {n_train} samples, fewer than 2 "
            f"windows of {s.window}; expected train_end (or the first labelled anomaly minus "
            f"a margin of {s.margin}) further into the series"
        )
    if n_t - e < 2 * s.window:
        raise DataError(
            f"{where}: the test part of {ids[t]!r} (samples {e}..{n_t}) has {n_t - e} samples, "
            f"fewer than 2 windows of {s.window}"
        )
    parts.append((t, e, n_t, "test"))
    return parts


def load_byo(
    path: str | Path,
    window: int | None = None,
    sample_rate: float | None = None,
    *,
    task: str = "classification",
    series: SeriesSplit | None = None,
) -> SensorData:
    """Load a bring-your-own ``.npz`` or ``.csv`` file for ``task``.

    ``task`` comes from the config's head (``classification`` for ``softmax``,
    ``forecast``), never from the columns a file happens to have. Classification:
    ``.npz`` windows or a ``.csv`` stream with labels and groups. Forecast: a series
    (``.npz`` ``series``, ``.csv`` channels), labels and recordings optional, cut by
    ``series`` (:class:`SeriesSplit`, default: the first labelled anomaly minus a margin).

    ``window``: when given, ``.npz`` windows must have this length and every ``.csv``
    recording must hold at least one window. ``sample_rate`` (Hz) is used when the
    file does not state one; it must agree with the file when both do.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise DataError(f"{path}: unknown extension '{path.suffix}', expected .npz or .csv")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataError(
            f"{path}: {path.stat().st_size} bytes, more than the limit of {MAX_FILE_BYTES}"
        )
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: empty file")
    if window is not None and window < 1:
        raise DataError(f"{path}: window must be >= 1, found {window}")
    if task not in ("classification", "forecast"):
        raise ValueError(f"task: expected 'classification' or 'forecast', found {task!r}")
    if task == "forecast":
        series = series or SeriesSplit(window=window or 64)
        if suffix == ".npz":
            return _npz_series(path, raw, _read_npz(path), sample_rate, window, series)
        return _load_csv_series(path, raw, sample_rate, series)
    if suffix == ".npz":
        return _load_npz(path, raw, sample_rate, window)
    return _load_csv(path, raw, sample_rate, window)
