"""Accepted count range per channel, from the manifest (pure: no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.sources.events import SourceError

__all__ = ["INT16_MAX", "INT16_MIN", "ChannelLimits", "channel_limits", "range_problem"]

INT16_MIN, INT16_MAX = -32768, 32767


@dataclass(frozen=True)
class ChannelLimits:
    names: tuple[str, ...]
    scale: np.ndarray  # float64 (C,)
    lo: np.ndarray  # int64 (C,): smallest accepted count
    hi: np.ndarray  # int64 (C,): largest accepted count
    sample_rate: float | None


def channel_limits(manifest: dict[str, Any], margin: float | None = 1.0) -> ChannelLimits:
    """Accepted count range per channel.

    With ``raw_min``/``raw_max`` in the manifest (the range seen in training), a count
    is accepted in ``[raw_min - m, raw_max + m]`` with ``m = ceil(margin * max(raw_max -
    raw_min, 1))``, intersected with int16; without them, or with ``margin=None``, the
    whole int16 range is accepted.
    """
    ds = manifest.get("dataset") if isinstance(manifest, dict) else None
    chans = ds.get("channels") if isinstance(ds, dict) else None
    if not isinstance(chans, list) or not chans:
        raise SourceError("manifest has no dataset.channels: cannot read a sensor stream")
    names, scale, lo, hi = [], [], [], []
    for i, ch in enumerate(chans):
        s = ch.get("scale") if isinstance(ch, dict) else None
        if not isinstance(s, int | float) or not math.isfinite(s) or s <= 0:
            raise SourceError(f"manifest dataset.channels[{i}].scale must be a number > 0")
        names.append(str(ch.get("name", f"ch{i}")))
        scale.append(float(s))
        a, b = ch.get("raw_min"), ch.get("raw_max")
        if margin is not None and isinstance(a, int) and isinstance(b, int) and a <= b:
            m = math.ceil(margin * max(b - a, 1))
            lo.append(max(INT16_MIN, a - m))
            hi.append(min(INT16_MAX, b + m))
        else:
            lo.append(INT16_MIN)
            hi.append(INT16_MAX)
    rate = ds.get("sample_rate")
    ok_rate = isinstance(rate, int | float) and math.isfinite(rate) and rate > 0
    return ChannelLimits(
        names=tuple(names),
        scale=np.array(scale, dtype=np.float64),
        lo=np.array(lo, dtype=np.int64),
        hi=np.array(hi, dtype=np.int64),
        sample_rate=float(rate) if ok_rate else None,
    )


def range_problem(counts: np.ndarray, limits: ChannelLimits) -> str | None:
    low = counts < limits.lo
    high = counts > limits.hi
    if not (low.any() or high.any()):
        return None
    c = int(np.flatnonzero(low | high)[0])
    return (
        f"channel {limits.names[c]} count {int(counts[c])} outside accepted range "
        f"[{int(limits.lo[c])}, {int(limits.hi[c])}]"
    )


# --------------------------------------------------------------------------- decoders
