"""Bring your own data: windows in a ``.npz`` file or a sample stream in a ``.csv`` file.

Everything in such a file is untrusted: it is validated before use and every
problem is a :class:`DataError` that names the file, the problem, and what was
expected versus found.

``.npz`` (windows), loaded with ``allow_pickle=False``:

* ``X``: (N, T, C) float windows (required);
* ``y``: (N,) integer class indices or strings (required);
* ``groups``: (N,) subject or recording id of every window (required);
* ``labels``: (K,) class names (optional; with string ``y`` the default is the
  sorted distinct values of ``y``, with integer ``y`` it is ``"0" .. str(max y)``);
* ``sample_rate``: scalar in Hz (optional; default 1.0, one step per sample, noted
  in ``notes["sample_rate"]``);
* ``channel_names``, ``units``: (C,) strings (optional; ``ch0..`` and ``""``);
* ``scale``: (C,) physical units per count (optional; default max |X| of the
  channel over the file / 32000, so the largest value is 32000 counts).

The windows go to ``SensorData.windows`` (int16 counts), ``window_labels`` and
``window_groups``; ``recordings`` is empty.

``.csv`` (sample stream): a header row is required; one row per sample; a ``label``
column (class names or integers; an empty cell or ``-1`` = unlabelled), a
``recording`` or ``subject`` column (``recording`` wins when both exist), an
optional ``time`` column (ignored); every other column is a channel and must be
numeric. Each run of consecutive rows with the same group value is one
:class:`Recording` of that group, in row order. Label names are the distinct
labels, sorted numerically when they are all integers, else as text. The sample
rate comes from the ``sample_rate`` argument, else 1.0 (noted). Units are unknown
(``""``); scales follow the same max |x| / 32000 rule.

Data without groups is refused: windows cut from one recording overlap, and a
shuffled-window split puts near-copies of training windows into the test set.

Split (both formats) by group: the distinct groups are sorted, shuffled with
``numpy.random.default_rng(0)``; ``round(0.2 G)`` go to test, ``round(0.15 G)`` to
val (at least one each), the rest to train. Fewer than 3 groups are refused.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np

from train.data import Channel, DataError, Recording, SensorData, sha256_bytes, to_counts

FULL_SCALE_COUNTS = 32000
MAX_VALUES = 1 << 28  # refuse files that would expand beyond this many values
GROUP_COLUMNS = ("recording", "subject")
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


def _load_npz(path: Path, raw: bytes, sample_rate: float | None, window: int | None) -> SensorData:
    where = str(path)
    try:
        npz = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{where}: not a readable .npz file: {e}") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{where}: expected an .npz archive of named arrays, found a single array")

    def get(key: str) -> np.ndarray | None:
        if key not in npz.files:
            return None
        try:
            return npz[key]
        except ValueError as e:
            raise DataError(f"{where}: array '{key}' cannot be read without pickle: {e}") from e

    with npz:
        names = sorted(npz.files)
        X, y, groups = get("X"), get("y"), get("groups")
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
        labels_arr, rate_arr = get("labels"), get("sample_rate")
        ch_arr, unit_arr, scale_arr = get("channel_names"), get("units"), get("scale")

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
        split=split_groups(group_ids, where),
        source=str(path),
        source_sha256=sha256_bytes(raw),
        windows=counts,
        window_labels=y_idx.astype(np.int16),
        window_groups=np.array(group_ids, dtype=str),
        notes=notes,
    )


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


def _load_csv(path: Path, raw: bytes, sample_rate: float | None, window: int | None) -> SensorData:
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
    if "label" not in header:
        raise DataError(f"{where}: no 'label' column, found columns {header}")
    group_col = next((g for g in GROUP_COLUMNS if g in header), None)
    if group_col is None:
        raise DataError(
            f"{where}: no 'recording' or 'subject' column, found columns {header}; "
            f"one is required because {LEAK}"
        )
    channel_cols = [h for h in header if h not in ("label", "time", *GROUP_COLUMNS)]
    if not channel_cols:
        raise DataError(f"{where}: no channel columns besides {header}")
    width = len(header)
    for i, r in enumerate(body):
        if len(r) != width:
            raise DataError(f"{where}: row {i + 2} has {len(r)} fields, expected {width}")
    if len(body) * len(channel_cols) > MAX_VALUES:
        raise DataError(f"{where}: more than {MAX_VALUES} values")

    cols = {h: [r[j].strip() for r in body] for j, h in enumerate(header)}
    values = np.empty((len(body), len(channel_cols)), np.float64)
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
    starts = [0] + [i for i in range(1, len(body)) if group_vals[i] != group_vals[i - 1]]
    bounds = list(zip(starts, [*starts[1:], len(body)], strict=True))
    notes: dict = {}
    sample_rate = _check_rate(sample_rate, where, notes)
    scale = auto_scale(values)
    counts, clipped = to_counts(values, scale)
    for a, b in bounds:
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
            "ignored_columns": [h for h in header if h == "time"],
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


def load_byo(
    path: str | Path, window: int | None = None, sample_rate: float | None = None
) -> SensorData:
    """Load a bring-your-own ``.npz`` (windows) or ``.csv`` (sample stream) file.

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
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: empty file")
    if window is not None and window < 1:
        raise DataError(f"{path}: window must be >= 1, found {window}")
    if suffix == ".npz":
        return _load_npz(path, raw, sample_rate, window)
    return _load_csv(path, raw, sample_rate, window)
