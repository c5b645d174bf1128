"""A classifier's int8 head output -> a :class:`Result`: probabilities, class and label.

Dequantization is a table over the 256 int8 values: the same float64 operations as
``(y - zp) * scale`` on the values themselves.
"""

from __future__ import annotations

from collections import deque
from time import perf_counter

import numpy as np

from edge_runtime.interpreter import TensorSpec
from edge_runtime.stream.config import Result, StreamConfig

__all__ = ["ClassifierHead", "dequant_table"]


def dequant_table(y: TensorSpec) -> np.ndarray:
    """float64 ``(y - zp) * scale`` for every int8 value, indexed by its uint8 pattern."""
    every8 = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.float64)
    return (every8 - y.zero_point) * y.scale


class ClassifierHead:
    """Probabilities (smoothed over the last ``smooth`` Results), argmax and its label."""

    def __init__(self, cfg: StreamConfig, y: TensorSpec, mode: str, smooth: int) -> None:
        self.labels = cfg.labels
        self.mode = mode
        self.smooth = smooth
        self._deq = dequant_table(y)
        self._recent: deque[np.ndarray] = deque(maxlen=smooth)

    def reset(self) -> None:
        self._recent.clear()

    def result(self, y: np.ndarray, index: int, t0: float, start: int | None) -> Result:
        """The Result of head output ``y`` at sample ``index``; ``start``: its window's first."""
        raw = self._deq[y.reshape(-1).view(np.uint8)]
        probs = raw
        if self.smooth > 1:
            self._recent.append(raw)
            probs = np.mean(np.stack(self._recent), axis=0)
        i = int(np.argmax(probs))
        labels = self.labels
        return Result(
            sample=index,
            mode=self.mode,
            y_int8=y.reshape(-1),
            latency_us=(perf_counter() - t0) * 1e6,
            window_start=start,
            label=labels[i] if i < len(labels) else str(i),
            label_index=i,
            probabilities=probs,
            raw_probabilities=raw,
        )
