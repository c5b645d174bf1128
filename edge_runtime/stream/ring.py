"""The step input, sample by sample: int16 counts -> int8 (tabulated) -> the ring buffer.

The layout is the device contract's (:mod:`edge_runtime.contract`): the step input
at a sample holds the last ``k`` samples, oldest first, sample-major, and before
the first sample the buffer holds ``fill`` (the ``x`` zero point).
:class:`contract.RingBuffer` and :func:`contract.step_inputs` are the reference
forms; the tests hold these equal to them.

Per sample the work is plain Python on small integers: the input contract is a
bytes table per channel (every int16 count), the ring buffer a bytearray whose
step inputs are numpy views of its bytes.
"""

from __future__ import annotations

from operator import getitem

import numpy as np

from edge_runtime.preprocess import InputQuant, quantize_counts

__all__ = [
    "MAX_TABLE_CHANNELS",
    "RING_ROWS",
    "InputTables",
    "OneByteRing",
    "Ring",
    "StepRing",
    "make_ring",
]

# Channels up to which the int16 -> int8 input is tabulated (64 KiB per channel).
MAX_TABLE_CHANNELS = 64
# Samples the ring buffer holds beyond the kernel's k - 1 before it moves its tail.
RING_ROWS = 4096

# One sample's int8 input: bytes (C values), or one int when C = 1.
SampleInput = bytes | int


def _uint16_table(col: np.ndarray) -> bytes:
    """``col[count + 32768]`` (int8) re-indexed by the count's uint16 pattern, as bytes.

    Python indexing then takes the int16 count itself: ``table[-1]`` is ``table[65535]``.
    """
    return np.concatenate([col[32768:], col[:32768]]).view(np.uint8).tobytes()


class InputTables:
    """The device input contract (``preprocess.quantize_counts``) over every int16 count.

    A numpy table ``(65536, C)`` for chunks and one bytes table per channel for
    single samples, up to :data:`MAX_TABLE_CHANNELS` channels; beyond that the
    formula itself.
    """

    def __init__(self, iq: InputQuant) -> None:
        self.iq = iq
        C = iq.channels
        self._cols = np.arange(C)
        self.table: np.ndarray | None = None
        self.tabs: list[bytes] = []
        if C <= MAX_TABLE_CHANNELS:
            every = np.arange(-32768, 32768, dtype=np.int16)
            grid = np.repeat(every[:, None], C, axis=1)
            self.table = np.ascontiguousarray(quantize_counts(grid, iq))
            self.tabs = [_uint16_table(self.table[:, c]) for c in range(C)]

    def quantize(self, counts: np.ndarray) -> np.ndarray:
        """int16 counts ``(..., C)`` -> the int8 model input."""
        if self.table is not None:
            idx = np.asarray(counts, np.int32) + 32768
            return self.table[idx, self._cols]
        return quantize_counts(np.asarray(counts, np.int16), self.iq)

    def chunk(self, counts: np.ndarray) -> bytes:
        """int16 counts ``(n, C)`` -> their int8 inputs, sample-major bytes."""
        return self.quantize(counts).tobytes()

    def one(self, vals: list[int]) -> SampleInput:
        """One sample's counts (a list of C ints) -> its int8 input: one int when C = 1.

        (:meth:`Streamer.push <edge_runtime.stream.Streamer.push>` writes the table
        lookups out itself: a call less per sample.)
        """
        tabs = self.tabs
        if not tabs:
            return quantize_counts(np.array(vals, np.int16), self.iq).tobytes()
        if len(tabs) == 1:
            return tabs[0][vals[0]]
        return bytes(map(getitem, tabs, vals))


class StepRing:
    """The last ``k`` int8 samples in a bytearray; each step input a (1, k*C) view of it.

    ``k - 1`` rows of history then ``rows`` rows written in turn; when they are
    used up the last ``k - 1`` move to the front. ``push(q)`` writes one sample
    and returns the step input that ends with it (valid until the next push).
    """

    def __init__(self, kernel: int, channels: int, fill: int, rows: int | None = None) -> None:
        k, C = int(kernel), int(channels)
        self.kernel, self.channels, self.fill = k, C, int(fill)
        self.rows = RING_ROWS if rows is None else int(rows)
        self._end = k - 1 + self.rows  # rows in the buffer
        self._buf = bytearray(self._end * C)
        # views[i] is the step input made of rows i .. i+k-1.
        self._views = np.lib.stride_tricks.as_strided(
            np.frombuffer(self._buf, np.int8),
            shape=(self.rows, 1, k * C),
            strides=(C, k * C, 1),
            writeable=False,
        )
        self._keep = (k - 1) * C  # bytes of history moved to the front
        self._fill_bytes = np.full(self._keep, self.fill, np.int8).tobytes()
        self._w = k - 1  # next row to write
        self.reset()

    def reset(self) -> None:
        """Every earlier sample forgotten: the history is ``fill``."""
        self._buf[: self._keep] = self._fill_bytes
        self._w = self.kernel - 1

    def push(self, q: SampleInput) -> np.ndarray:
        """Write one sample's int8 input; the step input ``(1, k*C)`` that ends with it."""
        w = self._w
        buf = self._buf
        if w == self._end:
            keep = self._keep
            if keep:
                buf[:keep] = buf[len(buf) - keep :]
            w = self.kernel - 1
        C = self.channels
        if C == 1:
            buf[w] = q  # type: ignore[call-overload]
        else:
            buf[w * C : w * C + C] = q  # type: ignore[index]
        self._w = w + 1
        return self._views[w - self.kernel + 1]

    def since(self, out: np.ndarray, x: np.ndarray, t: int) -> np.ndarray:
        """``x`` seen from a window that began ``t < k - 1`` samples ago: earlier places ``fill``.

        Written into ``out`` ``(1, k*C)`` int8, which is returned.
        """
        out[...] = x
        out[0, : (self.kernel - 1 - t) * self.channels] = self.fill
        return out


class OneByteRing(list):  # type: ignore[type-arg]
    """:class:`StepRing` for ``k = 1`` and one channel: the 256 possible step inputs.

    ``push(q)`` is ``self[q]`` (``q`` the input byte as the tables give it, 0..255),
    a C call: there is no history to keep.
    """

    kernel = 1
    channels = 1
    push = list.__getitem__

    def __init__(self, fill: int) -> None:
        # Read-only: the interpreter only copies from them.
        super().__init__(np.full((1, 1), v, np.uint8).view(np.int8) for v in range(256))
        for a in self:
            a.flags.writeable = False
        self.fill = int(fill)

    def reset(self) -> None:
        """Nothing to forget: no history."""


Ring = StepRing | OneByteRing


def make_ring(kernel: int, channels: int, fill: int) -> Ring:
    """The ring buffer for ``k`` and ``C``."""
    if kernel == 1 and channels == 1:
        return OneByteRing(fill)
    return StepRing(kernel, channels, fill)
