"""Streaming inference: int16 samples in, predictions out, one int8 GRU step at a time.

::

    from edge_runtime.api import Streamer, open_bundle

    s = Streamer(open_bundle("build/har"))             # window-exact for a classifier
    for counts in sensor:                               # int16 (C,) per sample
        for r in s.push(counts):
            print(r.sample, r.label, r.probabilities)

Each sample is turned into the model's int8 input by the device input contract
(``edge_runtime.preprocess.quantize_counts`` with ``preprocess.input_quant``,
tabulated once over all int16 counts). A step runs at local sample index ``t``
with ``t % s == 0`` over the last ``k`` samples, oldest first, sample-major;
before the first sample the ring buffer holds the ``x`` zero point
(``quantization.step.ring_buffer.fill``).

Modes
-----
``window-exact`` (classifiers; the default for them). Windows of ``T`` samples
start every ``H`` samples (``preprocess.window`` / ``preprocess.hop``, counted
from the first sample after creation or :meth:`Streamer.reset`). Every window
in flight has its own ring buffer and state, reset at its start, so a window's
prediction equals, bit for bit, what the offline int8 step chain gives for
that window from a zero state (``reference.npz`` holds such windows). The
Result is emitted at the window's last step, local index
``t_last = s * floor((T - 1) / s)``; samples after it do not influence the
prediction. With ``H = T / 2`` two windows are in flight.

``continuous``. One state and one ring buffer, never reset except by
:meth:`Streamer.reset` (a :class:`~edge_runtime.sources.Gap`). A classifier
emits a Result at the same sample indices as window-exact mode (every ``H``
samples from ``t_last`` on), carrying the head output of the latest step; its
agreement with window-exact is measured (tests, ``tinygru-edge check``), not
assumed. A forecaster (the default and only mode for it) emits a Result at
every step: the forecast of the next sample in sensor units and the score of
the current sample, ``|x_t - forecast_{t-1}|`` summed over channels (``None``
when the previous sample ran no step or at the first sample), flagged as an
anomaly above ``thresholds.anomaly_score`` except during the first
``thresholds.anomaly_warmup_samples`` samples after a reset.

Smoothing (``smooth=N``, classifiers): ``probabilities`` is the mean of the
last N dequantized head outputs of the mode's Results and ``label`` its
argmax; ``raw_probabilities`` keeps the unsmoothed values.

``latency_us`` is the wall time from the start of the :meth:`Streamer.push`
call that produced a Result to the Result: quantization, the ring buffer and
every step that sample ran.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime.bundle import Bundle
from edge_runtime.interpreter import InterpreterError, StepInterpreter
from edge_runtime.preprocess import InputQuant, quantize_counts

__all__ = ["MODES", "Result", "StreamConfig", "Streamer"]

MODES = ("window-exact", "continuous")
# Channels up to which the int16 -> int8 input is tabulated (64 KiB per channel).
MAX_TABLE_CHANNELS = 64


@dataclass
class Result:
    """One prediction. Classifier fields or forecaster fields are set, the others are None."""

    sample: int  # index of the sample that produced it (counted from the Streamer's creation)
    mode: str
    y_int8: np.ndarray  # the head's raw int8 output, (n_outputs,)
    latency_us: float
    window_start: int | None = None  # window-exact: the window's first sample
    label: str | None = None
    label_index: int | None = None
    probabilities: np.ndarray | None = None  # smoothed when smoothing is on
    raw_probabilities: np.ndarray | None = None
    forecast: np.ndarray | None = None  # sensor units, the prediction of sample + 1
    score: float | None = None
    anomaly: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, labels: list[str] | None = None) -> dict[str, Any]:
        """JSON-ready fields (None values left out)."""
        d: dict[str, Any] = {"sample": self.sample, "mode": self.mode}
        if self.window_start is not None:
            d["window_start"] = self.window_start
        if self.label is not None:
            d["label"] = self.label
            d["label_index"] = self.label_index
        if self.probabilities is not None:
            probs = [round(float(p), 6) for p in self.probabilities]
            d["probabilities"] = dict(zip(labels, probs, strict=True)) if labels else probs
        if self.forecast is not None:
            d["forecast"] = [float(v) for v in self.forecast]
            d["score"] = None if self.score is None else float(self.score)
            d["anomaly"] = bool(self.anomaly)
        d["y_int8"] = [int(v) for v in self.y_int8]
        d["latency_us"] = round(self.latency_us, 1)
        d.update(self.extra)
        return d


@dataclass(frozen=True)
class StreamConfig:
    """What streaming needs from the manifest."""

    task: str
    labels: list[str]
    channels: int
    kernel: int  # k
    stride: int  # s
    window: int  # T
    hop: int  # H
    fill: int
    scale_c: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    anomaly_threshold: float | None
    warmup: int

    @property
    def steps_per_window(self) -> int:
        return len(range(0, self.window, self.stride))

    @property
    def last_step(self) -> int:
        return self.stride * ((self.window - 1) // self.stride)

    @classmethod
    def from_manifest(cls, m: dict[str, Any], hop: int | None = None) -> StreamConfig:
        try:
            mc = m["model"]["config"]
            pre = m["preprocess"]
            ring = m["quantization"]["step"]["ring_buffer"]
            th = m.get("thresholds") or {}
            thr = th.get("anomaly_score")
            cfg = cls(
                task=str(m["task"]),
                labels=[str(v) for v in m.get("labels", [])],
                channels=int(mc["n_channels"]),
                kernel=int(mc.get("front_end_kernel", 1)),
                stride=int(mc.get("front_end_stride", 1)),
                window=int(pre["window"]),
                hop=int(hop if hop is not None else pre["hop"]),
                fill=int(ring["fill"]),
                scale_c=np.array([float(c["scale"]) for c in m["dataset"]["channels"]]),
                mean=np.asarray(pre["mean"], np.float64),
                std=np.asarray(pre["std"], np.float64),
                anomaly_threshold=None if thr is None else float(thr),
                warmup=int(th.get("anomaly_warmup_samples", 0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InterpreterError(
                f"manifest: cannot stream this bundle ({type(e).__name__}: {e}); "
                "run `python -m quantize int8` first"
            ) from None
        if min(cfg.kernel, cfg.stride, cfg.window, cfg.hop, cfg.channels) < 1:
            raise InterpreterError(f"manifest: invalid streaming parameters {cfg}")
        if len(cfg.scale_c) != cfg.channels:
            raise InterpreterError(
                f"manifest: {len(cfg.scale_c)} dataset channels, model expects {cfg.channels}"
            )
        return cfg


class _Lane:
    """One state (and its view of the ring buffer): a window in flight, or the continuous lane."""

    __slots__ = ("states", "start", "x", "y")

    def __init__(self, interp: StepInterpreter, start: int) -> None:
        self.x = np.empty(interp.x.shape, np.int8)
        self.states = interp.zero_states()
        self.start = start
        self.y: np.ndarray | None = None


class Streamer:
    """Stream int16 samples through the bundle's int8 step model (see the module doc).

    ``mode``: ``"window-exact"`` or ``"continuous"``; None picks window-exact for
    a classifier and continuous for a forecaster. ``backend``: see
    :mod:`edge_runtime.interpreter`. ``smooth``: average the last N
    probabilities (classifiers). ``hop`` overrides ``preprocess.hop`` (e.g.
    ``hop=T`` for back-to-back windows).
    """

    def __init__(
        self,
        bundle: Bundle,
        mode: str | None = None,
        *,
        backend: str = "litert",
        smooth: int = 1,
        hop: int | None = None,
        num_threads: int | None = None,
        interpreter: StepInterpreter | None = None,
    ) -> None:
        m = bundle.manifest
        self.cfg = StreamConfig.from_manifest(m, hop)
        self.classify = self.cfg.task == "classification"
        if mode is None:
            mode = "window-exact" if self.classify else "continuous"
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, found {mode!r}")
        if mode == "window-exact" and not self.classify:
            raise ValueError(
                "mode 'window-exact' is for classifiers; a forecaster streams continuously "
                "(one state, a forecast every step)"
            )
        if smooth < 1:
            raise ValueError(f"smooth: expected >= 1, found {smooth}")
        self.mode = mode
        self.smooth = int(smooth)
        self.interp = interpreter or StepInterpreter.from_bundle(
            bundle, backend=backend, num_threads=num_threads
        )
        cfg = self.cfg
        width = self.interp.x.width
        if width != cfg.kernel * cfg.channels:
            raise InterpreterError(
                f"step_int8.tflite: x has {width} values, manifest model.config says "
                f"k*C = {cfg.kernel}*{cfg.channels}"
            )
        if self.interp.x.zero_point != cfg.fill:
            raise InterpreterError(
                f"manifest: ring_buffer.fill {cfg.fill} is not the x zero point "
                f"{self.interp.x.zero_point}"
            )
        try:
            self.iq = InputQuant.from_dict(m["preprocess"]["input_quant"])
        except (KeyError, ValueError) as e:
            raise InterpreterError(f"manifest preprocess.input_quant: {e}") from None
        if self.iq.channels != cfg.channels:
            raise InterpreterError(
                f"manifest preprocess.input_quant has {self.iq.channels} channels, "
                f"model expects {cfg.channels}"
            )
        if (self.iq.scale, self.iq.zero_point) != (self.interp.x.scale, self.interp.x.zero_point):
            if not math.isclose(self.iq.scale, self.interp.x.scale, rel_tol=1e-6) or (
                self.iq.zero_point != self.interp.x.zero_point
            ):
                raise InterpreterError(
                    "manifest preprocess.input_quant does not match step_int8.tflite's x input: "
                    "rerun `python -m quantize int8`"
                )
        self._table: np.ndarray | None = None
        if cfg.channels <= MAX_TABLE_CHANNELS:
            every = np.arange(-32768, 32768, dtype=np.int16)
            grid = np.repeat(every[:, None], cfg.channels, axis=1)
            self._table = np.ascontiguousarray(quantize_counts(grid, self.iq))
            self._cols = np.arange(cfg.channels)
        self._zero = self.interp.zero_states()
        y = self.interp.y
        self._y_scale = y.scale
        self._y_zp = y.zero_point
        n_lanes = math.ceil(cfg.window / cfg.hop) if mode == "window-exact" else 1
        self._pool = [_Lane(self.interp, 0) for _ in range(n_lanes)]
        self._ring = np.empty(cfg.kernel * cfg.channels, np.int8)
        self._recent: deque[np.ndarray] = deque(maxlen=self.smooth)
        self.samples = 0  # samples pushed since creation
        self.steps = 0  # steps run since creation
        self.results = 0
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every state, window and buffered sample; the window grid restarts here."""
        self._ring.fill(self.cfg.fill)
        self._active: list[_Lane] = []
        self._free = list(self._pool)
        self._n = 0  # samples since reset
        self._prev_forecast: np.ndarray | None = None
        self._recent.clear()
        if self.mode == "continuous":
            lane = self._free.pop()
            self._restart(lane, self.samples)
            self._active.append(lane)

    def _restart(self, lane: _Lane, start: int) -> None:
        lane.states = list(self._zero)
        lane.start = start
        lane.y = None

    @property
    def labels(self) -> list[str]:
        return self.cfg.labels

    # ------------------------------------------------------------------ input

    def quantize(self, counts: np.ndarray) -> np.ndarray:
        """int16 counts ``(C,)`` -> the int8 model input ``(C,)`` (device input contract)."""
        if self._table is not None:
            idx = np.asarray(counts, np.int32) + 32768
            return self._table[idx, self._cols]
        return quantize_counts(np.asarray(counts, np.int16), self.iq)

    def _check(self, counts: np.ndarray) -> np.ndarray:
        c = np.asarray(counts)
        if c.shape != (self.cfg.channels,):
            raise ValueError(
                f"push: expected {self.cfg.channels} channel counts, found shape {c.shape}"
            )
        if c.dtype != np.int16:
            if not np.issubdtype(c.dtype, np.integer):
                raise ValueError(f"push: counts must be integers, found {c.dtype}")
            if c.min() < -32768 or c.max() > 32767:
                raise ValueError("push: counts outside the int16 range")
        return c

    # ------------------------------------------------------------------ stepping

    def push(self, counts: np.ndarray) -> list[Result]:
        """Feed one sample (int16 counts, one per channel); returns the Results it completes."""
        t0 = time.perf_counter()
        q = self.quantize(self._check(counts))
        cfg = self.cfg
        ring = self._ring
        C = cfg.channels
        if cfg.kernel > 1:
            ring[:-C] = ring[C:]
        ring[-C:] = q
        n = self._n
        index = self.samples
        out: list[Result] = []
        if self.mode == "window-exact":
            if n % cfg.hop == 0:
                lane = self._free.pop()
                self._restart(lane, index)
                self._active.append(lane)
            done = None
            for lane in self._active:
                t = index - lane.start
                if t % cfg.stride == 0:
                    self._step(lane, t)
                    if t == cfg.last_step:
                        done = lane
            if done is not None:
                self._active.remove(done)
                self._free.append(done)
                assert done.y is not None
                out.append(self._classify(done.y, index, t0, done.start))
        else:
            lane = self._active[0]
            if n % cfg.stride == 0:
                self._step(lane, n)
                if not self.classify:
                    assert lane.y is not None
                    out.append(self._forecast(lane.y, counts, n, index, t0))
            elif not self.classify:
                self._prev_forecast = None
            if self.classify and n >= cfg.last_step and (n - cfg.last_step) % cfg.hop == 0:
                assert lane.y is not None
                out.append(self._classify(lane.y, index, t0, None))
        self._n = n + 1
        self.samples = index + 1
        self.results += len(out)
        return out

    def _step(self, lane: _Lane, t: int) -> None:
        x = lane.x
        x[0] = self._ring
        k = self.cfg.kernel
        if t < k - 1:
            x[0, : (k - 1 - t) * self.cfg.channels] = self.cfg.fill
        lane.states, y = self.interp.run(x, lane.states)
        lane.y = y
        self.steps += 1

    def _dequant(self, y: np.ndarray) -> np.ndarray:
        return (y.reshape(-1).astype(np.float64) - self._y_zp) * self._y_scale

    def _classify(self, y: np.ndarray, index: int, t0: float, start: int | None) -> Result:
        raw = self._dequant(y)
        probs = raw
        if self.smooth > 1:
            self._recent.append(raw)
            probs = np.mean(np.stack(self._recent), axis=0)
        i = int(np.argmax(probs))
        labels = self.cfg.labels
        return Result(
            sample=index,
            mode=self.mode,
            y_int8=y.reshape(-1).copy(),
            latency_us=(time.perf_counter() - t0) * 1e6,
            window_start=start,
            label=labels[i] if i < len(labels) else str(i),
            label_index=i,
            probabilities=probs,
            raw_probabilities=raw,
        )

    def _forecast(self, y: np.ndarray, counts: np.ndarray, n: int, index: int, t0: float) -> Result:
        cfg = self.cfg
        forecast = self._dequant(y) * cfg.std + cfg.mean
        x_phys = np.asarray(counts, np.float64) * cfg.scale_c
        score: float | None = None
        if self._prev_forecast is not None:
            score = float(np.abs(x_phys - self._prev_forecast).sum())
        self._prev_forecast = forecast
        flag = (
            score is not None
            and cfg.anomaly_threshold is not None
            and n >= cfg.warmup
            and score > cfg.anomaly_threshold
        )
        return Result(
            sample=index,
            mode=self.mode,
            y_int8=y.reshape(-1).copy(),
            latency_us=(time.perf_counter() - t0) * 1e6,
            forecast=forecast,
            score=score,
            anomaly=bool(flag),
        )

    def push_many(self, counts: np.ndarray) -> list[Result]:
        """Feed samples ``(n, C)`` in order; returns every Result."""
        out: list[Result] = []
        for row in np.asarray(counts):
            out.extend(self.push(row))
        return out
