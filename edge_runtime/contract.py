"""The device contract, in one place: what every layer and every device agrees on.

Artifact names, the step model's tensor names, the one rounding rule, float ↔ int8
as TFLite quantizes, the step grid and the ring buffer of the last ``k`` samples.
Every package imports these from here; none defines its own copy.

The step input (``x``, ``(1, k·C)``) at local sample index ``t`` (a step runs when
``t % s == 0``) holds samples ``t − k + 1 … t``, oldest first, sample-major; the
places before sample 0 hold ``fill`` — the ``x`` zero point for int8 inputs (a
normalized 0.0, what the float model's causal padding holds), 0.0 for float inputs.

    from edge_runtime import contract as c
    xs = c.step_inputs(q, kernel=5, stride=2, fill=zp)     # (N, T, C) -> (N, S, 5·C)
    ring = c.RingBuffer(kernel=5, channels=6, fill=zp)     # the same, one sample at a time
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

__all__ = [
    "ENGINE_OUTPUTS",
    "FIRMWARE_DIR",
    "FLOAT_MODEL",
    "FLOAT_OUTPUTS",
    "MANIFEST",
    "PRUNED_MODEL",
    "REFERENCE",
    "STATE_SCALE",
    "STATE_ZERO_POINT",
    "STEP_MODEL",
    "WINDOW_MODEL",
    "X",
    "Y",
    "RingBuffer",
    "dequantize",
    "input_names",
    "last_step",
    "output_names",
    "quantize",
    "report",
    "round_half_away",
    "round_half_away_fraction",
    "round_half_away_int",
    "state_in",
    "state_names",
    "state_out",
    "step_indices",
    "step_inputs",
    "steps_per_window",
]

# --------------------------------------------------------------------------- artifacts

MANIFEST = "manifest.json"
REFERENCE = "reference.npz"  # held-out windows / series and the float window model's outputs
FLOAT_MODEL = "model_float.keras"
PRUNED_MODEL = "model_pruned.keras"
STEP_MODEL = "step_int8.tflite"  # the deployable: one GRU step, full int8
WINDOW_MODEL = "window_int8.tflite"  # optional: the unrolled window, batch 1
FLOAT_OUTPUTS = "float_outputs.npz"  # the float step chain's outputs (parity stage)
ENGINE_OUTPUTS = "engine_outputs.npz"  # the C engine's int8 outputs (engine stage)
FIRMWARE_DIR = "firmware"  # the export: engine sources, model C, build files


def report(name: str, ext: str = "json") -> str:
    """The bundle path of a stage report: ``report("parity")`` is ``reports/parity.json``."""
    return f"reports/{name}.{ext}"


# --------------------------------------------------------------------------- tensors

X = "x"  # (1, k·C) int8: the last k samples, oldest first, sample-major
Y = "y"  # (1, n_outputs): the head (probabilities, or the next sample normalized)
# Every hN_in / hN_out is int8 with scale 1/128 and zero point 0: a GRU state lies in
# (−1, 1), and equal quantization lets a device carry the state with a plain copy.
STATE_SCALE = 1.0 / 128.0
STATE_ZERO_POINT = 0


def state_in(layer: int) -> str:
    """Name of GRU layer ``layer``'s (1-based) state input: ``h1_in``."""
    return f"h{layer}_in"


def state_out(layer: int) -> str:
    """Name of GRU layer ``layer``'s (1-based) state output: ``h1_out``."""
    return f"h{layer}_out"


def state_names(n_layers: int) -> tuple[list[str], list[str]]:
    """``(["h1_in", …], ["h1_out", …])`` in layer order."""
    layers = range(1, int(n_layers) + 1)
    return [state_in(i) for i in layers], [state_out(i) for i in layers]


def input_names(n_layers: int) -> list[str]:
    """The step model's inputs in logical order: ``["x", "h1_in", …]``."""
    return [X, *state_names(n_layers)[0]]


def output_names(n_layers: int) -> list[str]:
    """The step model's outputs in logical order: ``["h1_out", …, "y"]``."""
    return [*state_names(n_layers)[1], Y]


# --------------------------------------------------------------------------- rounding


def round_half_away(x: Any) -> np.ndarray:
    """Round to the nearest integer, halves away from zero (2.5 → 3, −2.5 → −3), float64.

    TFLite's rule (``std::round``). Exact for every float64: the fractional part is
    compared with 0.5 instead of adding 0.5, which would round 0.49999999999999994 up.
    """
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    whole = np.floor(a)
    return np.copysign(whole + ((a - whole) >= 0.5), x)


def round_half_away_int(v: float) -> int:
    """:func:`round_half_away` of one Python float, as an int."""
    a = abs(float(v))
    whole = math.floor(a)
    mag = whole + (1 if a - whole >= 0.5 else 0)
    return mag if v >= 0 else -mag


def round_half_away_fraction(x: Fraction) -> int:
    """:func:`round_half_away` of an exact rational."""
    mag = math.floor(abs(x) + Fraction(1, 2))
    return mag if x >= 0 else -mag


def quantize(values: Any, scale: float, zero_point: int) -> np.ndarray:
    """Float → int8 as TFLite quantizes: ``clamp(zp + round_half_away(v / scale), −128, 127)``."""
    r = round_half_away(np.asarray(values, np.float64) / scale)
    return np.clip(r + zero_point, -128, 127).astype(np.int8)


def dequantize(q: Any, scale: float, zero_point: int) -> np.ndarray:
    """int8 → real: ``(q − zero_point) · scale`` in float64."""
    return (np.asarray(q).astype(np.float64) - zero_point) * scale


# --------------------------------------------------------------------------- step grid


def step_indices(n_samples: int, stride: int) -> np.ndarray:
    """Local sample indices ``t`` at which a step runs (``t % s == 0``) in ``n_samples``."""
    return np.arange(0, int(n_samples), int(stride))


def steps_per_window(window: int, stride: int) -> int:
    """Steps in a window of ``window`` samples."""
    return len(range(0, int(window), int(stride)))


def last_step(window: int, stride: int) -> int:
    """Local index of a window's last step, ``s · floor((T − 1) / s)``: its prediction."""
    return int(stride) * ((int(window) - 1) // int(stride))


def step_inputs(samples: Any, kernel: int, stride: int, fill: float | int) -> np.ndarray:
    """The ``x`` of every step over series ``(N, T, C)`` (or one ``(T, C)``).

    Returns ``(N, S, k·C)`` (or ``(S, k·C)``) in the samples' dtype, ``S`` =
    :func:`steps_per_window`. Step ``j`` holds samples ``j·s − k + 1 … j·s``, oldest
    first; places before sample 0 hold ``fill``.
    """
    a = np.asarray(samples)
    single = a.ndim == 2
    if single:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"step_inputs: samples must be (N, T, C) or (T, C), got {a.shape}")
    n, t, c = a.shape
    k = int(kernel)
    pad = np.full((n, k - 1, c), fill, a.dtype)
    padded = np.concatenate([pad, a], axis=1)
    idx = step_indices(t, stride)
    if not len(idx):
        out = np.zeros((n, 0, k * c), a.dtype)
    else:
        out = np.stack([padded[:, j : j + k].reshape(n, k * c) for j in idx], axis=1)
    return out[0] if single else out


class RingBuffer:
    """The last ``k`` int8 samples, as a device keeps them (reference form, one sample at a time).

    ``push(q)`` stores one sample ``(C,)`` and returns the step input ``(1, k·C)`` that
    ends with it (a copy); whether a step runs there is ``t % s == 0`` on the caller's
    local index. :func:`step_inputs` is the same over whole series; the tests hold the
    two equal, and the streaming runtime's fast path equal to both.
    """

    def __init__(self, kernel: int, channels: int, fill: int) -> None:
        self.kernel, self.channels, self.fill = int(kernel), int(channels), int(fill)
        self._rows = np.full((self.kernel, self.channels), self.fill, np.int8)

    def reset(self) -> None:
        """Back to all ``fill``: the state before a window's or a stream's first sample."""
        self._rows[...] = self.fill

    def push(self, q: Any) -> np.ndarray:
        """Append sample ``q`` (``(C,)`` int8); the step input ``(1, k·C)`` ending with it."""
        self._rows[:-1] = self._rows[1:]
        self._rows[-1] = np.asarray(q, np.int8).reshape(self.channels)
        return self._rows.reshape(1, -1).copy()
