"""Live sensor streams: serial ports, sockets, CSV replays and stdin, as events.

::

    src = open_source("serial:/dev/ttyUSB0@115200", manifest)
    for ev in iter_events(src):
        if isinstance(ev, Sample):  ...   # ev.counts: int16 (C,)
        elif isinstance(ev, Gap):   ...   # the stream broke: reset streaming state
        else:                       ...   # Bad: a rejected line or frame (counted)

Sources (``spec``):

- ``serial:PATH[@BAUD]`` or a bare ``/dev/...`` path: a serial device (115200 baud
  unless given); ``serial:`` also takes any pyserial URL.
- any pyserial URL (``socket://host:port``, ``rfc2217://host:port``, ``loop://``),
  opened with :func:`serial.serial_for_url`.
- ``csv:FILE``: a recorded stream in the line protocol, replayed at the
  manifest's sample rate with ``realtime=True``, else as fast as it is read.
- ``-``: standard input (paced like ``csv:`` with ``realtime=True``).

The wire formats (text lines and binary frames) are specified in
docs/protocol-serial.md; :mod:`edge_runtime.frames` implements the frames.
Every byte is untrusted: nothing a sensor sends can raise here; it becomes a
:class:`Bad` event. A lost port (``SerialException`` or end of file) is reopened
with exponential back-off and reported as a :class:`Gap` before the next sample.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal, Protocol

import numpy as np

from edge_runtime.frames import SEQ_MOD, DecodedBad, DecodedFrame, FrameDecoder

__all__ = [
    "DEFAULT_BAUD",
    "MAX_LINE",
    "Backoff",
    "Bad",
    "Gap",
    "LineDecoder",
    "Outage",
    "Sample",
    "Source",
    "SourceError",
    "SourceStats",
    "channel_limits",
    "iter_events",
    "open_source",
    "parse_spec",
]

log = logging.getLogger(__name__)

DEFAULT_BAUD = 115200
MAX_LINE = 1024  # bytes, terminator excluded; a longer line is rejected whole
SNIFF_LIMIT = 1 << 16  # bytes examined by encoding="auto" before it gives up guessing
DUPLICATE_WINDOW = 256  # a sequence number at most this far behind is a duplicate
INT16_MIN, INT16_MAX = -32768, 32767

Encoding = Literal["auto", "line", "frame"]
Units = Literal["counts", "physical"]


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


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``initial``, doubled after each failed attempt, at most ``maximum``.

    ``give_up`` (seconds) ends the stream with :class:`SourceError` when a port stays
    lost that long; ``None`` retries for ever.
    """

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    give_up: float | None = None

    def delays(self) -> Iterator[float]:
        d = self.initial
        while True:
            yield d
            d = min(d * self.factor, self.maximum)


# --------------------------------------------------------------------------- manifest


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


def _range_problem(counts: np.ndarray, limits: ChannelLimits) -> str | None:
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


@dataclass
class _Chunk:
    """Consecutive good samples from one line or frame."""

    counts: np.ndarray  # (n, C) int16
    seq: int | None
    t: float | None


_Item = _Chunk | Bad

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

    def feed(self, data: bytes | bytearray | memoryview) -> list[_Item]:
        out: list[_Item] = []
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

    def flush(self, where: str = "at end of stream") -> list[_Item]:
        """A last line without its newline is parsed (a file may end so); see docs."""
        out: list[_Item] = []
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

    def parse_line(self, raw: bytes) -> _Item | None:
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

    def _parse_fields(self, fields: list[str], where: str) -> _Item:
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
        problem = _range_problem(counts, self.limits)
        if problem is not None:
            return Bad(f"{where}: {problem}")
        return _Chunk(counts.astype(np.int16).reshape(1, -1), seq, t)


class _FrameItems:
    """:class:`FrameDecoder` adapted to the decoder interface, with range checks."""

    def __init__(self, limits: ChannelLimits) -> None:
        self.limits = limits
        self._dec = FrameDecoder(len(limits.names))

    def _convert(self, items: list[DecodedFrame | DecodedBad]) -> list[_Item]:
        out: list[_Item] = []
        for it in items:
            if isinstance(it, DecodedBad):
                out.append(Bad(it.reason))
                continue
            counts = it.counts
            bad = (counts < self.limits.lo) | (counts > self.limits.hi)
            if not bad.any():
                out.append(_Chunk(counts, it.seq, None))
                continue
            for i in range(counts.shape[0]):  # keep the good samples of the frame
                seq = (it.seq + i) % SEQ_MOD
                problem = _range_problem(counts[i], self.limits)
                if problem is None:
                    out.append(_Chunk(counts[i : i + 1], seq, None))
                else:
                    out.append(Bad(f"frame sample seq {seq}: {problem}"))
        return out

    def feed(self, data: bytes | bytearray | memoryview) -> list[_Item]:
        return self._convert(self._dec.feed(data))

    def flush(self, where: str = "at end of stream") -> list[_Item]:
        return self._convert(list(self._dec.flush(where)))


class _Decoder(Protocol):
    def feed(self, data: bytes | bytearray | memoryview) -> list[_Item]: ...

    def flush(self, where: str = ...) -> list[_Item]: ...


class _AutoDecoder:
    """Runs both decoders until one of them yields a good sample, then keeps that one.

    Both see every byte from the start, so the chosen decoder's output is complete;
    the other decoder's output is discarded.
    """

    def __init__(self, line: LineDecoder, frame: _FrameItems) -> None:
        self._cands: dict[str, _Decoder] = {"line": line, "frame": frame}
        self._pending: dict[str, list[_Item]] = {"line": [], "frame": []}
        self.chosen: str | None = None
        self._seen = 0

    def _pick(self) -> list[_Item]:
        for name in ("frame", "line"):
            if any(isinstance(i, _Chunk) for i in self._pending[name]):
                self.chosen = name
                log.info("encoding detected: %s", name)
                return self._pending[name]
        return []

    def feed(self, data: bytes | bytearray | memoryview) -> list[_Item]:
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

    def flush(self, where: str = "at end of stream") -> list[_Item]:
        if self.chosen is not None:
            return self._cands[self.chosen].flush(where)
        for name, dec in self._cands.items():
            self._pending[name] += dec.flush(where)
        out = self._pick()
        if self.chosen is None:
            out = self._pending["line"] if self._pending["line"] else self._pending["frame"]
            self._pending = {"line": [], "frame": []}
        return out


# --------------------------------------------------------------------------- byte readers


class _Lost(Exception):
    """The port went away (it may come back)."""


class _Reader(Protocol):
    def read(self) -> bytes:
        """Some bytes, b"" after a read timeout; raises _Lost or EOFError."""
        ...

    def close(self) -> None: ...


class _SerialReader:
    def __init__(self, url: str, baud: int, timeout: float) -> None:
        import serial

        self._serial_mod = serial
        try:
            self._port = serial.serial_for_url(url, baudrate=baud, timeout=timeout)
        except (serial.SerialException, OSError, ValueError) as e:
            raise _Lost(str(e)) from e

    def read(self) -> bytes:
        try:
            n = self._port.in_waiting
            return bytes(self._port.read(min(max(n, 1), 1 << 16)))
        except (self._serial_mod.SerialException, OSError) as e:
            raise _Lost(str(e) or type(e).__name__) from e

    def close(self) -> None:
        try:
            self._port.close()
        except Exception:
            pass


class _FileReader:
    def __init__(self, f: BinaryIO, *, owned: bool) -> None:
        self._f = f
        self._owned = owned

    def read(self) -> bytes:
        read1 = getattr(self._f, "read1", None)
        data = read1(1 << 16) if read1 is not None else self._f.read(1 << 16)
        if not data:
            raise EOFError
        return bytes(data)

    def close(self) -> None:
        if self._owned:
            self._f.close()


# --------------------------------------------------------------------------- the source


class _SeqTracker:
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


def parse_spec(spec: str) -> tuple[str, str, int]:
    """``spec`` -> (kind, target, baud) with kind in serial / url / csv / stdin."""
    if not isinstance(spec, str) or not spec:
        raise SourceError("empty source spec")
    if spec == "-":
        return "stdin", "-", 0
    if spec.startswith("csv:"):
        if not spec[4:]:
            raise SourceError("csv: needs a file name, e.g. csv:recording.csv")
        return "csv", spec[4:], 0
    if spec.startswith("serial:"):
        target, baud = spec[7:], DEFAULT_BAUD
        head, at, tail = target.rpartition("@")
        if at and tail.isdigit() and head:
            target, baud = head, int(tail)
        if not target:
            raise SourceError("serial: needs a device, e.g. serial:/dev/ttyUSB0@115200")
        if baud <= 0 or baud > 10_000_000:
            raise SourceError(f"unreasonable baud rate {baud}")
        return ("url" if "://" in target else "serial"), target, baud
    if re.match(r"^[a-z][a-z0-9+.-]*://", spec):
        return "url", spec, DEFAULT_BAUD
    if spec.startswith("/dev/") or _is_char_device(spec):
        return "serial", spec, DEFAULT_BAUD
    raise SourceError(
        f"unknown source {spec!r}: use serial:/dev/ttyUSB0[@BAUD], a /dev path, a pyserial "
        "URL (socket://host:port, rfc2217://host:port, loop://), csv:FILE or - (stdin)"
    )


def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


class Source:
    """A stream of :class:`Sample` / :class:`Gap` / :class:`Bad` events from one input.

    Iterate it (once). ``opener`` returns a fresh reader each time the input is
    (re)opened; ``reconnectable`` says whether a lost input may be reopened.
    :meth:`close` (from any thread) ends an iteration within one read timeout.
    """

    def __init__(
        self,
        opener: Callable[[], _Reader],
        limits: ChannelLimits,
        *,
        name: str,
        encoding: Encoding = "auto",
        units: Units = "counts",
        header: bool = False,
        realtime: bool = False,
        reconnectable: bool = False,
        reconnect: bool = True,
        backoff: Backoff | None = None,
    ) -> None:
        if encoding not in ("auto", "line", "frame"):
            raise ValueError(f"encoding must be 'auto', 'line' or 'frame', not {encoding!r}")
        if realtime and limits.sample_rate is None:
            raise SourceError("realtime replay needs manifest dataset.sample_rate")
        self.name = name
        self.limits = limits
        self.encoding = encoding
        self.units = units
        self.realtime = realtime
        self.reconnect = reconnect and reconnectable
        self.backoff = backoff or Backoff()
        self.stats = SourceStats()
        self._opener = opener
        self._header = header
        self._stop = threading.Event()
        self._reader: _Reader | None = None
        self._decoder = self._new_decoder()
        self._seq = _SeqTracker()
        self._broken_at: float | None = None  # monotonic time the last outage began
        self._outage_missing_est = 0
        self._started = False
        self._reader = opener()  # errors here are the caller's: nothing has been read yet

    @property
    def n_channels(self) -> int:
        return len(self.limits.names)

    def _new_decoder(self) -> _Decoder:
        line = LineDecoder(self.limits, self.units, header=self._header)
        if self.encoding == "line":
            self.stats.encoding = "line"
            return line
        frame = _FrameItems(self.limits)
        if self.encoding == "frame":
            self.stats.encoding = "frame"
            return frame
        return _AutoDecoder(line, frame)

    def close(self) -> None:
        self._stop.set()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._close_reader()

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __iter__(self) -> Iterator[Event]:
        if self._started:
            raise SourceError("a Source can be iterated once")
        self._started = True
        try:
            yield from self._run()
        finally:
            self._close_reader()

    # -- internals

    def _run(self) -> Iterator[Event]:
        pace_t0: float | None = None
        paced = 0
        period = 1.0 / self.limits.sample_rate if self.limits.sample_rate else 0.0
        while not self._stop.is_set():
            assert self._reader is not None
            try:
                data = self._reader.read()
            except EOFError:  # a file or pipe ended (a serial port's loss is _Lost)
                yield from self._emit(self._decoder.flush())
                break
            except _Lost as e:
                if not self.reconnect:
                    log.warning("%s: lost (%s); not reconnecting", self.name, e)
                    yield from self._emit(self._decoder.flush())
                    break
                self._lost(str(e))
                yield from self._emit(self._decoder.flush("at disconnect"))
                if not self._reopen():
                    break
                continue
            if not data:
                continue
            self.stats.bytes += len(data)
            for ev in self._emit(self._decoder.feed(data)):
                if self.realtime and isinstance(ev, Sample):
                    now = time.monotonic()
                    if pace_t0 is None:
                        pace_t0 = now
                    due = pace_t0 + paced * period
                    if due > now and self._stop.wait(due - now):
                        return
                    paced += 1
                yield ev
                if self._stop.is_set():
                    return

    def _emit(self, items: list[_Item]) -> Iterator[Event]:
        if self.stats.encoding is None and isinstance(self._decoder, _AutoDecoder):
            self.stats.encoding = self._decoder.chosen
        for it in items:
            if isinstance(it, Bad):
                self.stats.bad += 1
                self.stats.bad_reasons[_reason_kind(it.reason)] += 1
                yield it
                continue
            n = it.counts.shape[0]
            gap: Gap | Bad | None = None
            numbered = it.seq is not None and self._seq.expected is not None
            if it.seq is not None:
                gap = self._seq.check(it.seq, n)
                if isinstance(gap, Bad):
                    self.stats.bad += 1
                    self.stats.bad_reasons["duplicate sequence number"] += 1
                    yield gap
                    continue
            if self._broken_at is not None:
                # the first sample after an outage: one Gap, counted by sequence if we can
                if numbered:
                    missing = gap.missing if isinstance(gap, Gap) else 0
                else:
                    missing = self._outage_missing_est
                gap = Gap(missing, "reconnect")
                self._broken_at = None
            if isinstance(gap, Gap):
                self.stats.gaps += 1
                self.stats.missing += gap.missing
                yield gap
            for i in range(n):
                seq = None if it.seq is None else (it.seq + i) % SEQ_MOD
                self.stats.samples += 1
                yield Sample(it.counts[i].copy(), seq, it.t)

    def _lost(self, error: str) -> None:
        self._close_reader()
        if self._broken_at is None:
            self._broken_at = time.monotonic()
        self.stats.outages.append(Outage(time.time(), 0.0, error))
        log.warning("%s: lost (%s); reconnecting", self.name, error)

    def _reopen(self) -> bool:
        outage = self.stats.outages[-1]
        t0 = time.monotonic()
        last = outage.error
        for delay in self.backoff.delays():
            if self._stop.wait(delay):
                outage.duration = time.monotonic() - t0
                return False
            try:
                self._reader = self._opener()
            except _Lost as e:
                if str(e) != last:
                    log.info("%s: reopen failed: %s", self.name, e)
                    last = str(e)
                waited = time.monotonic() - t0
                if self.backoff.give_up is not None and waited >= self.backoff.give_up:
                    outage.duration = waited
                    raise SourceError(
                        f"{self.name}: lost for {waited:.1f} s, giving up ({e})"
                    ) from e
                continue
            break
        outage.duration = time.monotonic() - t0
        self.stats.reconnects += 1
        assert self._broken_at is not None
        down = time.monotonic() - self._broken_at
        rate = self.limits.sample_rate or 0.0
        self._outage_missing_est = int(round(down * rate))
        log.warning("%s: reconnected after %.2f s", self.name, outage.duration)
        return True


def _reason_kind(reason: str) -> str:
    """A rejection reason without its line number and values, for counting."""
    r = re.sub(r"^line [0-9]+: ", "", reason)
    r = re.sub(r"^frame sample seq [0-9]+: ", "", r)
    r = re.sub(r"channel \S+ ", "", r)
    r = re.sub(r"'[^']*'|-?[0-9]+", "N", r)
    return r.split(" (")[0]


def iter_events(source: Source) -> Iterator[Event]:
    """The events of ``source``, in order: :class:`Sample`, :class:`Gap` or :class:`Bad`."""
    return iter(source)


def open_source(
    spec: str,
    manifest: dict[str, Any],
    *,
    encoding: Encoding = "auto",
    units: Units = "counts",
    realtime: bool = False,
    reconnect: bool = True,
    backoff: Backoff | None = None,
    range_margin: float | None = 1.0,
    read_timeout: float = 0.1,
) -> Source:
    """Open a sensor stream described by ``spec`` for a bundle's ``manifest``.

    ``encoding``: ``"line"`` (text, one sample a line), ``"frame"`` (binary frames)
    or ``"auto"`` (whichever yields a good sample first). ``units``: line values are
    int16 counts (``"counts"``) or physical values converted with the manifest scale
    (``"physical"``); frames always carry counts. ``realtime`` paces ``csv:`` and ``-``
    at the manifest sample rate. ``reconnect`` reopens lost serial ports with
    ``backoff``. ``range_margin``: see :func:`channel_limits`.
    """
    limits = channel_limits(manifest, range_margin)
    kind, target, baud = parse_spec(spec)
    opener: Callable[[], _Reader]
    if kind in ("serial", "url"):

        def opener() -> _Reader:
            return _SerialReader(target, baud, read_timeout)

        try:
            return Source(
                opener,
                limits,
                name=spec,
                encoding=encoding,
                units=units,
                realtime=False,
                reconnectable=True,
                reconnect=reconnect,
                backoff=backoff,
            )
        except _Lost as e:
            raise SourceError(f"cannot open {spec}: {e}") from e
    if kind == "csv":
        try:
            f = open(target, "rb")
        except OSError as e:
            raise SourceError(f"cannot open {target}: {e.strerror or e}") from e

        def file_opener() -> _Reader:
            return _FileReader(f, owned=True)

        return Source(
            file_opener,
            limits,
            name=spec,
            encoding="line" if encoding == "auto" else encoding,
            units=units,
            header=True,
            realtime=realtime,
        )

    def stdin_opener() -> _Reader:
        return _FileReader(sys.stdin.buffer, owned=False)

    return Source(
        stdin_opener,
        limits,
        name="stdin",
        encoding=encoding,
        units=units,
        realtime=realtime,
    )
