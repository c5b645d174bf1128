"""Lanes: the GRU states a stream carries, when each steps and when it answers.

A :class:`Lane` is one state: a window in flight (window-exact) or the one state of
continuous streaming. A path is the per-sample work of one mode, picked once by
:func:`edge_runtime.stream.streamer.make_path`:

- :class:`WindowLanes` (window-exact, classifiers): a lane starts every ``H``
  samples and is reset at its start; it steps at local index ``t`` with
  ``t % s == 0`` and answers at its last step ``t_last = s * floor((T - 1) / s)``,
  then its lane is free again. ``ceil(T / H)`` lanes suffice.
- :class:`ContinuousLane` (classifiers): one lane, reset only with the stream; a
  Result with the latest head output at ``t_last`` and every ``H`` samples after.
- :class:`~edge_runtime.stream.forecast.ForecastLane` (forecasters): one lane, a
  forecast at every step.

:func:`make_step` is the one place a lane's step runs the interpreter.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edge_runtime.interpreter import StepInterpreter
from edge_runtime.stream.config import Result, StreamConfig
from edge_runtime.stream.heads import ClassifierHead
from edge_runtime.stream.ring import Ring

__all__ = ["ContinuousLane", "Lane", "Path", "WindowLanes", "make_step"]


class Lane:
    """One state: a window in flight, or the continuous lane."""

    __slots__ = ("states", "start", "xpad", "y")

    def __init__(self, interp: StepInterpreter) -> None:
        self.xpad = np.empty(interp.x.shape, np.int8)  # x of the steps that reach before start
        self.states = interp.zero_states()
        self.start = 0  # its first sample (counted from the Streamer's creation)
        self.y: np.ndarray | None = None  # the head output of its latest step

    def restart(self, start: int, zero: list[np.ndarray]) -> None:
        self.states = list(zero)
        self.start = start
        self.y = None


def make_step(interp: StepInterpreter) -> Callable[[Lane, np.ndarray], np.ndarray]:
    """``step(lane, x)``: one interpreter step of ``lane`` on step input ``x``.

    The lane's states are replaced by the new ones and ``lane.y`` is set to the head
    output, which is returned (a fresh array: a Result may keep it). For an
    in-process, one-state model the interpreter's ``fast_path`` calls are made here
    directly, saving a Python call per step.
    """
    fast = interp.fast_path
    if fast is None:
        run = interp.step

        def step(lane: Lane, x: np.ndarray) -> np.ndarray:
            lane.y = y = run(x, lane.states)
            return y

        return step
    set_tensor, get_tensor, invoke, x_idx, h_in, h_out, y_idx = fast

    def step_one_state(lane: Lane, x: np.ndarray) -> np.ndarray:
        states = lane.states
        set_tensor(x_idx, x)
        set_tensor(h_in, states[0])
        invoke()
        states[0] = get_tensor(h_out)
        lane.y = y = get_tensor(y_idx)
        return y

    return step_one_state


class Path:
    """Per-sample work of one mode: the ring buffer, the lanes, the counters.

    ``sample(vals, x, t0)`` takes one sample's counts ``vals`` (list of C ints) and
    the step input ending with it, ``x = ring.push(q)``, and returns the Results it
    completes; ``t0`` is when its turn began (for ``latency_us``).
    """

    results: int  # Results since creation

    def __init__(self, cfg: StreamConfig, interp: StepInterpreter, ring: Ring) -> None:
        self.ring = ring
        self.step = make_step(interp)
        self.kernel, self.stride, self.hop = cfg.kernel, cfg.stride, cfg.hop
        self.last = cfg.last_step
        self.zero = interp.zero_states()
        self.samples = 0  # samples since creation
        self.steps = 0  # steps run since creation
        self.n = 0  # samples since reset

    def reset(self) -> None:
        """Forget every state and sample; local indices restart at the next sample."""
        self.ring.reset()
        self.n = 0

    def sample(self, vals: list[int], x: np.ndarray, t0: float) -> list[Result]:
        raise NotImplementedError


class WindowLanes(Path):
    """Window-exact: one lane per window in flight, reset at the window's start."""

    def __init__(
        self, cfg: StreamConfig, interp: StepInterpreter, ring: Ring, head: ClassifierHead
    ) -> None:
        super().__init__(cfg, interp, ring)
        self.head = head
        self._pool = [Lane(interp) for _ in range(math.ceil(cfg.window / cfg.hop))]
        self._geom = (self.step, self.stride, self.last, self.kernel - 1)
        self.results = 0
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.head.reset()
        self._active: list[Lane] = []
        self._free = list(self._pool)

    def sample(self, vals: list[int], x: np.ndarray, t0: float) -> list[Result]:
        n = self.n
        index = self.samples
        self.n = n + 1
        self.samples = index + 1
        active = self._active
        if n % self.hop == 0:
            lane = self._free.pop()
            lane.restart(index, self.zero)
            active.append(lane)
        step, stride, last, k1 = self._geom
        done = None
        for lane in active:
            t = index - lane.start
            if t % stride == 0:
                step(lane, x if t >= k1 else self.ring.since(lane.xpad, x, t))
                self.steps += 1
                if t == last:
                    done = lane
        if done is None:
            return []
        active.remove(done)
        self._free.append(done)
        self.results += 1
        return [self.head.result(done.y, index, t0, done.start)]  # type: ignore[arg-type]


class ContinuousLane(Path):
    """Continuous classification: one lane, a Result every ``H`` samples from ``t_last`` on."""

    def __init__(
        self, cfg: StreamConfig, interp: StepInterpreter, ring: Ring, head: ClassifierHead
    ) -> None:
        super().__init__(cfg, interp, ring)
        self.head = head
        self.lane = Lane(interp)
        self.results = 0
        self.reset()

    def reset(self) -> None:
        super().reset()  # the ring buffer's history is fill: no lane needs its own
        self.head.reset()
        self.lane.restart(self.samples, self.zero)

    def sample(self, vals: list[int], x: np.ndarray, t0: float) -> list[Result]:
        n = self.n
        index = self.samples
        self.n = n + 1
        self.samples = index + 1
        lane = self.lane
        if n % self.stride == 0:
            self.step(lane, x)
            self.steps += 1
        last = self.last
        if n >= last and (n - last) % self.hop == 0:
            self.results += 1
            return [self.head.result(lane.y, index, t0, None)]  # type: ignore[arg-type]
        return []
