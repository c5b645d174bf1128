"""Latency and throughput of the runtime on this machine: ``tinygru-edge bench``.

For each backend (LiteRT built-in kernels, LiteRT with XNNPACK), within a
bounded time budget:

- ``bare_step_us``: a bare loop of ``set_tensor`` (x, every state) + ``invoke``
  + ``get_tensor`` (every state, y) on preallocated arrays: p50/p95/p99/mean
  of single steps;
- ``streamer``: the same interpreter driven through :class:`Streamer` in the
  bundle's default mode and hop over the reference samples: ``step_us`` (push
  time / steps run), the ratio of that to the bare mean step
  (``ratio_streamer_to_bare``; the cost of quantization, ring buffer, lanes and
  Results), per-sample push latency p50/p95/p99, throughput in samples/s;
- ``window_us``: the compute time of one whole window (T samples pushed into a
  window-exact Streamer with one window in flight; T consecutive samples of the
  continuous Streamer for a forecaster), p50/p95/p99.

Peak memory is the process's maximum resident set size (``resource.getrusage``).
Figures are labelled with the host (``platform.machine()``): a Raspberry Pi
gives its own. Tests check the structure of this report, never its times.
"""

from __future__ import annotations

import gc
import platform
import resource
import sys
import time
from typing import Any

import numpy as np

from edge_runtime.bundle import Bundle
from edge_runtime.interpreter import StepInterpreter, interpreter_module
from edge_runtime.stream import Streamer

__all__ = ["BENCH_BACKENDS", "bench", "host_label", "render"]

BENCH_BACKENDS = ("litert", "xnnpack")
MAX_SAMPLES = 200_000


def host_label() -> str:
    machine = platform.machine()
    if machine.lower() in ("x86_64", "amd64"):
        return "x86-64 host"
    return f"{machine} host"


def _pct(values_ns: list[int] | np.ndarray) -> dict[str, Any]:
    a = np.asarray(values_ns, np.float64) / 1e3
    if a.size == 0:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "n": int(a.size),
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "mean": round(float(a.mean()), 2),
    }


def _samples(b: Bundle) -> np.ndarray:
    ref = b.load_npz("reference.npz")
    if "x_counts" in ref:
        x = ref["x_counts"]
        counts = x.reshape(-1, x.shape[-1])
    else:
        counts = ref["series_counts"]
    return np.ascontiguousarray(counts[:MAX_SAMPLES], np.int16)


def _bare(interp: StepInterpreter, xs: np.ndarray, budget: float) -> dict[str, Any]:
    it = interp.raw
    x_idx = interp.inputs["x"].index
    h_in = [interp.inputs[n].index for n in interp.state_in]
    h_out = [interp.outputs[n].index for n in interp.state_out]
    y_idx = interp.outputs["y"].index
    states = interp.zero_states()
    set_tensor, get_tensor, invoke = it.set_tensor, it.get_tensor, it.invoke
    clock = time.perf_counter_ns
    times: list[int] = []
    n = len(xs)
    end = clock() + int(budget * 1e9)
    i = 0
    while True:
        t0 = clock()
        set_tensor(x_idx, xs[i % n])
        for idx, h in zip(h_in, states, strict=True):
            set_tensor(idx, h)
        invoke()
        states = [get_tensor(idx) for idx in h_out]
        get_tensor(y_idx)
        t1 = clock()
        times.append(t1 - t0)
        i += 1
        if t1 > end:
            break
    return _pct(times)


def _streamer(
    b: Bundle, interp: StepInterpreter, counts: np.ndarray, budget: float
) -> dict[str, Any]:
    s = Streamer(b, interpreter=interp)
    clock = time.perf_counter_ns
    push = s.push
    times: list[int] = []
    n = len(counts)
    rows = list(counts)
    end = clock() + int(budget * 1e9)
    i = 0
    total = 0
    while True:
        t0 = clock()
        push(rows[i % n])
        t1 = clock()
        times.append(t1 - t0)
        total += t1 - t0
        i += 1
        if i % n == 0:
            s.reset()
        if t1 > end:
            break
    return {
        "mode": s.mode,
        "hop": s.cfg.hop,
        "samples": i,
        "steps": s.steps,
        "step_us": round(total / max(1, s.steps) / 1e3, 2),
        "push_us": _pct(times),
        "samples_per_s": round(i / (total / 1e9), 1),
        "steps_per_s": round(s.steps / (total / 1e9), 1),
    }


def _windows(
    b: Bundle, interp: StepInterpreter, counts: np.ndarray, budget: float
) -> dict[str, Any]:
    T = int(b.manifest["preprocess"]["window"])
    if b.task == "classification":
        s = Streamer(b, "window-exact", interpreter=interp, hop=T)
    else:
        s = Streamer(b, "continuous", interpreter=interp)
    n_win = max(1, len(counts) // T)
    blocks = [list(counts[w * T : (w + 1) * T]) for w in range(n_win)]
    clock = time.perf_counter_ns
    times: list[int] = []
    end = clock() + int(budget * 1e9)
    w = 0
    while True:
        block = blocks[w % n_win]
        t0 = clock()
        for row in block:
            s.push(row)
        t1 = clock()
        times.append(t1 - t0)
        w += 1
        if t1 > end:
            break
    return _pct(times)


def bench(
    bundle: Bundle,
    *,
    seconds: float = 3.0,
    backends: tuple[str, ...] = BENCH_BACKENDS,
    num_threads: int | None = 1,
) -> dict[str, Any]:
    """Run the benchmark within about ``seconds`` of measuring (plus set-up)."""
    t_start = time.perf_counter()
    counts = _samples(bundle)
    probe = Streamer(bundle, backend=backends[0], num_threads=num_threads)
    per_phase = max(0.05, float(seconds) / (3 * len(backends)))
    mc = bundle.manifest["model"]["config"]
    k, C = int(mc["front_end_kernel"]), int(mc["n_channels"])
    q = probe.quantize
    qs = np.stack([q(row) for row in counts[: min(len(counts), 4096)]])
    pad = np.full((k - 1, C), probe.cfg.fill, np.int8)
    flat = np.concatenate([pad, qs]).reshape(-1)
    xs = [
        np.ascontiguousarray(flat[i * C : (i + k) * C].reshape(1, -1))
        for i in range(0, len(qs), probe.cfg.stride)
    ]
    _, lib = interpreter_module()
    out: dict[str, Any] = {
        "host": {
            "label": host_label(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "interpreter": lib,
            "interpreter_version": _version(lib),
            "num_threads": num_threads,
        },
        "bundle": str(bundle.root),
        "task": bundle.task,
        "model": {
            "window": probe.cfg.window,
            "hop": probe.cfg.hop,
            "kernel": probe.cfg.kernel,
            "stride": probe.cfg.stride,
            "steps_per_window": probe.cfg.steps_per_window,
            "gru_units": list(mc["gru_units"]),
            "step_bytes": bundle.artifacts["step_int8.tflite"]["bytes"],
        },
        "budget_seconds": float(seconds),
        "backends": {},
    }
    del probe
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for name in backends:
            interp = StepInterpreter.from_bundle(bundle, backend=name, num_threads=num_threads)
            bare = _bare(interp, xs, per_phase)
            stream = _streamer(bundle, interp, counts, per_phase)
            window = _windows(bundle, interp, counts, per_phase)
            ratio = stream["step_us"] / bare["mean"] if bare["mean"] else None
            out["backends"][interp.backend_label] = {
                "bare_step_us": bare,
                "streamer": stream,
                "ratio_streamer_to_bare": None if ratio is None else round(ratio, 3),
                "window_us": window,
            }
    finally:
        if gc_was:
            gc.enable()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["peak_rss_mb"] = round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    out["seconds"] = round(time.perf_counter() - t_start, 2)
    return out


def _version(lib: str) -> str:
    from importlib import metadata

    dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(lib, lib)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def render(report: dict[str, Any]) -> str:
    """The benchmark as text lines."""
    h = report["host"]
    mdl = report["model"]
    lines = [
        f"tinygru-edge bench: {report['bundle']} ({report['task']}) on {h['label']} "
        f"({h['interpreter']} {h['interpreter_version']}, python {h['python']}, "
        f"threads {h['num_threads']})",
        f"  model: window {mdl['window']}, hop {mdl['hop']}, k {mdl['kernel']}, s "
        f"{mdl['stride']} ({mdl['steps_per_window']} steps/window), GRU {mdl['gru_units']}, "
        f"{mdl['step_bytes']} B",
    ]
    for name, e in report["backends"].items():
        b, s, w = e["bare_step_us"], e["streamer"], e["window_us"]
        lines += [
            f"  {name}:",
            f"    bare step      p50 {b['p50']} us  p95 {b['p95']} us  p99 {b['p99']} us  "
            f"mean {b['mean']} us  ({b['n']} steps)",
            f"    streamer step  {s['step_us']} us  = {e['ratio_streamer_to_bare']} x bare "
            f"({s['mode']}, hop {s['hop']})",
            f"    push (sample)  p50 {s['push_us']['p50']} us  p95 {s['push_us']['p95']} us  "
            f"p99 {s['push_us']['p99']} us",
            f"    window         p50 {w['p50']} us  p95 {w['p95']} us  p99 {w['p99']} us  "
            f"({w['n']} windows)",
            f"    throughput     {s['samples_per_s']} samples/s, {s['steps_per_s']} steps/s",
        ]
    lines.append(f"  peak RSS {report['peak_rss_mb']} MB; {report['seconds']} s")
    return "\n".join(lines)
