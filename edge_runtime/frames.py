"""Binary sensor frames: encoder, CRC and a resynchronizing decoder.

One frame carries ``S`` consecutive samples of ``C`` int16 channels
(docs/protocol-serial.md has the full specification)::

    offset  size     field
    0       2        sync        0xA5 0x5A
    2       1        version     1
    3       1        channels    C, 1..255
    4       1        samples     S, 1..255
    5       2        seq         uint16 LE: sequence number of the frame's first sample
    7       2        length      uint16 LE: payload bytes, must equal 2*C*S (at most 4096)
    9       2*C*S    payload     int16 LE, sample-major: s0c0 s0c1 ... s1c0 ...
    9+2CS   2        crc         uint16 LE: CRC-16/CCITT-FALSE over bytes 0 .. 8+2CS

Sample ``i`` of a frame has sequence number ``(seq + i) mod 2^16``; the next
frame's ``seq`` is expected to be ``(seq + S) mod 2^16``.

CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection,
final XOR 0; the check value of ASCII ``"123456789"`` is 0x29B1.

:class:`FrameDecoder` never raises on input bytes: bytes before a sync, a
malformed header, a bad CRC or a frame cut short become :class:`DecodedBad`
items, and decoding resumes at the next sync pattern. A frame cut short is
detected when the bytes that follow it fail the CRC (or, at the end of the
stream, by :meth:`FrameDecoder.flush`).
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "HEADER",
    "MAX_PAYLOAD",
    "SYNC",
    "VERSION",
    "DecodedBad",
    "DecodedFrame",
    "FrameDecoder",
    "crc16_ccitt_false",
    "encode_frame",
    "encode_frames",
]

SYNC = b"\xa5\x5a"
VERSION = 1
HEADER = struct.Struct("<2sBBBHH")  # sync, version, channels, samples, seq, length
CRC = struct.Struct("<H")
MAX_PAYLOAD = 4096
MAX_SAMPLES = 255
SEQ_MOD = 1 << 16


def crc16_ccitt_false(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0).

    ``crc`` continues a CRC over earlier bytes: ``crc16(b, crc16(a)) == crc16(a + b)``.
    """
    return binascii.crc_hqx(bytes(data), crc)


def encode_frame(counts: np.ndarray, seq: int) -> bytes:
    """One frame of ``counts`` (S, C) int16 whose first sample has sequence number ``seq``."""
    a = np.asarray(counts)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"counts must be (S, C) with S, C >= 1, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"counts must be integers, got {a.dtype}")
    if a.size and (a.min() < -32768 or a.max() > 32767):
        raise ValueError("counts outside int16")
    n_samples, n_channels = a.shape
    if n_channels > 255 or n_samples > MAX_SAMPLES:
        raise ValueError(f"at most 255 channels and {MAX_SAMPLES} samples per frame")
    payload = a.astype("<i2").tobytes()
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    head = HEADER.pack(SYNC, VERSION, n_channels, n_samples, seq % SEQ_MOD, len(payload))
    body = head + payload
    return body + CRC.pack(crc16_ccitt_false(body))


def encode_frames(counts: np.ndarray, *, seq: int = 0, per_frame: int = 1) -> Iterator[bytes]:
    """Frames of ``per_frame`` samples each (the last may be shorter), numbered from ``seq``."""
    a = np.asarray(counts)
    if per_frame < 1:
        raise ValueError("per_frame must be >= 1")
    for i in range(0, a.shape[0], per_frame):
        yield encode_frame(a[i : i + per_frame], seq + i)


@dataclass
class DecodedFrame:
    seq: int
    counts: np.ndarray  # (S, C) int16


@dataclass
class DecodedBad:
    reason: str


class FrameDecoder:
    """Bytes in, frames and rejections out; keeps partial frames between calls.

    ``channels`` (when given) is the only channel count accepted; frames with
    another count are rejected whole (their length is known, so they are skipped
    without losing sync).
    """

    def __init__(self, channels: int | None = None) -> None:
        self.channels = channels
        self._buf = bytearray()
        self._skipped = 0

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    def flush(self, where: str = "at end of stream") -> list[DecodedBad]:
        """Drop whatever is held back: a truncated frame or garbage, reported once."""
        out = self._report_skipped()
        if self._buf:
            what = "truncated frame" if self._buf.startswith(SYNC) else "garbage"
            out.append(DecodedBad(f"{what}: {len(self._buf)} bytes {where}"))
            self._buf.clear()
        return out

    def _report_skipped(self) -> list[DecodedBad]:
        if not self._skipped:
            return []
        n, self._skipped = self._skipped, 0
        return [DecodedBad(f"skipped {n} bytes before sync")]

    def feed(self, data: bytes | bytearray | memoryview) -> list[DecodedFrame | DecodedBad]:
        buf = self._buf
        buf += data
        out: list[DecodedFrame | DecodedBad] = []
        pos = 0
        while True:
            i = buf.find(SYNC, pos)
            if i < 0:
                # keep a trailing first sync byte: it may start the next frame
                keep = 1 if buf.endswith(SYNC[:1]) else 0
                self._skipped += len(buf) - pos - keep
                pos = len(buf) - keep
                break
            self._skipped += i - pos
            pos = i
            if len(buf) - pos < HEADER.size:
                break
            _, version, n_ch, n_s, seq, length = HEADER.unpack_from(buf, pos)
            problem = None
            if version != VERSION:
                problem = f"unknown frame version {version}"
            elif n_ch == 0 or n_s == 0:
                problem = f"empty frame ({n_ch} channels, {n_s} samples)"
            elif length != 2 * n_ch * n_s or length > MAX_PAYLOAD:
                problem = f"frame length {length} does not match {n_ch} channels x {n_s} samples"
            if problem is None:
                end = pos + HEADER.size + length + CRC.size
                if len(buf) < end:
                    break
                (crc,) = CRC.unpack_from(buf, end - CRC.size)
                if crc16_ccitt_false(memoryview(buf)[pos : end - CRC.size]) != crc:
                    problem = f"bad CRC (frame seq {seq}, or a frame cut short)"
            out += self._report_skipped()
            if problem is not None:
                out.append(DecodedBad(problem))
                pos += 1  # resynchronize: look for the next sync after this one
                continue
            if self.channels is not None and n_ch != self.channels:
                out.append(DecodedBad(f"frame has {n_ch} channels, expected {self.channels}"))
            else:
                start = pos + HEADER.size
                counts = np.frombuffer(bytes(buf[start : start + length]), dtype="<i2")
                out.append(DecodedFrame(seq, counts.reshape(n_s, n_ch).astype(np.int16)))
            pos = end
        del buf[:pos]
        return out
