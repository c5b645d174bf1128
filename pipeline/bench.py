"""One benchmark run of a bundle: ``python -m pipeline.bench --bundle B``.

Writes ``B/reports/bench.json`` and ``B/reports/bench.md`` (and the edge runtime's
own figures to ``B/reports/runtime_bench.json``), all measured in this run:

- **Emulated Cortex-M** (``firmware_export.kernel_bench``; QEMU ``-icount
  shift=0``, so instructions, not cycles): instructions per model step and
  instructions per MAC of the matrix kernels (kernel instructions ÷ dense MACs)
  on every core the benchmark runs (by default Cortex-M3 (portable C), Cortex-M4
  built with and without the DSP path, and Cortex-M7), for the weights stored dense
  and block-sparse; where each step's instructions go, per op kind (``step_parts``),
  and the stream's bookkeeping per step; the engine's code bytes per core. Every
  kernel, op, step and stream output is compared with the host engine (tolerance 0).
- **Tracked figures** (``figures``): per core, the kernel instructions per MAC and
  the step instructions (and per MAC) for dense and block-sparse weights, block-sparse
  kernels ÷ dense kernels, the engine's code bytes; the engine's RAM (state + scratch
  + stream struct + deepest stack).
- **Host µs per step**, one bare loop each on the same step inputs: LiteRT built-in
  kernels and LiteRT with XNNPACK (``edge_runtime.bench``, whose whole report is
  also kept under ``runtime_bench``), the TFLM interpreter (``tflite_micro``) and the
  C engine (``firmware_export.host``, one ctypes call per step); ratios of medians
  to the C engine.
- **Model bytes and RAM** of three routes: the unrolled-window model on TFLM
  (``window_int8.tflite``, converted into a temporary copy of the bundle when the
  bundle has none; its smallest host TFLM arena), the step model on TFLM
  (``step_int8.tflite`` and the arena the quantize stage measured), and the
  tinygru engine (model data + engine code flash, RAM = state + scratch + stream
  struct + stack, as ``reports/engine.json`` ``cortex_m4`` computes them, measured
  again here on the current engine); ratios TFLM-route ÷ engine.

Times are host-dependent and labelled with the host; instruction counts are
deterministic. Nothing here is a pass mark.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import contract

ROOT = Path(__file__).resolve().parents[1]
WINDOW_FILE = contract.WINDOW_MODEL
STEP_FILE = contract.STEP_MODEL
REPORT = "reports/bench.json"
REPORT_MD = "reports/bench.md"
RUNTIME_REPORT = "reports/runtime_bench.json"
TARGETS_DIR = ROOT / "configs" / "targets"  # the chips whose clocks turn cycles into ms


class BenchError(RuntimeError):
    """The benchmark cannot run; the message is the one-line reason."""


# ----------------------------------------------------------------------------- host


def _pct(ns: list[int]) -> dict[str, Any]:
    a = np.asarray(ns, np.float64) / 1e3
    p50, p95 = np.percentile(a, [50, 95])
    return {"n": int(a.size), "mean": round(float(a.mean()), 3), "p50": round(float(p50), 3),
            "p95": round(float(p95), 3)}  # fmt: skip


def _loop(step: Any, n_inputs: int, budget: float) -> dict[str, Any]:
    clock = time.perf_counter_ns
    times: list[int] = []
    end = clock() + int(budget * 1e9)
    i = 0
    while True:
        t0 = clock()
        step(i % n_inputs)
        t1 = clock()
        times.append(t1 - t0)
        i += 1
        if t1 > end:
            break
    return _pct(times)


def _step_inputs(bundle_dir: Path) -> tuple[Any, np.ndarray]:
    from edge_runtime.bundle import Bundle
    from firmware_export.check import step_inputs
    from firmware_export.export import prepare

    b = Bundle.open(bundle_dir)
    prep = prepare(b)
    ref = b.load_npz(contract.REFERENCE)
    series = ref["x_counts"][:8].reshape(-1, prep.model.channels) if "x_counts" in ref else (
        ref["series_counts"][:1024])  # fmt: skip
    return prep, step_inputs(prep, series)


def host_tflm(bundle_dir: Path, xs: np.ndarray, budget: float) -> dict[str, Any]:
    """Bare loop on the TFLM interpreter (the step interpreter's ``tflm`` backend): set x
    and the states, invoke, read states and y."""
    from edge_runtime.bundle import Bundle
    from edge_runtime.interpreter import StepInterpreter

    interp = StepInterpreter.from_bundle(Bundle.open(bundle_dir), backend="tflm")
    xs2 = [np.ascontiguousarray(x.reshape(1, -1)) for x in xs]
    states = interp.zero_states()
    step = interp.step

    def one(i: int) -> None:
        step(xs2[i], states)

    return _loop(one, len(xs2), budget)


def host_engine(bundle_dir: Path, xs: np.ndarray, budget: float) -> dict[str, Any]:
    """Bare loop on the C engine built for this host: one ctypes call of tg_model_step per
    step on preallocated buffers (the state is updated in place)."""
    import ctypes

    from edge_runtime.backends import engine
    from firmware_export.export import export

    with tempfile.TemporaryDirectory(prefix="tg_bench_fw_") as tmp:
        res = export(bundle_dir, Path(tmp) / "fw")
        eng = engine.load(Path(res["out"]), res["prefix"])
    xs2 = [np.ascontiguousarray(x, np.int8) for x in xs]
    ptrs = [ctypes.c_void_p(x.ctypes.data) for x in xs2]
    h = np.zeros(sum(eng.units), np.int8)
    y = np.zeros(eng.n_outputs, np.int8)
    hp, yp = ctypes.c_void_p(h.ctypes.data), ctypes.c_void_p(y.ctypes.data)
    fn = eng.lib.host_step

    def step(i: int) -> None:
        fn(ptrs[i], hp, yp)

    return _loop(step, len(xs2), budget)


# --------------------------------------------------------------------------- memory


def window_model(bundle_dir: Path, work: Path) -> tuple[bytes, str]:
    """The unrolled-window int8 model: the bundle's, or converted into a copy of it."""
    from edge_runtime.bundle import Bundle

    b = Bundle.open(bundle_dir)
    if b.has(WINDOW_FILE):
        return b.read_bytes(WINDOW_FILE), f"{WINDOW_FILE} of the bundle"
    copy = work / "bundle"
    shutil.copytree(bundle_dir, copy, symlinks=True)
    env = {**os.environ, "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "3",
           "TF_ENABLE_ONEDNN_OPTS": "0"}  # fmt: skip
    cmd = [sys.executable, "-m", "quantize", "int8", "--bundle", str(copy), "--window-model",
           "--no-arena"]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    path = copy / WINDOW_FILE
    if r.returncode != 0 or not path.is_file():
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"{bundle_dir}: converting {WINDOW_FILE} failed: {last}")
    return (
        path.read_bytes(),
        f"{WINDOW_FILE} converted by `python -m quantize int8 --window-model` on a temporary copy",
    )


def memory_routes(bundle_dir: Path, prep: Any, with_window: bool) -> dict[str, Any]:
    """Flash-model bytes and RAM of the unrolled TFLM, step TFLM and tinygru engine routes."""
    from edge_runtime.bundle import Bundle
    from firmware_export import sizes
    from firmware_export.export import export
    from quantize.arena import smallest_arena

    b = Bundle.open(bundle_dir)
    routes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tg_bench_mem_") as tmp:
        if with_window:
            data, source = window_model(bundle_dir, Path(tmp))
            arena = smallest_arena(data, 1)
            routes["tflm_unrolled_window"] = {
                "model_bytes": len(data), "ram_bytes": arena["bytes"],
                "ram": f"smallest host (x86-64) TFLM arena, {arena['method']}",
                "source": source,
                "note": "one call per window of T samples; TFLM's own code not counted",
            }  # fmt: skip
        step = b.read_bytes(STEP_FILE)
        q = (b.manifest.get("quantization") or {}).get("tflm_arena") or {}
        if isinstance(q.get("bytes"), int):
            arena, how = q["bytes"], f"{q.get('label', 'host TFLM arena')}, from the manifest"
        else:  # the quantize stage ran without its arena search: measure it here
            found = smallest_arena(step, 1 + len(prep.model.units))
            arena, how = found["bytes"], f"smallest host (x86-64) TFLM arena, {found['method']}"
        routes["tflm_step"] = {
            "model_bytes": len(step), "ram_bytes": arena, "ram": how, "source": STEP_FILE,
            "note": "one call per step; the state is carried by the caller; TFLM's own code not counted",
        }  # fmt: skip
        res = export(bundle_dir, Path(tmp) / "fw")
        fs = sizes.firmware_sizes(res["out"], res["prefix"])
    routes["tinygru_engine"] = {
        "model_bytes": fs["flash"]["total"], "ram_bytes": fs["ram"]["total"],
        "flash_parts": {"model_data": fs["flash"]["model_data"],
                        "engine_code": fs["flash"]["engine_code"]},
        "ram_parts": {k: fs["ram"][k] for k in ("state", "scratch", "stream_struct", "stack")},
        "source": f"firmware_export.sizes ({fs['cflags']}) on the bundle's export, "
                  "as reports/engine.json cortex_m4",
        "note": "flash = model data + engine code (object sizes before --gc-sections)",
    }  # fmt: skip
    eng = routes["tinygru_engine"]
    ratios = {}
    for name in ("tflm_unrolled_window", "tflm_step"):
        if name in routes:
            ratios[name] = {
                "model_bytes": round(routes[name]["model_bytes"] / eng["model_bytes"], 2),
                "ram_bytes": round(routes[name]["ram_bytes"] / eng["ram_bytes"], 2),
            }
    return {"routes": routes, "ratio_to_engine": ratios}


# ---------------------------------------------------------------------------- bench


def bench(
    bundle_dir: str | Path,
    *,
    seconds: float = 2.0,
    with_window: bool = True,
    cores: tuple[str, ...] | None = None,
    reps: int = 3,
    steps: int = 64,
) -> dict[str, Any]:
    """Every figure of the module docstring; writes the reports into the bundle."""
    from edge_runtime import bench as edge_bench
    from edge_runtime.bundle import Bundle
    from firmware_export import kernel_bench, qemu

    bundle_dir = Path(bundle_dir)
    t_start = time.perf_counter()
    b = Bundle.open(bundle_dir)
    why = qemu.missing_tools()
    if why:
        raise BenchError(f"emulator benchmark impossible: {why}")
    kb = kernel_bench.bench(bundle_dir, cores or kernel_bench.DEFAULT_CORES, steps=steps,
                            reps=reps)  # fmt: skip
    bad = [(r["core"], r["sparse_mode"]) for r in kb["runs"]
           if any(r[k] for k in kernel_bench.MISMATCH_KEYS)]  # fmt: skip
    if bad:
        raise BenchError(f"emulated engine differs from the host engine on {bad}")

    estimates = cycle_estimates(bundle_dir, [r["core"] for r in kb["runs"]])
    prep, xs = _step_inputs(bundle_dir)
    runtime = edge_bench.bench(b, seconds=seconds)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        host: dict[str, Any] = {}
        for name, e in runtime["backends"].items():
            host[name] = e["bare_step_us"]
        host["tflm"] = host_tflm(bundle_dir, xs, seconds / 3)
        host["tinygru engine (ctypes)"] = host_engine(bundle_dir, xs, seconds / 3)
    finally:
        if gc_was:
            gc.enable()
    # medians: a shared host's preemptions land in the means, not in the medians
    base = host["tinygru engine (ctypes)"]["p50"]
    host_ratio = {k: round(v["p50"] / base, 2) for k, v in host.items()}

    memory = memory_routes(bundle_dir, prep, with_window)
    report = {
        "figures": figures(kb, memory, estimates),
        "cycles_estimate": estimates,
        "bundle": str(bundle_dir),
        "task": b.task,
        "host": {
            "label": edge_bench.host_label(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },  # fmt: skip
        "emulated": kb,
        "host_step_us": host,
        "host_ratio_to_engine": host_ratio,
        "host_note": "bare loops on the same step inputs, ratios of medians; LiteRT figures from "
        "edge_runtime.bench (reports/runtime_bench.json), TFLM = tflite_micro Python "
        "interpreter, engine = one ctypes call of tg_model_step per step",
        "memory": memory,
        "runtime_bench": runtime,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    _write(bundle_dir / RUNTIME_REPORT, json.dumps(runtime, indent=2) + "\n")
    _write(bundle_dir / REPORT, json.dumps(report, indent=2) + "\n")
    _write(bundle_dir / REPORT_MD, render_md(report))
    return report


def cycle_estimates(bundle_dir: str | Path, cores: list[str]) -> dict[str, Any]:
    """Cycles per step ESTIMATED per board (firmware_export.cycles: the traced instruction
    mix weighted by published timings), with ms per step and share of the sample period at
    the clock of every configs/targets file whose board it is; and the method's errors on
    the published cycle counts it is checked against."""
    from edge_runtime import boards
    from edge_runtime.targets import load_target
    from firmware_export import cycles

    targets = [load_target(p) for p in sorted(TARGETS_DIR.glob("*.toml"))]
    rate = cycles.bundle_rate(bundle_dir)
    rows = []
    board_cores = {b.core for b in boards.BOARDS}  # not the portable builds of a DSP core
    for core in dict.fromkeys(c for c in cores if c in board_cores):
        est = cycles.estimate_bundle(bundle_dir, core)
        est["at_targets"] = [
            {k: v for k, v in cycles.with_clock(est, t.clock_hz, (t.sample_rate_hz or rate or 0)
                                                / est["stride"] or None).items()
             if k in ("clock_hz", "ms_per_step_estimate", "period_share_estimate")}
            | {"target": t.name}
            for t in targets if t.board is not None and t.board.core == core
        ]  # fmt: skip
        rows.append(est)
    return {"label": cycles.LABEL, "method": cycles.METHOD, "rows": rows,
            "validation": cycles.validate()}  # fmt: skip


def figures(
    kb: dict[str, Any], memory: dict[str, Any], estimates: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The figures tracked from run to run, per core (whatever cores the benchmark ran)."""
    per_core: dict[str, Any] = {}
    for r in kb["runs"]:
        d = per_core.setdefault(r["core"], {"cpu": r["cpu"], "dsp": r["dsp"]})
        d["block_sparse" if r["sparse_mode"] == "always" else "dense"] = {
            "kernel_instructions_per_mac": r["instructions_per_mac"],
            "kernel_instructions_per_step": r["kernel_instructions_per_step"],
            "step_instructions": r["step_instructions"],
            "step_instructions_per_mac": r["step_instructions_per_mac"],
            "stream_bookkeeping_per_step": r["stream_bookkeeping_per_step"],
        }
        d["engine_code_bytes"] = r["engine_code"]["bytes"]
    for d in per_core.values():
        if "dense" in d and "block_sparse" in d:
            dense, sparse = d["dense"], d["block_sparse"]
            d["block_sparse_over_dense"] = {
                "kernels": round(
                    sparse["kernel_instructions_per_step"] / dense["kernel_instructions_per_step"],
                    3,
                ),
                "step": round(sparse["step_instructions"] / dense["step_instructions"], 3),
            }
    for est in (estimates or {}).get("rows", []):
        d = per_core.get(est["core"])
        if d is not None:
            d["cycles_per_step_estimate"] = round(est["cycles_per_step_estimate"])
            for t in est["at_targets"]:
                d.setdefault("at_targets_estimate", {})[t["target"]] = {
                    "ms_per_step": round(t["ms_per_step_estimate"], 4),
                    "share_of_sample_period": round(t.get("period_share_estimate") or 0, 5),
                }  # fmt: skip
    eng = memory["routes"]["tinygru_engine"]
    return {
        "dense_macs_per_step": kb["dense_macs_per_step"],
        "per_core": per_core,
        "engine_ram_bytes": eng["ram_bytes"],
        "engine_ram_parts": eng["ram_parts"],
    }


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _core_label(run: dict[str, Any]) -> str:
    return f"{run['cpu']}{'' if run['dsp'] else ' (portable)'}"


def _parts_md(kb: dict[str, Any]) -> list[str]:
    """Where a step's instructions go: per op kind, a column per core, each storage."""
    lines: list[str] = []
    for mode, label in (("never", "dense"), ("always", "block-sparse 1x4")):
        runs = [x for x in kb["runs"] if x["sparse_mode"] == mode]
        if not runs:
            continue
        parts = list(dict.fromkeys(k for x in runs for k in x["step_parts"]))
        lines += ["", f"Where a step's instructions go, {label} weights (each op timed on its "
                  "real inputs; step glue = the step less every op; the stream's bookkeeping "
                  "comes on top when samples are pushed):", "",
                  "| part | " + " | ".join(_core_label(x) for x in runs) + " |",
                  "|---|" + "---:|" * len(runs)]  # fmt: skip
        for k in parts:
            cells = [f"{x['step_parts'][k]:,.0f}" if k in x["step_parts"] else "" for x in runs]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        rows = (
            ("step", "step_instructions"),
            ("stream bookkeeping", "stream_bookkeeping_per_step"),
        )
        for name, key in rows:
            lines.append(f"| **{name}** | " + " | ".join(f"{x[key]:,.0f}" for x in runs) + " |")
        lines.append("| engine code bytes | " + " | ".join(
            f"{x['engine_code']['bytes']:,}" for x in runs) + " |")  # fmt: skip
    return lines


def _figures_md(f: dict[str, Any]) -> list[str]:
    """The tracked figures as one table, a row per core."""
    lines = ["## Tracked figures", "",
             f"{f['dense_macs_per_step']} dense MACs per step; engine RAM (state + scratch + "
             f"stream struct + deepest stack, Cortex-M4 -Os): {f['engine_ram_bytes']} bytes "
             f"({', '.join(f'{k} {v}' for k, v in f['engine_ram_parts'].items())}).", "",
             "| core | dense: kernel instr/MAC | dense: step instr | dense: step instr/MAC | "
             "block-sparse: kernel instr/MAC | block-sparse ÷ dense (kernels) | "
             "engine code bytes |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for core, d in f["per_core"].items():
        dense, sparse = d.get("dense"), d.get("block_sparse")
        ratio = d.get("block_sparse_over_dense", {}).get("kernels")
        cells = [
            f"{dense['kernel_instructions_per_mac']:.3f}" if dense else "",
            f"{dense['step_instructions']:,.0f}" if dense else "",
            f"{dense['step_instructions_per_mac']:.2f}" if dense else "",
            f"{sparse['kernel_instructions_per_mac']:.3f}" if sparse else "",
            f"{ratio:.2f}" if ratio is not None else "",
            f"{d['engine_code_bytes']:,}",
        ]
        label = f"{core}: {d['cpu']}{'' if d['dsp'] else ' (portable)'}"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _cycles_md(est: dict[str, Any] | None) -> list[str]:
    """The cycle estimate per board, times at the target files' clocks, and its validation."""
    if not est:
        return []
    lines = ["", "## Cycles per step: an ESTIMATE (not measured)", "",
             "| core | board | instr/step | cycles/step (estimate) | CPI (estimate) | "
             "at target: ms/step, share of sample period (estimate) |",
             "|---|---|---:|---:|---:|---|"]  # fmt: skip
    for r in est["rows"]:
        at = "; ".join(f"{t['target']}: {t['ms_per_step_estimate']:.3f} ms"
                       + (f", {t['period_share_estimate']:.2%}"
                          if t.get("period_share_estimate") else "")
                       for t in r["at_targets"]) or "-"  # fmt: skip
        lines.append(f"| {r['core']} | {r['board']} | {r['instructions_per_step']:,.0f} | "
                     f"{r['cycles_per_step_estimate']:,.0f} | "
                     f"{r['cycles_per_instruction_estimate']:.2f} | {at} |")  # fmt: skip
    lines += ["", f"Method: {est['method']}.", "",
              "| checked against (published) | core | published cycles | estimate | error |",
              "|---|---|---:|---:|---:|"]  # fmt: skip
    for c in est["validation"]:
        lines.append(f"| {c['name']} | {c['core']} | {c['published_cycles']:g} | "
                     f"{c['estimated_cycles']:.2f} | {c['error_percent']:+.1f}% |")  # fmt: skip
    return lines


def render_md(r: dict[str, Any]) -> str:
    """bench.json as Markdown tables."""
    kb = r["emulated"]
    lines = [
        f"# Benchmark: {r['bundle']} ({r['task']})",
        "",
        *_figures_md(r["figures"]),
        "## Emulated Cortex-M (QEMU -icount: instructions, not cycles)",
        "",
        f"{kb['dense_macs_per_step']} dense MACs per step; {kb['steps']} real steps x "
        f"{kb['reps']} repetitions; every output equal to the host engine's.",
        "",
        "| weights | core | DSP | kernel instr/step | instr/MAC | step instr | kernels share |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for run in kb["runs"]:
        lines.append(
            f"| {'dense' if run['sparse_mode'] == 'never' else 'block-sparse 1x4'} | "
            f"{run['cpu']} ({run['machine']}) | {'yes' if run['dsp'] else 'no'} | "
            f"{run['kernel_instructions_per_step']:,.0f} | {run['instructions_per_mac']:.2f} | "
            f"{run['step_instructions']:,.0f} | {run['kernel_share_of_step']:.0%} |"
        )
    lines += _parts_md(kb)
    dense = {x["core"]: x for x in kb["runs"] if x["sparse_mode"] == "never"}
    sparse = {x["core"]: x for x in kb["runs"] if x["sparse_mode"] == "always"}
    common = [c for c in dense if c in sparse]
    if common:
        lines += [
            "",
            "| core | sparse ÷ dense (kernels) | sparse ÷ dense (step) |",
            "|---|---:|---:|",
        ]
        for c in common:
            k = sparse[c]["kernel_instructions_per_step"] / dense[c]["kernel_instructions_per_step"]
            s = sparse[c]["step_instructions"] / dense[c]["step_instructions"]
            lines.append(f"| {dense[c]['cpu']}{'' if dense[c]['dsp'] else ' (portable)'} | "
                         f"{k:.2f} | {s:.2f} |")  # fmt: skip
    lines += _cycles_md(r.get("cycles_estimate"))
    lines += ["", f"## Host µs per step ({r['host']['label']}, Python {r['host']['python']})", "",
              "| runtime | p50 µs | p95 µs | mean µs | steps | p50 ÷ engine |",
              "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, v in r["host_step_us"].items():
        lines.append(f"| {name} | {v['p50']} | {v['p95']} | {v['mean']} | {v['n']} | "
                     f"{r['host_ratio_to_engine'][name]} |")  # fmt: skip
    mem = r["memory"]
    lines += ["", "## Model bytes and RAM per route", "",
              "| route | model bytes | RAM bytes | model ÷ engine | RAM ÷ engine |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip
    labels = {"tflm_unrolled_window": "TFLM, unrolled window model",
              "tflm_step": "TFLM, step model", "tinygru_engine": "tinygru engine"}  # fmt: skip
    for name, v in mem["routes"].items():
        ratio = mem["ratio_to_engine"].get(name, {"model_bytes": 1.0, "ram_bytes": 1.0})
        lines.append(f"| {labels[name]} | {v['model_bytes']:,} | {v['ram_bytes']:,} | "
                     f"{ratio['model_bytes']} | {ratio['ram_bytes']} |")  # fmt: skip
    lines += ["", "Engine: flash = model data + engine code, RAM = state + scratch + stream "
              "struct + stack (Cortex-M4, -Os). TFLM: model = the .tflite bytes, RAM = the "
              "smallest host TFLM arena; TFLM's own code is not counted.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--bundle", required=True, help="bundle folder (exported step model)")
    parser.add_argument("--seconds", type=float, default=2.0, help="host timing budget")
    parser.add_argument("--no-window", action="store_true",
                        help="skip the unrolled-window TFLM route (its conversion takes minutes)")  # fmt: skip
    parser.add_argument("--reps", type=int, default=3, help="emulator repetitions")
    parser.add_argument("--steps", type=int, default=64, help="real steps per emulator run")
    ns = parser.parse_args(argv)
    try:
        rep = bench(ns.bundle, seconds=ns.seconds, with_window=not ns.no_window, reps=ns.reps,
                    steps=ns.steps)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the CLI contract: one line, non-zero exit
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"pipeline.bench: {type(e).__name__}: {reason}", file=sys.stderr)
        return 1
    print(render_md(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
