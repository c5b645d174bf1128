"""Byte readers (serial port or pyserial URL, file, stdin), source specs, and reopening a
lost port with exponential back-off."""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from edge_runtime.sources.events import Outage, SourceError

__all__ = [
    "DEFAULT_BAUD",
    "Backoff",
    "FileReader",
    "PortLost",
    "Reader",
    "SerialReader",
    "parse_spec",
    "reopen",
]

log = logging.getLogger("edge_runtime.sources")

DEFAULT_BAUD = 115200


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


class PortLost(Exception):
    """The port went away (it may come back)."""


class Reader(Protocol):
    def read(self) -> bytes:
        """Some bytes, b"" after a read timeout; raises PortLost or EOFError."""
        ...

    def close(self) -> None: ...


class SerialReader:
    def __init__(self, url: str, baud: int, timeout: float) -> None:
        import serial

        self._serial_mod = serial
        try:
            self._port = serial.serial_for_url(url, baudrate=baud, timeout=timeout)
        except (serial.SerialException, OSError, ValueError) as e:
            raise PortLost(str(e)) from e

    def read(self) -> bytes:
        try:
            n = self._port.in_waiting
            return bytes(self._port.read(min(max(n, 1), 1 << 16)))
        except (self._serial_mod.SerialException, OSError) as e:
            raise PortLost(str(e) or type(e).__name__) from e

    def close(self) -> None:
        try:
            self._port.close()
        except Exception:
            pass


class FileReader:
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


def reopen(
    opener: Callable[[], Reader],
    backoff: Backoff,
    stop: threading.Event,
    name: str,
    outage: Outage,
) -> Reader | None:
    """Open a lost input again, waiting ``backoff`` delays between attempts.

    Returns the new reader, or None when ``stop`` is set first; raises
    :class:`SourceError` when ``backoff.give_up`` seconds pass without success.
    ``outage.duration`` is set to the time spent here in every case.
    """
    t0 = time.monotonic()
    last = outage.error
    for delay in backoff.delays():
        if stop.wait(delay):
            outage.duration = time.monotonic() - t0
            return None
        try:
            reader = opener()
        except PortLost as e:
            if str(e) != last:
                log.info("%s: reopen failed: %s", name, e)
                last = str(e)
            waited = time.monotonic() - t0
            if backoff.give_up is not None and waited >= backoff.give_up:
                outage.duration = waited
                raise SourceError(f"{name}: lost for {waited:.1f} s, giving up ({e})") from e
            continue
        outage.duration = time.monotonic() - t0
        return reader
    raise AssertionError("Backoff.delays() never ends")
