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
every step that sample ran. :meth:`Streamer.push_many` checks and quantizes a
whole chunk at once; there it counts from the start of the sample's turn.

Per sample the work is plain Python on small integers: the input contract is a
bytes table per channel (every int16 count), the ring buffer a bytearray whose
step inputs are numpy views, the forecast a table over the int8 head outputs.
The step itself is ``set_tensor`` + ``invoke`` + ``get_tensor``
(:meth:`edge_runtime.interpreter.StepInterpreter.step`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from operator import getitem
from time import perf_counter
from typing import Any

import numpy as np

from edge_runtime.bundle import Bundle
from edge_runtime.interpreter import InterpreterError, StepInterpreter
from edge_runtime.preprocess import InputQuant, quantize_counts

__all__ = ["MODES", "Result", "StreamConfig", "Streamer"]

MODES = ("window-exact", "continuous")
# Channels up to which the int16 -> int8 input is tabulated (64 KiB per channel).
MAX_TABLE_CHANNELS = 64
# Samples the ring buffer holds beyond the kernel's k - 1 before it moves its tail.
RING_ROWS = 4096
_INT16 = np.dtype(np.int16)
_NDARRAY = np.ndarray


@dataclass(slots=True)
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
    """One state: a window in flight, or the continuous lane."""

    __slots__ = ("states", "start", "xpad", "y")

    def __init__(self, interp: StepInterpreter, start: int) -> None:
        self.xpad = np.empty(interp.x.shape, np.int8)  # x of the steps that reach before start
        self.states = interp.zero_states()
        self.start = start
        self.y: np.ndarray | None = None


def _uint16_table(col: np.ndarray) -> bytes:
    """``col[count + 32768]`` (int8) re-indexed by the count's uint16 pattern, as bytes.

    Python indexing then takes the int16 count itself: ``table[-1]`` is ``table[65535]``.
    """
    return np.concatenate([col[32768:], col[:32768]]).view(np.uint8).tobytes()


class Streamer:
    """Stream int16 samples through the bundle's int8 step model (see the module doc).

    ``mode``: ``"window-exact"`` or ``"continuous"``; None picks window-exact for
    a classifier and continuous for a forecaster. ``backend``: see
    :mod:`edge_runtime.interpreter`. ``smooth``: average the last N
    probabilities (classifiers). ``hop`` overrides ``preprocess.hop`` (e.g.
    ``hop=T`` for back-to-back windows). ``interpreter_python``: run the step
    model in a worker process under that Python (see :mod:`edge_runtime.worker`).
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
        interpreter_python: str | None = None,
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
            bundle, backend=backend, num_threads=num_threads, python=interpreter_python
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
        k, C = cfg.kernel, cfg.channels
        self._shape = (C,)
        self._cols = np.arange(C)
        # The input contract tabulated over every int16 count: a numpy table for
        # chunks and one bytes table per channel for single samples.
        self._table: np.ndarray | None = None
        self._tabs: list[bytes] = []
        if C <= MAX_TABLE_CHANNELS:
            every = np.arange(-32768, 32768, dtype=np.int16)
            grid = np.repeat(every[:, None], C, axis=1)
            self._table = np.ascontiguousarray(quantize_counts(grid, self.iq))
            self._tabs = [_uint16_table(self._table[:, c]) for c in range(C)]
        # Ring buffer: k - 1 rows of history then RING_ROWS rows written in turn
        # (the last k - 1 move to the front when it is full). ``_win[i]`` is the
        # (1, k*C) step input made of rows i .. i+k-1, a view of the same bytes.
        self._rows = k - 1 + RING_ROWS
        self._rb = bytearray(self._rows * C)
        self._win = np.lib.stride_tricks.as_strided(
            np.frombuffer(self._rb, np.int8),
            shape=(RING_ROWS, 1, k * C),
            strides=(C, k * C, 1),
            writeable=False,
        )
        self._fill_bytes = np.full((k - 1) * C, cfg.fill, np.int8).tobytes()
        self._zero = self.interp.zero_states()
        y = self.interp.y
        self._y_scale = y.scale
        self._y_zp = y.zero_point
        # Dequantized head outputs for every int8 value, indexed by its uint8 pattern;
        # the same float64 operations as (y - zp) * scale on the values themselves.
        every8 = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.float64)
        self._deq = (every8 - self._y_zp) * self._y_scale
        self._fc: list[list[float]] | None = None
        n_out = y.width
        if not self.classify and cfg.mean.shape == cfg.std.shape == (n_out,) == (C,):
            fc = self._deq[:, None] * cfg.std + cfg.mean  # (256, n_out)
            self._fc = [fc[:, j].tolist() for j in range(n_out)]
        self._scale_list = [float(v) for v in cfg.scale_c]
        n_lanes = math.ceil(cfg.window / cfg.hop) if mode == "window-exact" else 1
        self._pool = [_Lane(self.interp, 0) for _ in range(n_lanes)]
        self._recent: deque[np.ndarray] = deque(maxlen=self.smooth)
        self._step_fn = self.interp.step
        self._exact = mode == "window-exact"
        self._geom = (k, C, cfg.stride, cfg.hop, cfg.last_step)
        self._threshold = cfg.anomaly_threshold
        self._warmup = cfg.warmup
        self._xq: list[np.ndarray] | None = None
        self._univariate = False
        self._fast = getattr(self.interp, "fast_path", None)
        if self._fc is not None and C <= 2:
            self._advance = self._advance_forecast  # type: ignore[method-assign]
            if k == 1 and C == 1:
                # Read-only: the interpreter only copies from them.
                self._xq = [np.full((1, 1), v, np.uint8).view(np.int8) for v in range(256)]
                for a in self._xq:
                    a.flags.writeable = False
                if cfg.stride == 1:
                    self.push = self._push_univariate  # type: ignore[method-assign]
                    self._univariate = True
                    self._tab0, self._fc0 = self._tabs[0], self._fc[0]
                    self._scale0 = self._scale_list[0]
        self.samples = 0  # samples pushed since creation
        self.steps = 0  # steps run since creation
        self.results = 0
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every state, window and buffered sample; the window grid restarts here."""
        keep = len(self._fill_bytes)
        self._rb[:keep] = self._fill_bytes
        self._w = self.cfg.kernel - 1  # next ring row to write
        self._active: list[_Lane] = []
        self._free = list(self._pool)
        self._n = 0  # samples since reset
        self._prev_forecast: list[float] | np.ndarray | None = None
        self._recent.clear()
        if self.mode == "continuous":
            lane = self._free.pop()
            self._restart(lane, self.samples)
            self._active.append(lane)
            self._lane = lane

    def _restart(self, lane: _Lane, start: int) -> None:
        lane.states = list(self._zero)
        lane.start = start
        lane.y = None

    @property
    def labels(self) -> list[str]:
        return self.cfg.labels

    def close(self) -> None:
        """Stop the step interpreter's worker process, if it has one."""
        close = getattr(self.interp, "close", None)
        if close is not None:
            close()

    # ------------------------------------------------------------------ input

    def quantize(self, counts: np.ndarray) -> np.ndarray:
        """int16 counts ``(..., C)`` -> the int8 model input (device input contract)."""
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
        return c.astype(np.int16, copy=False)

    def _check_many(self, counts: np.ndarray) -> np.ndarray:
        c = np.asarray(counts)
        C = self.cfg.channels
        if c.ndim != 2 or c.shape[1] != C:
            raise ValueError(f"push_many: expected (n, {C}) channel counts, found shape {c.shape}")
        if c.dtype != np.int16:
            if not np.issubdtype(c.dtype, np.integer):
                raise ValueError(f"push_many: counts must be integers, found {c.dtype}")
            if c.size and (c.min() < -32768 or c.max() > 32767):
                raise ValueError("push_many: counts outside the int16 range")
        return c.astype(np.int16, copy=False)

    # ------------------------------------------------------------------ stepping

    def push(self, counts: np.ndarray) -> list[Result]:
        """Feed one sample (int16 counts, one per channel); returns the Results it completes."""
        t0 = perf_counter()
        if type(counts) is np.ndarray and counts.dtype is _INT16 and counts.shape == self._shape:
            c = counts
        else:
            c = self._check(counts)
        vals = c.tolist()
        tabs = self._tabs
        if not tabs:
            q: bytes | int = quantize_counts(c, self.iq).tobytes()
        elif len(tabs) == 1:
            q = tabs[0][vals[0]]
        else:
            q = bytes(map(getitem, tabs, vals))
        return self._advance(vals, q, t0)

    def push_many(self, counts: np.ndarray) -> list[Result]:
        """Feed samples ``(n, C)`` in order; returns every Result.

        The chunk is checked and quantized at once; each Result's ``latency_us``
        counts from the start of its sample's turn (steps and Result).
        """
        c = self._check_many(counts)
        if not len(c):
            return []
        out: list[Result] = []
        if self._univariate:  # the whole step input is tabulated: nothing to share
            one = self._univariate_sample
            for v in c.reshape(-1).tolist():
                out += one(v, perf_counter())
            return out
        q = self.quantize(c).tobytes()
        vals = c.tolist()
        C = self.cfg.channels
        advance = self._advance
        if C == 1:
            for i, v in enumerate(vals):
                r = advance(v, q[i], perf_counter())
                if r:
                    out.extend(r)
        else:
            for i, v in enumerate(vals):
                r = advance(v, q[i * C : i * C + C], perf_counter())
                if r:
                    out.extend(r)
        return out

    def _advance(self, vals: list[int], q: bytes | int, t0: float) -> list[Result]:
        """One sample: ``vals`` its counts, ``q`` its int8 input (bytes, or one int when C = 1)."""
        k, C, stride, hop, last = self._geom
        w = self._w
        rb = self._rb
        if w == self._rows:
            keep = len(self._fill_bytes)
            if keep:
                rb[:keep] = rb[len(rb) - keep :]
            w = k - 1
        if C == 1:
            rb[w] = q  # type: ignore[call-overload]
        else:
            rb[w * C : w * C + C] = q  # type: ignore[index]
        self._w = w + 1
        x = self._win[w - k + 1]
        n = self._n
        index = self.samples
        self._n = n + 1
        self.samples = index + 1
        step = self._step_fn
        if self._exact:
            active = self._active
            if n % hop == 0:
                lane = self._free.pop()
                self._restart(lane, index)
                active.append(lane)
            done = None
            fast = self._fast
            for lane in active:
                t = index - lane.start
                if t % stride == 0:
                    xt = x if t >= k - 1 else self._pad(lane, x, t)
                    if fast is None:
                        lane.y = step(xt, lane.states)
                    else:  # StepInterpreter.step of an in-process, one-state model, inline
                        set_tensor, get_tensor, invoke, x_idx, h_in, h_out, y_idx = fast
                        states = lane.states
                        set_tensor(x_idx, xt)
                        set_tensor(h_in, states[0])
                        invoke()
                        states[0] = get_tensor(h_out)
                        lane.y = get_tensor(y_idx)
                    self.steps += 1
                    if t == last:
                        done = lane
            if done is None:
                return []
            active.remove(done)
            self._free.append(done)
            self.results += 1
            return [self._classify(done.y, index, t0, done.start)]  # type: ignore[arg-type]
        lane = self._active[0]
        if n % stride == 0:
            lane.y = y = step(x if n >= k - 1 else self._pad(lane, x, n), lane.states)
            self.steps += 1
            if not self.classify:
                self.results += 1
                return [self._forecast(y, vals, n, index, t0)]
        elif not self.classify:
            self._prev_forecast = None
        if self.classify and n >= last and (n - last) % hop == 0:
            self.results += 1
            return [self._classify(lane.y, index, t0, None)]  # type: ignore[arg-type]
        return []

    def _advance_forecast(self, vals: list[int], q: bytes | int, t0: float) -> list[Result]:
        """:meth:`_advance` for a forecaster of one or two channels, its forecasts tabulated."""
        xq = self._xq
        if xq is not None:
            # k = 1, one channel: no history, the step input is one of 256 arrays.
            x = xq[q]  # type: ignore[index]
        else:
            k, C = self._geom[:2]
            w = self._w
            rb = self._rb
            if w == self._rows:
                keep = len(self._fill_bytes)
                if keep:
                    rb[:keep] = rb[len(rb) - keep :]
                w = k - 1
            if C == 1:
                rb[w] = q  # type: ignore[call-overload]
            else:
                rb[w * C : w * C + C] = q  # type: ignore[index]
            self._w = w + 1
            # One lane, reset with the ring buffer: the rows before the first sample are fill.
            x = self._win[w - k + 1]
        n = self._n
        index = self.samples
        self._n = n + 1
        self.samples = index + 1
        if n % self.cfg.stride:
            self._prev_forecast = None
            return []
        lane = self._lane
        fast = self._fast
        if fast is None:
            lane.y = y = self._step_fn(x, lane.states)
        else:  # StepInterpreter.step of an in-process, one-state model, inline
            set_tensor, get_tensor, invoke, x_idx, h_in, h_out, y_idx = fast
            states = lane.states
            set_tensor(x_idx, x)
            set_tensor(h_in, states[0])
            invoke()
            states[0] = get_tensor(h_out)
            lane.y = y = get_tensor(y_idx)
        self.steps += 1
        self.results += 1
        # y is the interpreter's fresh copy of the head output: the Result keeps it.
        y1 = y[0]
        fct = self._fc
        sc = self._scale_list
        prev = self._prev_forecast
        score: float | None = None
        # Python floats: the same IEEE operations as the numpy form in _forecast, and
        # with at most two terms the order of the sum cannot matter.
        if len(fct) == 1:  # type: ignore[arg-type]
            fc = [fct[0][y1.item()]]  # type: ignore[index]
            if prev is not None:
                score = abs(vals[0] * sc[0] - prev[0])
        else:
            a, b = y1.tolist()
            fc = [fct[0][a], fct[1][b]]  # type: ignore[index]
            if prev is not None:
                score = abs(vals[0] * sc[0] - prev[0]) + abs(vals[1] * sc[1] - prev[1])
        self._prev_forecast = fc
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
                np.array(fc),
                score,
                score is not None and thr is not None and n >= self._warmup and score > thr,
            )
        ]

    def _push_univariate(self, counts: np.ndarray) -> list[Result]:
        """:meth:`push` of a one-channel forecaster with k = s = 1."""
        t0 = perf_counter()
        if type(counts) is not _NDARRAY or counts.dtype is not _INT16 or counts.shape != (1,):
            counts = self._check(counts)
        return self._univariate_sample(counts.item(), t0)

    def _univariate_sample(self, v: int, t0: float) -> list[Result]:
        """One count ``v`` of a one-channel forecaster with k = s = 1, all in one place."""
        # The per-step paths (_advance, _advance_forecast, this) repeat the ring-buffer
        # write, the inline interpreter step and the forecast Result on purpose: each is
        # a Python call per sample when shared. Measured (CPU time per push, best of 80
        # alternating rounds of 4096 samples, build/anomaly and build/har, two runs):
        # a shared Result helper cost 44 and 77 ns per push here (0.6-1.0 %), a shared
        # step helper 12 and 49 ns in _advance.
        x = self._xq[self._tab0[v]]  # type: ignore[index]
        n = self._n
        index = self.samples
        self._n = n + 1
        self.samples = index + 1
        states = self._lane.states
        fast = self._fast
        if fast is None:
            y = self._step_fn(x, states)
        else:
            set_tensor, get_tensor, invoke, x_idx, h_in, h_out, y_idx = fast
            set_tensor(x_idx, x)
            set_tensor(h_in, states[0])
            invoke()
            states[0] = get_tensor(h_out)
            y = get_tensor(y_idx)
        self.steps += 1
        self.results += 1
        y1 = y[0]
        fc = [self._fc0[y1.item()]]
        prev = self._prev_forecast
        score = None if prev is None else abs(v * self._scale0 - prev[0])
        self._prev_forecast = fc
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
                np.array(fc),
                score,
                score is not None and thr is not None and n >= self._warmup and score > thr,
            )
        ]

    def _pad(self, lane: _Lane, x: np.ndarray, t: int) -> np.ndarray:
        """The step input at local index ``t < k - 1``: the samples before the start are fill."""
        xp = lane.xpad
        xp[...] = x
        xp[0, : (self.cfg.kernel - 1 - t) * self.cfg.channels] = self.cfg.fill
        return xp

    def _dequant(self, y: np.ndarray) -> np.ndarray:
        return self._deq[y.reshape(-1).view(np.uint8)]

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
            y_int8=y.reshape(-1),
            latency_us=(perf_counter() - t0) * 1e6,
            window_start=start,
            label=labels[i] if i < len(labels) else str(i),
            label_index=i,
            probabilities=probs,
            raw_probabilities=raw,
        )

    def _forecast(self, y: np.ndarray, vals: list[int], n: int, index: int, t0: float) -> Result:
        # y is the interpreter's fresh copy of the head output: the Result keeps it.
        cfg = self.cfg
        forecast = self._dequant(y) * cfg.std + cfg.mean
        prev = self._prev_forecast
        score: float | None = None
        if prev is not None:
            x_phys = np.asarray(vals, np.float64) * cfg.scale_c
            score = float(np.abs(x_phys - prev).sum())
        self._prev_forecast = forecast
        thr = cfg.anomaly_threshold
        return Result(
            index,
            self.mode,
            y[0],
            (perf_counter() - t0) * 1e6,
            forecast=forecast,
            score=score,
            anomaly=score is not None and thr is not None and n >= cfg.warmup and score > thr,
        )
