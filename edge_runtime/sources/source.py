"""The :class:`Source`: a reader, a decoder and the event stream, with pacing and reconnects.

The one place with a thread-safe stop (:meth:`Source.close`), real-time pacing and the
reconnect policy; the decoding itself is pure (:mod:`.lines`, :mod:`.decode`) and the
bytes come from :mod:`.readers`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

from edge_runtime.frames import SEQ_MOD
from edge_runtime.sources.decode import AutoDecoder, Decoder, FrameItems, SeqTracker, reason_kind
from edge_runtime.sources.events import Bad, Event, Gap, Outage, Sample, SourceError, SourceStats
from edge_runtime.sources.limits import ChannelLimits, channel_limits
from edge_runtime.sources.lines import Item, LineDecoder, Units
from edge_runtime.sources.readers import (
    Backoff,
    FileReader,
    PortLost,
    Reader,
    SerialReader,
    parse_spec,
    reopen,
)

__all__ = ["Encoding", "Source", "iter_events", "open_source"]

log = logging.getLogger("edge_runtime.sources")

Encoding = Literal["auto", "line", "frame"]


class Source:
    """A stream of :class:`Sample` / :class:`Gap` / :class:`Bad` events from one input.

    Iterate it (once). ``opener`` returns a fresh reader each time the input is
    (re)opened; ``reconnectable`` says whether a lost input may be reopened.
    :meth:`close` (from any thread) ends an iteration within one read timeout.
    """

    def __init__(
        self,
        opener: Callable[[], Reader],
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
        self._reader: Reader | None = None
        self._decoder = self._new_decoder()
        self._seq = SeqTracker()
        self._broken_at: float | None = None  # monotonic time the last outage began
        self._outage_missing_est = 0
        self._started = False
        self._reader = opener()  # errors here are the caller's: nothing has been read yet

    @property
    def n_channels(self) -> int:
        return len(self.limits.names)

    def _new_decoder(self) -> Decoder:
        line = LineDecoder(self.limits, self.units, header=self._header)
        if self.encoding == "line":
            self.stats.encoding = "line"
            return line
        frame = FrameItems(self.limits)
        if self.encoding == "frame":
            self.stats.encoding = "frame"
            return frame
        return AutoDecoder(line, frame)

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
            except EOFError:  # a file or pipe ended (a serial port's loss is PortLost)
                yield from self._emit(self._decoder.flush())
                break
            except PortLost as e:
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

    def _emit(self, items: list[Item]) -> Iterator[Event]:
        if self.stats.encoding is None and isinstance(self._decoder, AutoDecoder):
            self.stats.encoding = self._decoder.chosen
        for it in items:
            if isinstance(it, Bad):
                self.stats.bad += 1
                self.stats.bad_reasons[reason_kind(it.reason)] += 1
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
        reader = reopen(self._opener, self.backoff, self._stop, self.name, self.stats.outages[-1])
        if reader is None:
            return False
        self._reader = reader
        self.stats.reconnects += 1
        assert self._broken_at is not None
        down = time.monotonic() - self._broken_at
        rate = self.limits.sample_rate or 0.0
        self._outage_missing_est = int(round(down * rate))
        log.warning("%s: reconnected after %.2f s", self.name, self.stats.outages[-1].duration)
        return True


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
    opener: Callable[[], Reader]
    if kind in ("serial", "url"):

        def opener() -> Reader:
            return SerialReader(target, baud, read_timeout)

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
        except PortLost as e:
            raise SourceError(f"cannot open {spec}: {e}") from e
    if kind == "csv":
        try:
            f = open(target, "rb")
        except OSError as e:
            raise SourceError(f"cannot open {target}: {e.strerror or e}") from e

        def file_opener() -> Reader:
            return FileReader(f, owned=True)

        return Source(
            file_opener,
            limits,
            name=spec,
            encoding="line" if encoding == "auto" else encoding,
            units=units,
            header=True,
            realtime=realtime,
        )

    def stdin_opener() -> Reader:
        return FileReader(sys.stdin.buffer, owned=False)

    return Source(
        stdin_opener,
        limits,
        name="stdin",
        encoding=encoding,
        units=units,
        realtime=realtime,
    )
