"""The :class:`Streamer`: int16 samples in, Results out (see :mod:`edge_runtime.stream`)."""

from __future__ import annotations

from operator import getitem
from time import perf_counter

import numpy as np

from edge_runtime.bundle import Bundle
from edge_runtime.interpreter import StepInterpreter
from edge_runtime.stream.config import MODES, Result, StreamConfig, input_quant
from edge_runtime.stream.forecast import ForecastLane
from edge_runtime.stream.heads import ClassifierHead
from edge_runtime.stream.lanes import ContinuousLane, Path, WindowLanes
from edge_runtime.stream.ring import InputTables, Ring, make_ring

__all__ = ["Streamer", "make_path"]

_INT16 = np.dtype(np.int16)
_NDARRAY = np.ndarray


def make_path(
    cfg: StreamConfig, interp: StepInterpreter, ring: Ring, mode: str, smooth: int
) -> Path:
    """The per-sample path of ``mode`` for this bundle, chosen once."""
    if not cfg.classify:
        return ForecastLane(cfg, interp, ring)
    head = ClassifierHead(cfg, interp.y, mode, smooth)
    if mode == "window-exact":
        return WindowLanes(cfg, interp, ring, head)
    return ContinuousLane(cfg, interp, ring, head)


class Streamer:
    """Stream int16 samples through the bundle's int8 step model (see :mod:`edge_runtime.stream`).

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
        self.cfg = cfg = StreamConfig.from_manifest(m, hop)
        self.classify = cfg.classify
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
        self.iq = input_quant(m, cfg, self.interp)
        self._shape = (cfg.channels,)
        self.tables = InputTables(self.iq)
        # One sample's int8 input from the tables (one bytes table per channel).
        self._tabs = self.tables.tabs
        self._tab1 = self._tabs[0] if len(self._tabs) == 1 else None
        self.ring = make_ring(cfg.kernel, cfg.channels, cfg.fill)
        self._input = self.ring.push  # int8 input -> the step input ending with it
        self._path = make_path(cfg, self.interp, self.ring, mode, self.smooth)
        self._sample = self._path.sample

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every state, window and buffered sample; the window grid restarts here."""
        self._path.reset()

    @property
    def samples(self) -> int:
        """Samples pushed since creation."""
        return self._path.samples

    @property
    def steps(self) -> int:
        """Steps run since creation."""
        return self._path.steps

    @property
    def results(self) -> int:
        """Results emitted since creation."""
        return self._path.results

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
        return self.tables.quantize(counts)

    def _check(self, counts: np.ndarray, what: str = "push") -> np.ndarray:
        """``counts`` as int16 ``(C,)`` (``push``) or ``(n, C)`` (``push_many``), or ValueError."""
        c = np.asarray(counts)
        C = self.cfg.channels
        if what == "push" and c.shape != (C,):
            raise ValueError(f"push: expected {C} channel counts, found shape {c.shape}")
        if what == "push_many" and (c.ndim != 2 or c.shape[1] != C):
            raise ValueError(f"push_many: expected (n, {C}) channel counts, found shape {c.shape}")
        if c.dtype != np.int16:
            if not np.issubdtype(c.dtype, np.integer):
                raise ValueError(f"{what}: counts must be integers, found {c.dtype}")
            if c.size and (c.min() < -32768 or c.max() > 32767):
                raise ValueError(f"{what}: counts outside the int16 range")
        return c.astype(np.int16, copy=False)

    # ------------------------------------------------------------------ stepping

    def push(self, counts: np.ndarray) -> list[Result]:
        """Feed one sample (int16 counts, one per channel); returns the Results it completes.

        ``latency_us`` of a Result counts from the start of this call.
        """
        t0 = perf_counter()
        if (
            type(counts) is not _NDARRAY
            or counts.dtype is not _INT16
            or counts.shape != self._shape
        ):
            counts = self._check(counts)
        vals = counts.tolist()
        tab1 = self._tab1
        if tab1 is not None:
            q: bytes | int = tab1[vals[0]]
        elif self._tabs:
            q = bytes(map(getitem, self._tabs, vals))
        else:
            q = self.tables.one(vals)
        return self._sample(vals, self._input(q), t0)

    def push_many(self, counts: np.ndarray) -> list[Result]:
        """Feed samples ``(n, C)`` in order; returns every Result.

        The chunk is checked at once, and with several channels quantized at once;
        each Result's ``latency_us`` counts from the start of its sample's turn
        (steps and Result).
        """
        c = self._check(counts, "push_many")
        if not len(c):
            return []
        sample, step_input = self._sample, self._input
        out: list[Result] = []
        tab1 = self._tab1
        if tab1 is not None:  # one channel: its table costs less than quantizing the chunk
            for v in c.tolist():
                r = sample(v, step_input(tab1[v[0]]), perf_counter())
                if r:
                    out += r
            return out
        q = self.tables.chunk(c)
        C = self.cfg.channels
        for i, v in enumerate(c.tolist()):
            r = sample(v, step_input(q[i * C : i * C + C]), perf_counter())
            if r:
                out += r
        return out
