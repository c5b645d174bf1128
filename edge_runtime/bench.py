"""Latency and throughput of the runtime on this machine: ``tinygru-edge bench``.

For each backend (LiteRT built-in kernels, LiteRT with XNNPACK), within a
bounded time budget:

- ``ratio_streamer_to_bare``: the runtime's cost per step over a bare loop's,
  the median over alternating rounds on the same samples (each round's ratio
  pairs a bare pass and a Streamer pass made one after the other, so both see
  the same machine load), timed as CPU time of the measuring thread (``time.thread_time``;
  on an idle machine that is the wall time, on a shared one it leaves out the
  time other processes hold the core). A bare round is ``set_tensor`` (x, every
  state) + ``invoke`` + ``get_tensor`` (every state, y) per step on preallocated
  step inputs; a Streamer round is :meth:`Streamer.push` per sample in the
  bundle's default mode and hop (quantization, ring buffer, lanes, Results
  included). ``ratio_push_many_to_bare``: the same with :meth:`Streamer.push_many`
  over chunks of ``CHUNK`` samples. ``rounds`` holds the CPU microseconds per
  step of each side over all rounds and the spread of the per-round ratios.
- ``bare_step_us``: wall time of single bare steps, p50/p95/p99/mean;
- ``streamer``: per-sample push latency (wall) p50/p95/p99, ``step_us`` (push
  time / steps run, wall), throughput in samples/s and steps/s (CPU time of the
  alternating rounds, and wall time of the latency phase);
- ``window_us``: the compute time of one whole window (T samples pushed into a
  window-exact Streamer with one window in flight; T consecutive samples of the
  continuous Streamer for a forecaster), p50/p95/p99.

With a worker process (``--interpreter-python``) the bare loop is the worker's
round trip of prepacked step inputs. Peak memory is the process's maximum
resident set size (``resource.getrusage``). Figures are labelled with the host
(``platform.machine()``): a Raspberry Pi gives its own. Tests check the
structure of this report, never its times.
"""

from __future__ import annotations

import gc
import platform
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_runtime import contract
from edge_runtime.bundle import Bundle
from edge_runtime.interpreter import StepInterpreter
from edge_runtime.stream import Streamer

__all__ = ["BENCH_BACKENDS", "bench", "host_label", "render"]

BENCH_BACKENDS = ("litert", "xnnpack")
MAX_SAMPLES = 200_000
ROUND_SAMPLES = 4096  # samples per alternating round (and the bare loop's step inputs)
CHUNK = 64  # samples per push_many call in the chunked rounds


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
    ref = b.load_npz(contract.REFERENCE)
    if "x_counts" in ref:
        x = ref["x_counts"]
        counts = x.reshape(-1, x.shape[-1])
    else:
        counts = ref["series_counts"]
    return np.ascontiguousarray(counts[:MAX_SAMPLES], np.int16)


def _worker_inputs(
    interp: StepInterpreter, xs: list[np.ndarray]
) -> tuple[Callable[[bytes], object], list[bytes]]:
    """A worker's step call and its round trip of ``xs`` prepacked with the zero state."""
    worker = interp.worker
    assert worker is not None
    zero = b"".join(h.tobytes() for h in interp.zero_states())
    return worker.step, [x.tobytes() + zero for x in xs]


def _tensor_indices(interp: StepInterpreter) -> tuple[int, list[int], list[int], int]:
    """The interpreter's tensor indices: x, the states in, the states out, y."""
    h_in = [interp.inputs[name].index for name in interp.state_in]
    h_out = [interp.outputs[name].index for name in interp.state_out]
    return interp.inputs["x"].index, h_in, h_out, interp.outputs["y"].index


def _generic_round(interp: StepInterpreter, xs: list[np.ndarray]) -> Callable[[], int]:
    """The bare loop of a backend without LiteRT's tensor calls (the C engine, TFLM):
    its step call, the state carried in place."""
    step = interp.step

    def run() -> int:
        states = interp.zero_states()
        for x in xs:
            step(x, states)
        return len(xs)

    return run


def _bare_round(interp: StepInterpreter, xs: list[np.ndarray]) -> Callable[[], int]:
    """One pass of the bare loop over ``xs`` from a zero state; returns the steps run."""
    it = interp.raw
    if it is not None and not hasattr(it, "set_tensor"):
        return _generic_round(interp, xs)
    if it is None:
        call, packed = _worker_inputs(interp, xs)

        def remote() -> int:
            for p in packed:
                call(p)
            return len(packed)

        return remote
    x_idx, h_in, h_out, y_idx = _tensor_indices(interp)
    set_tensor, get_tensor, invoke = it.set_tensor, it.get_tensor, it.invoke

    def local() -> int:
        states = interp.zero_states()
        for x in xs:
            set_tensor(x_idx, x)
            for idx, h in zip(h_in, states, strict=True):
                set_tensor(idx, h)
            invoke()
            states = [get_tensor(idx) for idx in h_out]
            get_tensor(y_idx)
        return len(xs)

    return local


def _bare_latency(interp: StepInterpreter, xs: list[np.ndarray], budget: float) -> dict[str, Any]:
    """Wall time of single steps of the bare loop, the state carried from step to step."""
    clock = time.perf_counter_ns
    times: list[int] = []
    n = len(xs)
    end = clock() + int(budget * 1e9)
    i = 0
    it = interp.raw
    if it is not None and not hasattr(it, "set_tensor"):
        step, states = interp.step, interp.zero_states()
        while True:
            t0 = clock()
            step(xs[i % n], states)
            t1 = clock()
            times.append(t1 - t0)
            i += 1
            if t1 > end:
                return _pct(times)
    if it is None:
        call, packed = _worker_inputs(interp, xs)
        while True:
            t0 = clock()
            call(packed[i % n])
            t1 = clock()
            times.append(t1 - t0)
            i += 1
            if t1 > end:
                return _pct(times)
    x_idx, h_in, h_out, y_idx = _tensor_indices(interp)
    states = interp.zero_states()
    set_tensor, get_tensor, invoke = it.set_tensor, it.get_tensor, it.invoke
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
            return _pct(times)


def _ratio(
    b: Bundle, interp: StepInterpreter, counts: np.ndarray, xs: list[np.ndarray], budget: float
) -> dict[str, Any]:
    """Alternating rounds: bare loop, push per sample, push_many per chunk (CPU time)."""
    bare = _bare_round(interp, xs)
    s = Streamer(b, interpreter=interp)
    rows = list(counts)
    chunks = [counts[i : i + CHUNK] for i in range(0, len(counts), CHUNK)]
    push, push_many = s.push, s.push_many
    cpu = time.thread_time_ns
    tot = {"bare": [0, 0], "push": [0, 0], "push_many": [0, 0]}  # CPU ns, steps
    per_round: list[float] = []
    per_round_many: list[float] = []
    samples = 0
    end = time.perf_counter() + budget
    rounds = 0

    def timed(fn: Callable[[Any], object], items: list[Any]) -> tuple[int, int]:
        """CPU ns and steps of ``fn`` over ``items`` from a reset streamer."""
        s.reset()
        s0 = s.steps
        t0 = cpu()
        for item in items:
            fn(item)
        return cpu() - t0, s.steps - s0

    while rounds < 2 or time.perf_counter() < end:
        t0 = cpu()
        n_bare = bare()
        t_bare = cpu() - t0
        t_push, n_push = timed(push, rows)
        t_many, n_many = timed(push_many, chunks)
        for key, t, n in (("bare", t_bare, n_bare), ("push", t_push, n_push),
                          ("push_many", t_many, n_many)):  # fmt: skip
            tot[key][0] += t
            tot[key][1] += n
        if t_bare and n_push and n_many:
            per_round.append((t_push / n_push) / (t_bare / n_bare))
            per_round_many.append((t_many / n_many) / (t_bare / n_bare))
        samples += len(rows)
        rounds += 1
    us = {k: (t / n / 1e3 if n else None) for k, (t, n) in tot.items()}

    def median(values: list[float]) -> float | None:
        return round(float(np.median(values)), 3) if values else None

    return {
        "ratio": median(per_round),
        "ratio_many": median(per_round_many),
        "rounds": {
            "n": rounds,
            "samples_per_round": len(rows),
            "cpu_step_us": {k: None if v is None else round(v, 3) for k, v in us.items()},
            "push_ratio_min": round(min(per_round), 3) if per_round else None,
            "push_ratio_max": round(max(per_round), 3) if per_round else None,
            "push_many_ratio_min": round(min(per_round_many), 3) if per_round_many else None,
            "push_many_ratio_max": round(max(per_round_many), 3) if per_round_many else None,
        },
        "samples_per_s_cpu": round(samples / (tot["push"][0] / 1e9), 1) if tot["push"][0] else None,
        "samples_per_s_cpu_push_many": (
            round(samples / (tot["push_many"][0] / 1e9), 1) if tot["push_many"][0] else None
        ),
    }


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
        "samples_per_s_wall": round(i / (total / 1e9), 1),
        "steps_per_s_wall": round(s.steps / (total / 1e9), 1),
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
    python: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark within about ``seconds`` of measuring (plus set-up).

    ``python``: run the step model in a worker under that Python.
    """
    t_start = time.perf_counter()
    counts = _samples(bundle)
    block = counts[:ROUND_SAMPLES]
    probe = Streamer(
        bundle, backend=backends[0], num_threads=num_threads, interpreter_python=python
    )
    budget = max(0.2, float(seconds) / len(backends))
    mc = bundle.manifest["model"]["config"]
    k, C = int(mc["front_end_kernel"]), int(mc["n_channels"])
    qs = probe.quantize(block)
    pad = np.full((k - 1, C), probe.cfg.fill, np.int8)
    flat = np.concatenate([pad, qs]).reshape(-1)
    xs = [
        np.ascontiguousarray(flat[i * C : (i + k) * C].reshape(1, -1))
        for i in range(0, len(qs), probe.cfg.stride)
    ]
    if probe.interp.worker is not None:
        info = probe.interp.worker.info
        lib, version = f"{info['library']} (worker: {probe.interp.python})", info["version"]
    else:
        lib = "ai_edge_litert"  # LiteRT rows in this process; see each backend's label
        version = _version(lib)
    out: dict[str, Any] = {
        "host": {
            "label": host_label(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "interpreter": lib,
            "interpreter_version": version,
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
            "step_bytes": bundle.artifacts[contract.STEP_MODEL]["bytes"],
        },
        "budget_seconds": float(seconds),
        "backends": {},
    }
    probe.close()
    del probe
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for name in backends:
            interp = StepInterpreter.from_bundle(
                bundle, backend=name, num_threads=num_threads, python=python
            )
            try:
                ratio = _ratio(bundle, interp, block, xs, 0.5 * budget)
                bare = _bare_latency(interp, xs, 0.15 * budget)
                stream = _streamer(bundle, interp, counts, 0.15 * budget)
                window = _windows(bundle, interp, counts, 0.2 * budget)
            finally:
                interp.close()
            stream["samples_per_s"] = ratio.pop("samples_per_s_cpu")
            stream["samples_per_s_push_many"] = ratio.pop("samples_per_s_cpu_push_many")
            cpu = ratio["rounds"]["cpu_step_us"]
            stream["steps_per_s"] = round(1e6 / cpu["push"], 1) if cpu["push"] else None
            out["backends"][interp.backend_label] = {
                "bare_step_us": bare,
                "streamer": stream,
                "ratio_streamer_to_bare": ratio["ratio"],
                "ratio_push_many_to_bare": ratio["ratio_many"],
                "rounds": ratio["rounds"],
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
        b, s, w, r = e["bare_step_us"], e["streamer"], e["window_us"], e["rounds"]
        cpu = r["cpu_step_us"]
        lines += [
            f"  {name}:",
            f"    streamer step  {e['ratio_streamer_to_bare']} x bare with push (rounds "
            f"{r['push_ratio_min']}..{r['push_ratio_max']}), {e['ratio_push_many_to_bare']} "
            f"x bare with push_many ({s['mode']}, hop {s['hop']})",
            f"    CPU per step   bare {cpu['bare']} us  push {cpu['push']} us  push_many "
            f"{cpu['push_many']} us  ({r['n']} alternating rounds of "
            f"{r['samples_per_round']} samples)",
            f"    bare step      p50 {b['p50']} us  p95 {b['p95']} us  p99 {b['p99']} us  "
            f"mean {b['mean']} us  ({b['n']} steps)",
            f"    push (sample)  p50 {s['push_us']['p50']} us  p95 {s['push_us']['p95']} us  "
            f"p99 {s['push_us']['p99']} us  ({s['step_us']} us/step wall)",
            f"    window         p50 {w['p50']} us  p95 {w['p95']} us  p99 {w['p99']} us  "
            f"({w['n']} windows)",
            f"    throughput     {s['samples_per_s']} samples/s ({s['samples_per_s_push_many']} "
            f"with push_many), {s['steps_per_s']} steps/s",
        ]
    lines.append(f"  peak RSS {report['peak_rss_mb']} MB; {report['seconds']} s")
    return "\n".join(lines)
