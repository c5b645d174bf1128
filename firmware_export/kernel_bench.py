"""Instructions per MAC of the engine's matrix kernels on emulated Cortex-M3/M4/M7.

The ``kbench`` program of ``firmware/Makefile`` (``firmware/kbench/``, built with the
board's support and the exported engine and model data) runs, under qemu-system-arm
with ``-icount shift=0`` (one instruction = 1 ns of virtual time; figures are
instructions, not cycles):

- every FULLY_CONNECTED call of the model's steps (front end, per GRU layer gx and
  gh, head) on its real inputs: the first ``steps`` steps of the first reference
  window (or of the series), the inputs each layer sees in a chained run of the
  host engine. Each layer's ``steps`` calls are timed ``reps`` times with SysTick,
  and the same loop calling an empty function in another file is timed too; the
  difference is the kernel (``tg_fc_layer_run`` and what it calls) without the
  benchmark's loop, argument set-up, call and return, which a step does not pay
  per MAC either (one call per layer). The overhead is reported beside it.
- whole model steps (``tg_model_step``: front end, GRU layers with their
  element-wise ops, head, softmax) chained over the same inputs from the zero
  state, ``reps`` times.

SysTick runs at the 25 MHz board clock: one tick is 40 instructions. A loop of a
known instruction count (SUBS/BNE) is timed first and the run is refused if its
ticks do not give 40 instructions per tick.

The outputs of every kernel call and of every model step (head output and the
final states) are compared with the host engine (the same exported C, built for
this machine with its portable path, debug trace on) at tolerance 0: a fast but
wrong kernel fails the run.

``instructions_per_mac`` = kernel instructions of one step ÷ the dense MACs of
one step (Σ rows·cols over the FC layers), whether the weights are stored dense
or block-sparse, so the two storages compare on the same work.

    python -m firmware_export.kernel_bench --bundle B [--target m4 ...] [--sparse never|always ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.boards import BOARDS, Board, board
from firmware_export import qemu

MAGIC_IN, MAGIC_OUT = 0x424B4754, 0x4F4B4754
SPIN = 200_000  # iterations of the 2-instruction calibration loop
EXIT_CODES = {2: "semihosting open failed", 3: "semihosting read failed",
              4: "bad input header (layer sizes or buffers too large)",
              6: "semihosting write failed", 0x7F: "CPU fault"}  # fmt: skip


@dataclass(frozen=True)
class Core:
    """One emulated board and engine build: the board's own, or its portable C path."""

    name: str
    board: Board
    portable: bool = False  # -DTG_NO_DSP: the portable C path on a core with DSP

    @property
    def machine(self) -> str:
        return self.board.name

    @property
    def cpu(self) -> str:
        return self.board.cpu

    @property
    def dsp(self) -> bool:
        """The SMLAD path of the FC kernels is compiled in."""
        return self.board.dsp and not self.portable

    @property
    def make_options(self) -> tuple[str, ...]:
        return ("DSP=0",) if self.portable else ()


# every board by its core, and the Cortex-M4's portable build (a build option, not a board)
CORES = {
    **{b.core: Core(b.core, b) for b in BOARDS},
    "m4-portable": Core("m4-portable", board("m4"), portable=True),
}
DEFAULT_CORES = ("m3", "m4", "m4-portable", "m7")
SPARSE_MODES = ("never", "always")


def fc_layers(model: Any) -> list[tuple[str, Any]]:
    """(name, lower.Fc) of the model's FULLY_CONNECTED layers in kernel_bench.c's order."""
    out = []
    if model.front_end is not None:
        out.append(("front_end", model.front_end))
    for i, g in enumerate(model.layers, start=1):
        out += [(f"gru{i}_gx", g.gx), (f"gru{i}_gh", g.gh)]
    out.append(("head", model.head))
    return out


def build(firmware_dir: str | Path, prefix: str, core: str) -> Path:
    """The benchmark ELF of an export for ``core`` (``firmware/Makefile``, cached); its path."""
    c = CORES[core]
    return qemu.build_program("kbench", firmware_dir, c.machine, prefix=prefix,
                              options=c.make_options)  # fmt: skip


@dataclass
class Workload:
    """The inputs of a benchmark run and what the host engine computes from them."""

    x: np.ndarray  # (steps, k·C) int8 step inputs
    layer_in: list[np.ndarray]  # per FC layer (steps, cols) int8
    layer_out: list[np.ndarray]  # per FC layer (steps, rows) int8, host engine
    y: np.ndarray  # (steps, n_outputs) int8 head outputs of the chained steps, host engine
    h: np.ndarray  # (sum of units,) int8 final states, host engine


def _reference_counts(bundle: Any) -> np.ndarray:
    ref = bundle.load_npz("reference.npz")
    if "x_counts" in ref:
        return np.asarray(ref["x_counts"][0])
    return np.asarray(ref["series_counts"][: qemu.SERIES_PIECE])


def workload(bundle_dir: str | Path, fw: Path, prefix: str, steps: int) -> Workload:
    """The first ``steps`` steps of the first reference window, run by the host engine."""
    from edge_runtime.bundle import Bundle
    from firmware_export import host
    from firmware_export.check import step_inputs
    from firmware_export.export import prepare

    bundle = Bundle.open(bundle_dir)
    prep = prepare(bundle)
    m = prep.model
    xs = step_inputs(prep, _reference_counts(bundle))[:steps]
    eng = host.load(fw, prefix, m, debug=True)
    names = [n for n, _ in fc_layers(m)]
    ins: dict[str, list[np.ndarray]] = {n: [] for n in names}
    outs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    h = [np.zeros(u, np.int8) for u in m.units]
    ys = []
    for x in xs:
        eng.trace_reset()
        y, h_new = eng.step(x, h)
        tr = eng.trace()
        t = x
        if m.front_end is not None:
            ins["front_end"].append(x)
            outs["front_end"].append(tr["front_end"])
            t = tr["front_end"]
        for i in range(len(m.layers)):
            ins[f"gru{i + 1}_gx"].append(t)
            outs[f"gru{i + 1}_gx"].append(tr[f"layer{i + 1}.gx"])
            ins[f"gru{i + 1}_gh"].append(h[i])
            outs[f"gru{i + 1}_gh"].append(tr[f"layer{i + 1}.gh"])
            t = tr[f"layer{i + 1}.out_add"]
        ins["head"].append(t)
        outs["head"].append(tr["head"])
        ys.append(y)
        h = h_new
    stack = lambda v: np.ascontiguousarray(np.stack(v), np.int8)  # noqa: E731
    return Workload(x=stack(list(xs)), layer_in=[stack(ins[n]) for n in names],
                    layer_out=[stack(outs[n]) for n in names], y=stack(ys),
                    h=np.concatenate(h).astype(np.int8))  # fmt: skip


def run_elf(elf: Path, core: str, model: Any, w: Workload, reps: int,
            timeout: float = 300.0) -> dict[str, Any]:  # fmt: skip
    """Boot the benchmark; per layer and per step instructions, outputs checked against ``w``."""
    c = CORES[core]
    layers = fc_layers(model)
    steps = len(w.x)
    head = np.array([MAGIC_IN, reps, steps, len(layers), SPIN], "<u4").tobytes()
    head += np.array([[f.rows, f.cols] for _, f in layers], "<u4").tobytes()
    body = w.x.tobytes() + b"".join(a.tobytes() for a in w.layer_in)
    data = qemu.boot(elf, c.machine, "kb_in.bin", head + body, "kb_out.bin", timeout)
    u32 = lambda off: int(np.frombuffer(data, "<u4", 1, off)[0])  # noqa: E731
    if u32(0) != MAGIC_OUT or u32(4) != len(layers) or u32(8) != steps:
        raise RuntimeError(f"{c.machine}: bad output header {data[:12].hex()}")
    spin_ticks = u32(12)
    per_tick = 2 * SPIN / spin_ticks
    if abs(per_tick - qemu.INSTRUCTIONS_PER_TICK) > 0.01 * qemu.INSTRUCTIONS_PER_TICK:
        raise RuntimeError(f"{c.machine}: the calibration loop gives {per_tick:.2f} instructions "
                           f"per SysTick tick, expected {qemu.INSTRUCTIONS_PER_TICK}")  # fmt: skip
    ipt = qemu.INSTRUCTIONS_PER_TICK
    off = 16
    per_layer: dict[str, Any] = {}
    mismatches = 0
    calls = reps * steps
    kernel_total = 0.0
    for j, (name, f) in enumerate(layers):
        t_kernel, t_empty = u32(off), u32(off + 4)
        out = np.frombuffer(data, np.int8, steps * f.rows, off + 8).reshape(steps, f.rows)
        off += 8 + steps * f.rows
        bad = int((out != w.layer_out[j]).sum())
        mismatches += bad
        net = (t_kernel - t_empty) * ipt / calls
        kernel_total += net
        per_layer[name] = {
            "rows": f.rows, "cols": f.cols, "macs": f.rows * f.cols,
            "instructions_per_call": round(net, 1),
            "instructions_per_mac": round(net / (f.rows * f.cols), 3),
            "overhead_per_call": round(t_empty * ipt / calls, 1),
            "output_mismatches": bad,
        }  # fmt: skip
    t_steps = u32(off)
    n_out = model.n_outputs
    y = np.frombuffer(data, np.int8, steps * n_out, off + 4).reshape(steps, n_out)
    off += 4 + steps * n_out
    h = np.frombuffer(data, np.int8, len(w.h), off)
    step_bad = int((y != w.y).sum() + (h != w.h).sum())
    macs = sum(f.rows * f.cols for _, f in layers)
    step_instr = t_steps * ipt / calls
    return {
        "core": c.name, "machine": c.machine, "cpu": c.cpu, "dsp": c.dsp,
        "kernel_instructions_per_step": round(kernel_total, 1),
        "instructions_per_mac": round(kernel_total / macs, 3),
        "step_instructions": round(step_instr, 1),
        "step_instructions_per_mac": round(step_instr / macs, 3),
        "kernel_share_of_step": round(kernel_total / step_instr, 3),
        "layers": per_layer,
        "kernel_output_mismatches": mismatches,
        "step_output_mismatches": step_bad,
        "instructions_per_tick": ipt,
    }  # fmt: skip


def bench(
    bundle_dir: str | Path,
    cores: Sequence[str] = DEFAULT_CORES,
    sparse: Sequence[str] = SPARSE_MODES,
    *,
    steps: int = 64,
    reps: int = 3,
) -> dict[str, Any]:
    """Kernel and step instructions for every (weight storage, core); exports into a temp dir."""
    from edge_runtime.bundle import Bundle
    from firmware_export.export import export, prepare

    for c in cores:
        if c not in CORES:
            raise ValueError(f"core {c!r}: use one of {sorted(CORES)}")
    model = prepare(Bundle.open(bundle_dir)).model
    layers = fc_layers(model)
    macs = sum(f.rows * f.cols for _, f in layers)
    runs = []
    with tempfile.TemporaryDirectory(prefix="tg_kbench_fw_") as tmp:
        for mode in sparse:
            res = export(bundle_dir, Path(tmp) / mode, sparse=mode)
            fw, prefix = Path(res["out"]), res["prefix"]
            storage = {k: v["stored"] for k, v in res["model_data"]["weights"].items()}
            w = workload(bundle_dir, fw, prefix, steps)
            for c in cores:
                r = run_elf(build(fw, prefix, c), c, model, w, reps)
                r["sparse_mode"] = mode
                r["weights"] = storage
                runs.append(r)
    return {
        "method": "qemu-system-arm -icount shift=0 (1 instruction = 1 ns); SysTick at 25 MHz = "
        "40 instructions per tick; kernel = tg_fc_layer_run calls minus the same loop calling "
        "an empty function; instructions per MAC = kernel instructions per step / dense MACs "
        "per step; outputs compared with the host engine, tolerance 0",
        "steps": int(len(w.x)),
        "reps": reps,
        "dense_macs_per_step": macs,
        "layers": {n: {"rows": f.rows, "cols": f.cols} for n, f in layers},
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_export.kernel_bench")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--core", choices=sorted(CORES), action="append",
                        help="core and build (default: all)")  # fmt: skip
    parser.add_argument("--sparse", choices=SPARSE_MODES, action="append",
                        help="weight storage (default: both)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    ns = parser.parse_args(argv)
    why = qemu.missing_tools()
    if why:
        print(f"firmware_export.kernel_bench: {why}", file=sys.stderr)
        return 1
    try:
        rep = bench(ns.bundle, ns.core or DEFAULT_CORES, ns.sparse or SPARSE_MODES,
                    steps=ns.steps, reps=ns.reps)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the CLI contract: one line, non-zero exit
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"firmware_export.kernel_bench: {type(e).__name__}: {reason}", file=sys.stderr)
        return 1
    print(json.dumps(rep, indent=1))
    bad = sum(r["kernel_output_mismatches"] + r["step_output_mismatches"] for r in rep["runs"])
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
