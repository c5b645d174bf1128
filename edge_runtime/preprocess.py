"""The preprocessing contract, shared by training and the device.

A sensor delivers int16 *counts*; channel ``c`` has a scale ``scale_c`` (physical
units per count). Everything downstream starts from counts:

    physical value   x = count * scale_c
    normalized       u = (x - mean_c) / std_c                      (float model input)
    int8 input       q = clamp(zp + rhaz(u / s_in), -128, 127)     (int8 model input)

``s_in`` and ``zp`` are the scale and zero point of the int8 model's input tensor.

The integer formula (device input contract)
-------------------------------------------
The device computes ``q`` from a count with integers only:

    v = (int64) count * M_c + B_c
    q = clamp(zp + rhaz(v / 2^S), -128, 127)
    rhaz(v / 2^S) = sign(v) * ((|v| + 2^(S-1)) >> S)

``rhaz`` rounds half away from zero (TFLite's convention): 2.5 -> 3, -2.5 -> -3.
numpy's ``round`` rounds half to even and is never used for this. In C::

    int64_t v = (int64_t)count * (int64_t)M[c] + B[c];
    int64_t r = (v >= 0) ? ((v + half) >> S) : -((-v + half) >> S);   /* half = 1 << (S-1) */
    int64_t q = zp + r;
    q = q < -128 ? -128 : (q > 127 ? 127 : q);

The constants are derived from ``scale_c, mean_c, std_c, s_in`` (see
:meth:`InputQuant.derive`):

    M_c = rhaz(scale_c / (std_c * s_in) * 2^S)      int32, |M_c| <= 2^31 - 1
    B_c = rhaz(-mean_c / (std_c * s_in) * 2^S)      int64

computed exactly (rational arithmetic on the float64 inputs). One shift ``S`` is
shared by all channels: it is the largest S in [1, 62] for which every ``M_c``
fits int32 and ``|count * M_c + B_c| + 2^(S-1)`` cannot overflow int64 for any
int16 count. A single S keeps the C loop and the manifest simple and costs
nothing that matters: the error of the integer form against the exact real
value is at most ``2^15 * 0.5 / 2^S + 0.5 / 2^S`` (rounding of M_c and B_c),
which depends only on S, and S is set by the channel with the largest ratio
``scale_c / (std_c * s_in)``: about ``2^-16 * max_c ratio_c`` input steps, far
below one. The result can differ from the float formula only when the exact
value lies within that distance of a rounding boundary (``k + 0.5``); the
tests count such cases on every int16 count of realistic channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from edge_runtime.contract import round_half_away, round_half_away_fraction

INT16_MIN = -32768
INT16_MAX = 32767
INT32_MAX = 2**31 - 1
MAX_SHIFT = 62
MIN_SHIFT = 1

__all__ = [
    "InputQuant",
    "fit_normalization",
    "normalize",
    "quantize_counts",
    "quantize_float_reference",
    "round_half_away",
    "to_physical",
    "windows",
]


# --------------------------------------------------------------------------- windows


def windows(
    counts: np.ndarray, labels: np.ndarray | None, length: int, hop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut a recording into windows of ``length`` samples starting at 0, hop, 2*hop, ...

    ``counts`` is ``(n, C)``; ``labels`` is ``(n,)`` per-sample integer labels
    (``-1`` = unlabelled or dropped) or ``None``. With labels, only windows in
    which every sample carries the same label ``>= 0`` are kept; with ``None``
    all windows are kept and their label is ``-1``.

    Returns ``(starts (N,) int64, X (N, length, C) same dtype as counts, y (N,) int64)``.
    """
    counts = np.asarray(counts)
    if counts.ndim != 2:
        raise ValueError(f"windows: counts must be (n, C), got shape {counts.shape}")
    length = int(length)
    hop = int(hop)
    if length < 1 or hop < 1:
        raise ValueError(f"windows: length and hop must be >= 1, got {length}, {hop}")
    n, n_channels = counts.shape
    starts = np.arange(0, max(n - length + 1, 0), hop, dtype=np.int64)

    if labels is None:
        y = np.full(starts.shape, -1, dtype=np.int64)
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"windows: labels must have shape ({n},), got {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"windows: labels must be integers, got {labels.dtype}")
        if starts.size:
            lab = np.lib.stride_tricks.sliding_window_view(labels, length)[starts]
            first = lab[:, 0]
            pure = (first >= 0) & np.all(lab == first[:, None], axis=1)
            starts = starts[pure]
            y = first[pure].astype(np.int64)
        else:
            y = np.zeros(0, dtype=np.int64)

    if starts.size:
        x = np.lib.stride_tricks.sliding_window_view(counts, length, axis=0)[starts]
        x = np.ascontiguousarray(np.swapaxes(x, 1, 2))
    else:
        x = np.zeros((0, length, n_channels), dtype=counts.dtype)
    return starts, x, y


# --------------------------------------------------------------------------- float path


def _channel_vector(value: Any, n_channels: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n_channels, float(arr))
    if arr.shape != (n_channels,):
        raise ValueError(f"{what} must be a scalar or have shape ({n_channels},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be finite, got {arr.tolist()}")
    return arr


def to_physical(counts: np.ndarray, scale: Any) -> np.ndarray:
    """Counts ``(..., C)`` to physical units: ``counts * scale_c``, as float32."""
    counts = np.asarray(counts)
    scale_c = _channel_vector(scale, counts.shape[-1], "scale")
    return (counts.astype(np.float64) * scale_c).astype(np.float32)


def fit_normalization(
    counts: np.ndarray | Sequence[np.ndarray],
    scale: Any,
    *,
    min_std: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the physical values.

    ``counts`` is one array ``(..., C)`` or a sequence of such arrays (e.g. the
    training recordings); all samples count equally. Accumulates in float64 in
    two passes (mean, then squared deviations). The population standard
    deviation is floored at ``min_std`` (default: one count, ``scale_c``) so a
    constant channel never divides by zero.

    Returns ``(mean (C,), std (C,))`` as float64.
    """
    parts = [np.asarray(counts)] if isinstance(counts, np.ndarray) else list(counts)
    parts = [np.asarray(p) for p in parts]
    if not parts:
        raise ValueError("fit_normalization: no data")
    n_channels = parts[0].shape[-1]
    for p in parts:
        if p.ndim < 1 or p.shape[-1] != n_channels:
            raise ValueError(
                f"fit_normalization: every array must end in {n_channels} channels, got {p.shape}"
            )
    scale_c = _channel_vector(scale, n_channels, "scale")
    n_total = sum(int(p.size // n_channels) for p in parts)
    if n_total == 0:
        raise ValueError("fit_normalization: no samples")

    total = np.zeros(n_channels, dtype=np.float64)
    for p in parts:
        total += (p.reshape(-1, n_channels).astype(np.float64) * scale_c).sum(axis=0)
    mean = total / n_total
    sq = np.zeros(n_channels, dtype=np.float64)
    for p in parts:
        d = p.reshape(-1, n_channels).astype(np.float64) * scale_c - mean
        sq += np.einsum("ij,ij->j", d, d)
    std = np.sqrt(sq / n_total)
    floor = np.abs(scale_c) if min_std is None else _channel_vector(min_std, n_channels, "min_std")
    std = np.maximum(std, floor)
    if not np.all(std > 0):
        raise ValueError(f"fit_normalization: std must be > 0, got {std.tolist()}")
    return mean, std


def normalize(counts: np.ndarray, scale: Any, mean: Any, std: Any) -> np.ndarray:
    """The float model's input: ``(counts * scale_c - mean_c) / std_c`` as float32."""
    counts = np.asarray(counts)
    n_channels = counts.shape[-1]
    scale_c = _channel_vector(scale, n_channels, "scale")
    mean_c = _channel_vector(mean, n_channels, "mean")
    std_c = _channel_vector(std, n_channels, "std")
    return ((counts.astype(np.float64) * scale_c - mean_c) / std_c).astype(np.float32)


def quantize_float_reference(
    counts: np.ndarray, scale: Any, mean: Any, std: Any, s_in: float, zero_point: int
) -> np.ndarray:
    """The int8 input computed in float64: ``clamp(zp + rhaz((count*scale - mean)/std / s_in))``.

    The yardstick for :func:`quantize_counts`; not used on the device.
    """
    counts = np.asarray(counts)
    n_channels = counts.shape[-1]
    scale_c = _channel_vector(scale, n_channels, "scale")
    mean_c = _channel_vector(mean, n_channels, "mean")
    std_c = _channel_vector(std, n_channels, "std")
    u = (counts.astype(np.float64) * scale_c - mean_c) / std_c / float(s_in)
    q = int(zero_point) + round_half_away(u)
    return np.clip(q, -128, 127).astype(np.int8)


# --------------------------------------------------------------------------- integer path


@dataclass(eq=False)
class InputQuant:
    """Constants of the integer input formula (see the module docstring).

    ``multiplier`` (C,) int32 = M_c, ``bias`` (C,) int64 = B_c, ``shift`` = S
    (one for all channels), ``zero_point`` = zp and ``scale`` = s_in of the
    int8 model input. Stored in the manifest as ``preprocess.input_quant``.
    """

    multiplier: np.ndarray
    bias: np.ndarray
    shift: int
    zero_point: int
    scale: float

    def __post_init__(self) -> None:
        mult = np.asarray(self.multiplier)
        bias = np.asarray(self.bias)
        if mult.ndim != 1 or mult.size == 0 or bias.shape != mult.shape:
            raise ValueError(
                f"InputQuant: multiplier and bias must be equal-length vectors, "
                f"got {mult.shape} and {bias.shape}"
            )
        if not (np.issubdtype(mult.dtype, np.integer) and np.issubdtype(bias.dtype, np.integer)):
            raise ValueError("InputQuant: multiplier and bias must be integers")
        if np.any(np.abs(mult.astype(np.int64)) > INT32_MAX):
            raise ValueError(f"InputQuant: multiplier must fit int32, got {mult.tolist()}")
        self.multiplier = mult.astype(np.int32)
        self.bias = bias.astype(np.int64)
        self.shift = int(self.shift)
        self.zero_point = int(self.zero_point)
        self.scale = float(self.scale)
        if not MIN_SHIFT <= self.shift <= MAX_SHIFT:
            raise ValueError(f"InputQuant: shift must be in [{MIN_SHIFT}, {MAX_SHIFT}]")
        if not -128 <= self.zero_point <= 127:
            raise ValueError(
                f"InputQuant: zero_point must be in [-128, 127], got {self.zero_point}"
            )
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"InputQuant: scale must be finite and > 0, got {self.scale}")
        if not _fits_int64(self.multiplier, self.bias, self.shift):
            raise ValueError("InputQuant: count * multiplier + bias could overflow int64")

    @property
    def channels(self) -> int:
        return int(self.multiplier.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InputQuant):
            return NotImplemented
        return (
            np.array_equal(self.multiplier, other.multiplier)
            and np.array_equal(self.bias, other.bias)
            and self.shift == other.shift
            and self.zero_point == other.zero_point
            and self.scale == other.scale
        )

    @classmethod
    def derive(
        cls, scale_c: Any, mean_c: Any, std_c: Any, s_in: float, zero_point: int
    ) -> InputQuant:
        """Constants for channels with ``scale_c``, ``mean_c``, ``std_c`` and input ``s_in``, ``zp``.

        Picks the largest shared shift S in [1, 62] that keeps every M_c in
        int32 and the int64 accumulation free of overflow (module docstring).
        """
        n_channels = max(np.size(scale_c), np.size(mean_c), np.size(std_c))
        scale = _channel_vector(scale_c, n_channels, "scale")
        mean = _channel_vector(mean_c, n_channels, "mean")
        std = _channel_vector(std_c, n_channels, "std")
        s_in = float(s_in)
        if not np.all(std > 0):
            raise ValueError(f"InputQuant.derive: std must be > 0, got {std.tolist()}")
        if not np.all(scale != 0):
            raise ValueError(f"InputQuant.derive: scale must be non-zero, got {scale.tolist()}")
        if not (math.isfinite(s_in) and s_in > 0):
            raise ValueError(f"InputQuant.derive: s_in must be finite and > 0, got {s_in}")

        fs_in = Fraction(s_in)
        ratio = [
            Fraction(float(s)) / (Fraction(float(d)) * fs_in)
            for s, d in zip(scale, std, strict=True)
        ]
        offset = [
            -Fraction(float(m)) / (Fraction(float(d)) * fs_in)
            for m, d in zip(mean, std, strict=True)
        ]
        for shift in range(MAX_SHIFT, MIN_SHIFT - 1, -1):
            mult = [round_half_away_fraction(r * 2**shift) for r in ratio]
            if max(abs(m) for m in mult) > INT32_MAX:
                continue
            bias = [round_half_away_fraction(o * 2**shift) for o in offset]
            if not _fits_int64_py(mult, bias, shift):
                continue
            return cls(
                multiplier=np.array(mult, dtype=np.int32),
                bias=np.array(bias, dtype=np.int64),
                shift=shift,
                zero_point=zero_point,
                scale=s_in,
            )
        raise ValueError(
            "InputQuant.derive: no shift in [1, 62] represents these channels "
            f"(scale / (std * s_in) = {[float(r) for r in ratio]}, "
            f"mean / (std * s_in) = {[float(-o) for o in offset]})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``preprocess.input_quant`` (plain JSON types)."""
        return {
            "scale": self.scale,
            "zero_point": self.zero_point,
            "multiplier": [int(m) for m in self.multiplier],
            "bias": [int(b) for b in self.bias],
            "shift": self.shift,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputQuant:
        """Inverse of :meth:`to_dict`."""
        try:
            mult = [int(m) for m in d["multiplier"]]
            bias = [int(b) for b in d["bias"]]
            if any(abs(b) >= 2**63 for b in bias):
                raise ValueError("bias must fit int64")
            return cls(
                multiplier=np.array(mult, dtype=np.int64),
                bias=np.array(bias, dtype=np.int64),
                shift=int(d["shift"]),
                zero_point=int(d["zero_point"]),
                scale=float(d["scale"]),
            )
        except KeyError as e:
            raise ValueError(f"input_quant: missing field {e.args[0]!r}") from None
        except (TypeError, OverflowError) as e:
            raise ValueError(f"input_quant: {e}") from None


def _fits_int64_py(mult: Sequence[int], bias: Sequence[int], shift: int) -> bool:
    worst = 2**15 * max(abs(m) for m in mult) + max(abs(b) for b in bias) + 2 ** (shift - 1)
    return worst < 2**63


def _fits_int64(mult: np.ndarray, bias: np.ndarray, shift: int) -> bool:
    return _fits_int64_py([int(m) for m in mult], [int(b) for b in bias], shift)


def quantize_counts(counts: np.ndarray, iq: InputQuant) -> np.ndarray:
    """int16 counts ``(..., C)`` to the int8 model input, in int64 integer arithmetic only.

    ``q = clamp(zp + rhaz((count * M_c + B_c) / 2^S), -128, 127)``, halves away
    from zero; bit-identical to the C engine.
    """
    counts = np.asarray(counts)
    if not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"quantize_counts: counts must be integers, got {counts.dtype}")
    if counts.ndim < 1 or counts.shape[-1] != iq.channels:
        raise ValueError(
            f"quantize_counts: counts must end in {iq.channels} channels, got {counts.shape}"
        )
    if counts.dtype != np.int16 and counts.size:
        lo, hi = int(counts.min()), int(counts.max())
        if lo < INT16_MIN or hi > INT16_MAX:
            raise ValueError(f"quantize_counts: counts outside int16 range: [{lo}, {hi}]")
    v = counts.astype(np.int64) * iq.multiplier.astype(np.int64) + iq.bias
    half = np.int64(1) << np.int64(iq.shift - 1)
    mag = (np.abs(v) + half) >> np.int64(iq.shift)
    r = np.where(v >= 0, mag, -mag)
    return np.clip(r + iq.zero_point, -128, 127).astype(np.int8)
