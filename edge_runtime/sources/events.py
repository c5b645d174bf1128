"""What a sensor stream yields: :class:`Sample`, :class:`Gap` and :class:`Bad` events, and
the counts a :class:`~edge_runtime.sources.source.Source` keeps of them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Bad", "Event", "Gap", "Outage", "Sample", "SourceError", "SourceStats"]


class SourceError(Exception):
    """A source cannot be opened or has failed for good (not a bad line: that is :class:`Bad`)."""


# --------------------------------------------------------------------------- events


@dataclass
class Sample:
    counts: np.ndarray  # int16 (C,)
    seq: int | None = None  # sender's sequence number (frames: uint16), if it sends one
    t: float | None = None  # sender's timestamp in seconds, if it sends one


@dataclass
class Gap:
    missing: int  # samples known or estimated lost; 0 when unknown (e.g. a sender restart)
    reason: str = "sequence"  # "sequence", "reconnect" or "restart"


@dataclass
class Bad:
    reason: str


Event = Sample | Gap | Bad


@dataclass
class Outage:
    start: float  # time.time() when the loss was noticed
    duration: float  # seconds until the port was open again
    error: str


@dataclass
class SourceStats:
    samples: int = 0
    bad: int = 0
    gaps: int = 0
    missing: int = 0  # sum of Gap.missing
    reconnects: int = 0
    outages: list[Outage] = field(default_factory=list)
    bad_reasons: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    encoding: str | None = None  # the encoding in use ("line" / "frame"), once known

    @property
    def outage_seconds(self) -> float:
        return float(sum(o.duration for o in self.outages))

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "bad": self.bad,
            "gaps": self.gaps,
            "missing": self.missing,
            "reconnects": self.reconnects,
            "outages": [
                {"start": o.start, "duration": round(o.duration, 3), "error": o.error}
                for o in self.outages
            ],
            "outage_seconds": round(self.outage_seconds, 3),
            "bad_reasons": dict(self.bad_reasons.most_common()),
            "bytes": self.bytes,
            "encoding": self.encoding,
        }
