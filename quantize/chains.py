"""The step chain over reference series: in float (Keras) and in int8 on every backend
(:class:`edge_runtime.interpreter.StepInterpreter`), and two int8 chains compared.

Classification runs each window from a zero state; a forecaster runs its whole
test series as one series with one state.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge_runtime import contract
from edge_runtime.interpreter import StepInterpreter

BACKENDS = ("litert", "litert_xnnpack", "tflm")


# --------------------------------------------------------------------------- int8 chains


class _Bar:
    """A tqdm bar over windows, or over steps when there is one long series."""

    def __init__(self, n_windows: int, n_steps: int, desc: str, enabled: bool) -> None:
        from tqdm import tqdm

        self.per_step = n_windows == 1
        total = n_steps if self.per_step else n_windows
        unit = "step" if self.per_step else "window"
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, mininterval=0.5)

    def step(self) -> None:
        if self.per_step:
            self.bar.update(1)

    def window(self) -> None:
        if not self.per_step:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_chains(
    tflite_bytes: bytes,
    step: dict[str, Any],
    xs: np.ndarray,
    backends: tuple[str, ...] = BACKENDS,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every backend's int8 chain over step inputs ``xs (N, S, k·C)``, zero state per series.

    ``step`` is the manifest's ``quantization.step``. Also runs every non-TFLM backend
    on TFLM's own inputs of every step (``cross``). Returns ``{"chains": {backend:
    {out_name: (N, S, width)}}, "cross": {backend: {...}}, "seconds": {...},
    "us_per_step": {...}}``.
    """
    xs = np.ascontiguousarray(xs, np.int8)
    n, s, _ = xs.shape
    runners = {b: StepInterpreter(tflite_bytes, step, backend=b) for b in backends}
    first = runners[backends[0]]
    widths = {nm: first.outputs[nm].width for nm in [*first.state_out, contract.Y]}

    def empty() -> dict[str, np.ndarray]:
        return {nm: np.empty((n, s, width), np.int8) for nm, width in widths.items()}

    chains = {b: empty() for b in backends}
    cross_names = [b for b in backends if b != "tflm"] if "tflm" in backends else []
    cross = {b: empty() for b in cross_names}
    seconds = dict.fromkeys([*backends, *(f"{b}_on_tflm_inputs" for b in cross_names)], 0.0)
    bar = _Bar(n, s, "parity " + "+".join(backends), progress)
    for w in range(n):
        for b, r in runners.items():
            t0 = time.perf_counter()
            _own_chain(r, xs[w], chains[b], w, bar if b == backends[-1] else None)
            seconds[b] += time.perf_counter() - t0
        for b in cross_names:
            t0 = time.perf_counter()
            _cross_chain(runners[b], xs[w], cross[b], chains["tflm"], w)
            seconds[f"{b}_on_tflm_inputs"] += time.perf_counter() - t0
        bar.window()
    bar.close()
    for r in runners.values():
        r.close()
    steps = max(1, n * s)
    return {
        "chains": chains,
        "cross": cross,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "us_per_step": {k: round(v / steps * 1e6, 1) for k, v in seconds.items()},
    }


def _record(
    rec: dict[str, np.ndarray], w: int, j: int, r: StepInterpreter, states: list, y: np.ndarray
) -> None:
    """Store step ``j`` of series ``w``: the new states and the head output."""
    for nm, v in zip(r.state_out, states, strict=True):
        rec[nm][w, j] = v.reshape(-1)
    rec[contract.Y][w, j] = y.reshape(-1)


def _own_chain(
    r: StepInterpreter, xs: np.ndarray, rec: dict[str, np.ndarray], w: int, bar: _Bar | None
) -> None:
    """One series ``xs (S, k·C)`` from a zero state, the state carried by ``r`` itself."""
    states = r.zero_states()
    for j in range(len(xs)):
        _record(rec, w, j, r, states, r.step(xs[j : j + 1], states))
        if bar is not None:
            bar.step()


def _cross_chain(
    r: StepInterpreter,
    xs: np.ndarray,
    rec: dict[str, np.ndarray],
    tflm: dict[str, np.ndarray],
    w: int,
) -> None:
    """One series, every step run on TFLM's own state inputs of that step."""
    for j in range(len(xs)):
        states = (
            r.zero_states() if j == 0 else [tflm[nm][w, j - 1 : j].copy() for nm in r.state_out]
        )
        _record(rec, w, j, r, states, r.step(xs[j : j + 1], states))


# --------------------------------------------------------------------------- float chain


def float_chain(model: Any, cfg: Any, series: np.ndarray) -> np.ndarray:
    """Head output of every step of the float step model over ``(N, T, C)``: ``(N, S, n_out)``."""
    import tensorflow as tf

    from quantize.step_model import build_step_model, state_names, step_inputs

    step = build_step_model(model, cfg, batch_size=None)
    fn = tf.function(lambda feed: step(feed, training=False), reduce_retracing=True)
    xs = step_inputs(cfg, np.asarray(series, np.float32))
    h_in, h_out = state_names(cfg)
    n = xs.shape[0]
    state = {a: tf.zeros((n, u), tf.float32) for a, u in zip(h_in, cfg.gru_units, strict=True)}
    ys = []
    for j in range(xs.shape[1]):
        out = fn({"x": tf.constant(xs[:, j]), **state})
        ys.append(out["y"])
        state = {a: out[o] for a, o in zip(h_in, h_out, strict=True)}
    return np.stack([np.asarray(y) for y in ys], axis=1)


# --------------------------------------------------------------------------- two int8 chains


def compare_int8(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], y_name: str = "y", classify: bool = True
) -> dict[str, Any]:
    """Differences between two sets of int8 outputs ``{name: (N, S, width)}``, in int8 steps."""
    by_output = {}
    total = differ = 0
    max_diff = 0
    steps_differ = None
    for nm in a:
        d = np.abs(a[nm].astype(np.int16) - b[nm].astype(np.int16))
        cnt = int(np.count_nonzero(d))
        m = int(d.max()) if d.size else 0
        by_output[nm] = {"values": int(d.size), "differ": cnt, "max_diff_steps": m}
        total += d.size
        differ += cnt
        max_diff = max(max_diff, m)
        step_any = np.any(d > 0, axis=-1)
        steps_differ = step_any if steps_differ is None else steps_differ | step_any
    fa, fb = a[y_name][:, -1], b[y_name][:, -1]
    final = np.abs(fa.astype(np.int16) - fb.astype(np.int16))
    out: dict[str, Any] = {
        "steps": int(a[y_name].shape[0] * a[y_name].shape[1]),
        "values": int(total),
        "values_differ": int(differ),
        "fraction_values_differ": float(differ / total) if total else 0.0,
        "max_diff_steps": max_diff,
        "steps_with_difference": int(steps_differ.sum()) if steps_differ is not None else 0,
        "final_output_values_differ": int(np.count_nonzero(final)),
        "final_output_max_diff_steps": int(final.max()) if final.size else 0,
        "windows": int(fa.shape[0]),
        "windows_argmax_differ": None,
        "fraction_windows_argmax_differ": None,
        "by_output": by_output,
    }
    if classify:
        flips = int(np.count_nonzero(np.argmax(fa, axis=-1) != np.argmax(fb, axis=-1)))
        out["windows_argmax_differ"] = flips
        out["fraction_windows_argmax_differ"] = float(flips / fa.shape[0])
    return out
