"""The line protocol: text lines -> samples or rejections (docs/protocol-serial.md).

Pure decoding: bytes in, items out, no threads and no I/O. Every byte is untrusted:
nothing here raises on input; a bad line becomes a :class:`Bad` item.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge_runtime.sources.events import Bad, SourceError
from edge_runtime.sources.limits import INT16_MAX, INT16_MIN, ChannelLimits, range_problem

__all__ = ["MAX_LINE", "Chunk", "Item", "LineDecoder", "Units"]

MAX_LINE = 1024  # bytes, terminator excluded; a longer line is rejected whole

Units = Literal["counts", "physical"]


@dataclass
class Chunk:
    """Consecutive good samples from one line or frame."""

    counts: np.ndarray  # (n, C) int16
    seq: int | None
    t: float | None


Item = Chunk | Bad

_INT = re.compile(r"[+-]?[0-9]{1,12}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_NONFINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
_SEQ = re.compile(r"[0-9]{1,12}")


def _snippet(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


class LineDecoder:
    """Text lines in the line protocol -> samples (see docs/protocol-serial.md).

    ``header=True`` (CSV files) accepts a first line naming the columns: the
    manifest's channel names in order, optionally preceded by ``t`` and/or ``n``
    columns holding the timestamp and the sequence number without their ``t=``/``n=``
    tags. A header naming other channels raises :class:`SourceError`.
    """

    def __init__(self, limits: ChannelLimits, units: Units = "counts", *, header: bool = False):
        if units not in ("counts", "physical"):
            raise ValueError(f"units must be 'counts' or 'physical', not {units!r}")
        self.limits = limits
        self.units = units
        self.n_channels = len(limits.names)
        self._header_pending = header
        self._columns: tuple[str, ...] = ()
        self._buf = bytearray()
        self._overlong = False
        self.lineno = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Item]:
        out: list[Item] = []
        buf = self._buf
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            if self._overlong:
                self._overlong = False
                continue
            item = self.parse_line(line)
            if item is not None:
                out.append(item)
        del buf[:start]
        if len(buf) > MAX_LINE + 1:
            if not self._overlong:
                self.lineno += 1
                out.append(Bad(f"line {self.lineno}: longer than {MAX_LINE} bytes"))
            self._overlong = True
            buf.clear()
        return out

    def flush(self, where: str = "at end of stream") -> list[Item]:
        """A last line without its newline is parsed (a file may end so); see docs."""
        out: list[Item] = []
        if self._buf and not self._overlong:
            if where == "at end of stream":
                item = self.parse_line(bytes(self._buf))
                if item is not None:
                    out.append(item)
            else:
                self.lineno += 1
                out.append(Bad(f"line {self.lineno}: incomplete line {where}"))
        self._buf.clear()
        self._overlong = False
        return out

    def parse_line(self, raw: bytes) -> Item | None:
        """One line (terminator optional) -> a sample, a rejection, or None (blank/comment)."""
        self.lineno += 1
        where = f"line {self.lineno}"
        if len(raw) > MAX_LINE + 1:
            return Bad(f"{where}: longer than {MAX_LINE} bytes")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return Bad(f"{where}: not ASCII text")
        text = text.strip(" \t\r\n")
        if not text or text.startswith("#"):
            return None
        fields = [f.strip(" \t") for f in text.split(",")]
        if self._header_pending:
            self._header_pending = False
            if fields[0][:1].isalpha() and "=" not in fields[0]:
                self._set_header(fields)
                return None
        return self._parse_fields(fields, where)

    def _set_header(self, fields: list[str]) -> None:
        names = list(self.limits.names)
        k = 0
        while k < len(fields) and k < 2 and fields[k] in ("t", "n") and fields[k] not in names:
            k += 1
        if fields[k:] != names or len(set(fields[:k])) != k:
            raise SourceError(
                f"CSV header {','.join(fields)!r} does not match the manifest channels "
                f"{','.join(names)!r} (optionally preceded by t and/or n)"
            )
        self._columns = tuple(fields[:k])

    def _parse_fields(self, fields: list[str], where: str) -> Item:
        t: float | None = None
        seq: int | None = None
        k = 0
        while k < len(fields):
            f = fields[k]
            if k < len(self._columns):
                key, val = self._columns[k], f
            elif f[:2] in ("t=", "n=") and k < 2 + len(self._columns):
                key, val = f[0], f[2:]
            else:
                break
            if key == "t":
                if t is not None:
                    return Bad(f"{where}: timestamp given twice")
                if _NONFINITE.fullmatch(val):
                    return Bad(f"{where}: timestamp is {val}")
                if not _FLOAT.fullmatch(val):
                    return Bad(f"{where}: bad timestamp {_snippet(val)}")
                t = float(val)
                if not math.isfinite(t):
                    return Bad(f"{where}: timestamp out of range")
            else:
                if seq is not None:
                    return Bad(f"{where}: sequence number given twice")
                if not _SEQ.fullmatch(val):
                    return Bad(f"{where}: bad sequence number {_snippet(val)}")
                seq = int(val)
            k += 1
        values = fields[k:]
        if len(values) != self.n_channels:
            return Bad(f"{where}: {len(values)} values, expected {self.n_channels}")
        counts = np.empty(self.n_channels, dtype=np.int64)
        for c, v in enumerate(values):
            if self.units == "counts":
                if not _INT.fullmatch(v):
                    if _NONFINITE.fullmatch(v):
                        return Bad(f"{where}: channel {self.limits.names[c]} is {v}")
                    if _FLOAT.fullmatch(v):
                        return Bad(
                            f"{where}: channel {self.limits.names[c]} {_snippet(v)} is not an "
                            "integer count (physical values need units='physical')"
                        )
                    return Bad(
                        f"{where}: channel {self.limits.names[c]} not a number {_snippet(v)}"
                    )
                n = int(v)
            else:
                if _NONFINITE.fullmatch(v):
                    return Bad(f"{where}: channel {self.limits.names[c]} is {v}")
                if not _FLOAT.fullmatch(v):
                    return Bad(
                        f"{where}: channel {self.limits.names[c]} not a number {_snippet(v)}"
                    )
                x = float(v) / self.limits.scale[c]
                if not math.isfinite(x) or abs(x) > 1e6:
                    return Bad(f"{where}: channel {self.limits.names[c]} value {v} outside int16")
                n = int(math.copysign(math.floor(abs(x) + 0.5), x))
            if n < INT16_MIN or n > INT16_MAX:
                return Bad(f"{where}: channel {self.limits.names[c]} count {n} outside int16")
            counts[c] = n
        problem = range_problem(counts, self.limits)
        if problem is not None:
            return Bad(f"{where}: {problem}")
        return Chunk(counts.astype(np.int16).reshape(1, -1), seq, t)
