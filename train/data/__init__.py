"""Data loaders. Each returns a :class:`SensorData` whose samples are int16 counts.

Sensor values become counts once, at load, with a per-channel scale (physical
units per count); everything downstream works from counts, as a device does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from edge_runtime.contract import round_half_away

INT16_MIN = -32768
INT16_MAX = 32767


class DataError(ValueError):
    """Bad or unusable input data; the message names the file and the problem."""


@dataclass(frozen=True)
class Channel:
    name: str
    unit: str
    scale: float  # physical units per int16 count


@dataclass
class Recording:
    group: str  # subject or recording id: the unit of every split
    counts: np.ndarray  # (n, C) int16
    labels: np.ndarray  # (n,) int16 index into label_names; -1 = unlabelled / dropped


@dataclass
class SensorData:
    dataset_id: str
    task: Literal["classification", "forecast"]
    sample_rate: float  # Hz
    channels: list[Channel]
    label_names: list[str]
    recordings: list[Recording]
    split: dict[str, list[str]]  # "train" / "val" / "test" -> group ids
    source: str  # path of the raw file as loaded
    source_sha256: str
    # Bring-your-own .npz data comes as windows, not recordings:
    windows: np.ndarray | None = None  # (N, T, C) int16 counts
    window_labels: np.ndarray | None = None  # (N,) int
    window_groups: np.ndarray | None = None  # (N,) str
    notes: dict = field(default_factory=dict)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def recordings_of(self, part: str) -> list[Recording]:
        groups = set(self.split[part])
        return [r for r in self.recordings if r.group in groups]


def to_counts(values: np.ndarray, scale: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Physical values (..., C) -> int16 counts with a per-channel scale (units per count).

    Rounds half away from zero (the device contract's rule) and clips to int16. Returns the counts and the number
    of clipped values per channel (int64, shape (C,)).
    """
    q = np.asarray(values, dtype=np.float64) / np.asarray(scale, dtype=np.float64)
    q = round_half_away(q)
    over = (q < INT16_MIN) | (q > INT16_MAX)
    clipped = over.reshape(-1, q.shape[-1]).sum(axis=0).astype(np.int64)
    return np.clip(q, INT16_MIN, INT16_MAX).astype(np.int16), clipped


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_files(paths: list[Path]) -> tuple[str, dict[str, str]]:
    """One digest for several raw files: sha256 of their ``sha256sum``-style listing.

    Returns that digest and the per-file digests keyed by file name.
    """
    per = {p.name: sha256_bytes(p.read_bytes()) for p in paths}
    listing = "".join(f"{h}  {name}\n" for name, h in sorted(per.items()))
    return sha256_bytes(listing.encode()), per
