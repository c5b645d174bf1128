"""A forecaster's stream: one lane, a step every ``s`` samples, a forecast Result at each.

The Result carries the forecast of the next sample in sensor units
(``dequantize(y) * std + mean``) and the score of the current sample,
``sum_c |x_c - forecast_prev_c|`` (``x = count * scale``), None at the first
sample and after a sample without a step; it is an anomaly above
``thresholds.anomaly_score`` from sample ``thresholds.anomaly_warmup_samples``
(after a reset) on.

With one or two channels the forecast is a Python float table over the 256 int8
head outputs: the same IEEE operations as the numpy form, and with at most two
terms the order of the sum cannot matter. This is the whole per-sample work of a
forecaster (k = s = 1 for KDD-TSAD), so it is written out here rather than split
into calls: each Python call costs tens of ns against a step of a few µs.
"""

from __future__ import annotations

from time import perf_counter

import numpy as np

from edge_runtime.interpreter import StepInterpreter
from edge_runtime.stream.config import Result, StreamConfig
from edge_runtime.stream.heads import dequant_table
from edge_runtime.stream.lanes import Lane, Path
from edge_runtime.stream.ring import Ring

__all__ = ["ForecastLane"]


class ForecastLane(Path):
    """Continuous forecasting: one lane, a Result at every step."""

    def __init__(self, cfg: StreamConfig, interp: StepInterpreter, ring: Ring) -> None:
        super().__init__(cfg, interp, ring)
        self.lane = Lane(interp)
        self._mean, self._std, self._scale_c = cfg.mean, cfg.std, cfg.scale_c
        self._deq = dequant_table(interp.y)
        self._threshold = cfg.anomaly_threshold
        self._warmup = cfg.warmup
        self._scale = [float(v) for v in cfg.scale_c]
        # Forecast tables of one or two channels (list per channel, indexed by the int8 value).
        self._fc: list[list[float]] | None = None
        C = cfg.channels
        if C <= 2 and cfg.mean.shape == cfg.std.shape == (interp.y.width,) == (C,):
            fc = self._deq[:, None] * cfg.std + cfg.mean  # (256, C)
            self._fc = [fc[:, j].tolist() for j in range(C)]
        # One channel: the forecast as a float and as the array a Result gets a copy of
        # (copying an array is about half the time of building one from a list).
        self._fc1 = self._fc[0] if self._fc is not None and C == 1 else None
        self._fc1_arrays = [np.array([v]) for v in self._fc1 or ()]
        self.prev: float | list[float] | np.ndarray | None = None  # the latest forecast
        self.reset()

    @property
    def results(self) -> int:
        """A forecaster answers at every step."""
        return self.steps

    def reset(self) -> None:
        super().reset()
        self.prev = None
        self.lane.restart(self.samples, self.zero)

    def sample(self, vals: list[int], x: np.ndarray, t0: float) -> list[Result]:
        n = self.n
        index = self.samples
        self.n = n + 1
        self.samples = index + 1
        if n % self.stride:
            self.prev = None
            return []
        y = self.step(self.lane, x)
        self.steps += 1
        # y is the interpreter's fresh copy of the head output: the Result keeps it.
        y1 = y[0]
        prev = self.prev
        score: float | None = None
        fc1 = self._fc1
        if fc1 is not None:
            v = y1.item()
            if prev is not None:
                score = abs(vals[0] * self._scale[0] - prev)  # type: ignore[operator]
            self.prev = fc1[v]
            forecast = self._fc1_arrays[v].copy()
        elif self._fc is not None:
            fct, sc = self._fc, self._scale
            a, b = y1.tolist()
            fc = [fct[0][a], fct[1][b]]
            if prev is not None:
                score = abs(vals[0] * sc[0] - prev[0]) + abs(vals[1] * sc[1] - prev[1])  # type: ignore[index]
            self.prev = fc
            forecast = np.array(fc)
        else:
            forecast = self._deq[y1.view(np.uint8)] * self._std + self._mean
            if prev is not None:
                x_phys = np.asarray(vals, np.float64) * self._scale_c
                score = float(np.abs(x_phys - prev).sum())
            self.prev = forecast
        thr = self._threshold
        return [
            Result(
                index,
                "continuous",
                y1,
                (perf_counter() - t0) * 1e6,
                None,
                None,
                None,
                None,
                None,
                forecast,
                score,
                score is not None and thr is not None and n >= self._warmup and score > thr,
            )
        ]
