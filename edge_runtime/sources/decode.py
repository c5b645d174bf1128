"""Bytes -> items: binary frames with range checks, the automatic choice between lines
and frames, and sequence numbers -> gaps. Pure decoding: no threads, no I/O."""

from __future__ import annotations

import logging
import re
from typing import Protocol

from edge_runtime.frames import SEQ_MOD, DecodedBad, DecodedFrame, FrameDecoder
from edge_runtime.sources.events import Bad, Gap
from edge_runtime.sources.limits import ChannelLimits, range_problem
from edge_runtime.sources.lines import Chunk, Item, LineDecoder

__all__ = [
    "DUPLICATE_WINDOW",
    "SNIFF_LIMIT",
    "AutoDecoder",
    "Decoder",
    "FrameItems",
    "SeqTracker",
    "reason_kind",
]

log = logging.getLogger("edge_runtime.sources")

SNIFF_LIMIT = 1 << 16  # bytes examined by encoding="auto" before it gives up guessing
DUPLICATE_WINDOW = 256  # a sequence number at most this far behind is a duplicate


class FrameItems:
    """:class:`FrameDecoder` adapted to the decoder interface, with range checks."""

    def __init__(self, limits: ChannelLimits) -> None:
        self.limits = limits
        self._dec = FrameDecoder(len(limits.names))

    def _convert(self, items: list[DecodedFrame | DecodedBad]) -> list[Item]:
        out: list[Item] = []
        for it in items:
            if isinstance(it, DecodedBad):
                out.append(Bad(it.reason))
                continue
            counts = it.counts
            bad = (counts < self.limits.lo) | (counts > self.limits.hi)
            if not bad.any():
                out.append(Chunk(counts, it.seq, None))
                continue
            for i in range(counts.shape[0]):  # keep the good samples of the frame
                seq = (it.seq + i) % SEQ_MOD
                problem = range_problem(counts[i], self.limits)
                if problem is None:
                    out.append(Chunk(counts[i : i + 1], seq, None))
                else:
                    out.append(Bad(f"frame sample seq {seq}: {problem}"))
        return out

    def feed(self, data: bytes | bytearray | memoryview) -> list[Item]:
        return self._convert(self._dec.feed(data))

    def flush(self, where: str = "at end of stream") -> list[Item]:
        return self._convert(list(self._dec.flush(where)))


class Decoder(Protocol):
    def feed(self, data: bytes | bytearray | memoryview) -> list[Item]: ...

    def flush(self, where: str = ...) -> list[Item]: ...


class AutoDecoder:
    """Runs both decoders until one of them yields a good sample, then keeps that one.

    Both see every byte from the start, so the chosen decoder's output is complete;
    the other decoder's output is discarded.
    """

    def __init__(self, line: LineDecoder, frame: FrameItems) -> None:
        self._cands: dict[str, Decoder] = {"line": line, "frame": frame}
        self._pending: dict[str, list[Item]] = {"line": [], "frame": []}
        self.chosen: str | None = None
        self._seen = 0

    def _pick(self) -> list[Item]:
        for name in ("frame", "line"):
            if any(isinstance(i, Chunk) for i in self._pending[name]):
                self.chosen = name
                log.info("encoding detected: %s", name)
                return self._pending[name]
        return []

    def feed(self, data: bytes | bytearray | memoryview) -> list[Item]:
        if self.chosen is not None:
            return self._cands[self.chosen].feed(data)
        self._seen += len(data)
        for name, dec in self._cands.items():
            self._pending[name] += dec.feed(data)
        out = self._pick()
        if self.chosen is None and self._seen > SNIFF_LIMIT:
            out = [Bad(f"no line or frame recognized in {self._seen} bytes")]
            self._pending = {"line": [], "frame": []}
            self._seen = 0
        return out

    def flush(self, where: str = "at end of stream") -> list[Item]:
        if self.chosen is not None:
            return self._cands[self.chosen].flush(where)
        for name, dec in self._cands.items():
            self._pending[name] += dec.flush(where)
        out = self._pick()
        if self.chosen is None:
            out = self._pending["line"] if self._pending["line"] else self._pending["frame"]
            self._pending = {"line": [], "frame": []}
        return out


class SeqTracker:
    """Sequence numbers (mod 2^16) -> gaps, duplicates and restarts."""

    def __init__(self) -> None:
        self.expected: int | None = None

    def check(self, seq: int, n: int) -> Gap | Bad | None:
        exp = self.expected
        seq %= SEQ_MOD
        if exp is None:
            self.expected = (seq + n) % SEQ_MOD
            return None
        d = (seq - exp) % SEQ_MOD
        if d == 0:
            self.expected = (seq + n) % SEQ_MOD
            return None
        if d < SEQ_MOD // 2:
            self.expected = (seq + n) % SEQ_MOD
            return Gap(d, "sequence")
        behind = SEQ_MOD - d
        if behind <= DUPLICATE_WINDOW:
            return Bad(f"sequence number {seq} repeats an earlier one (expected {exp}): dropped")
        self.expected = (seq + n) % SEQ_MOD
        return Gap(0, "restart")


def reason_kind(reason: str) -> str:
    """A rejection reason without its line number and values, for counting."""
    r = re.sub(r"^line [0-9]+: ", "", reason)
    r = re.sub(r"^frame sample seq [0-9]+: ", "", r)
    r = re.sub(r"channel \S+ ", "", r)
    r = re.sub(r"'[^']*'|-?[0-9]+", "N", r)
    return r.split(" (")[0]
