"""Instructions per MAC of the engine's matrix kernels and its step on every emulated board.

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
- every element-wise op of the same steps (per GRU layer: the z/r ADD, the sigmoid
  table, r ⊙ gh_h, the h̃ ADD, the tanh table, h − h̃, z ⊙ (h − h̃), the output ADD;
  the head's SOFTMAX) on its real inputs, timed the same way.
- whole model steps (``tg_model_step``: front end, GRU layers with their
  element-wise ops, head, softmax) chained over the same inputs from the zero
  state, ``reps`` times; and the same steps driven sample by sample through
  ``tg_push_sample`` (after ``tg_reset``), whose extra instructions are the stream's
  bookkeeping (count quantization, the ring of the last k samples, the stride).

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

``step_parts``: where the instructions of one step go, per op kind (the FC layers by
role, ADD, SUB, MUL, the sigmoid and tanh tables, SOFTMAX), each the sum of its calls
in one step, and ``step glue``: the step's instructions less all of them (the calls
themselves, argument set-up, the layer loop). The parts sum to ``step_instructions``;
``stream_bookkeeping_per_step`` comes on top when samples are pushed.

    python -m firmware_export.kernel_bench --bundle B [--target m4 ...] [--sparse never|always ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
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
DEFAULT_CORES = (*(b.core for b in BOARDS), "m4-portable")  # every board, table order
SPARSE_MODES = ("never", "always")
MISMATCH_KEYS = ("kernel_output_mismatches", "step_output_mismatches", "stream_output_mismatches")


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


# The element-wise ops of a GRU layer in tg_gru_step's order: (name, kind, KB_OP_* id,
# input a, input b) with inputs named by the trace role whose (part of the) output they are.
GATE_OPS = (
    ("zr_add", "add", 0, ("gx", "zr"), ("gh", "zr")),
    ("sigmoid", "sigmoid", 1, ("zr_add", "all"), None),
    ("r_mul", "mul", 2, ("sigmoid", "r"), ("gh", "h")),
    ("h_add", "add", 3, ("gx", "h"), ("r_mul", "all")),
    ("tanh", "tanh", 4, ("h_add", "all"), None),
    ("h_sub", "sub", 5, ("h_in", "all"), ("tanh", "all")),
    ("z_mul", "mul", 6, ("sigmoid", "z"), ("h_sub", "all")),
    ("out_add", "add", 7, ("tanh", "all"), ("z_mul", "all")),
)
OP_SOFTMAX = 15
# step_parts rows: FC layers by role, then the element-wise op kinds
PART_NAMES = {"front_end": "front-end FC", "gx": "gx FC", "gh": "gh FC", "head": "head FC",
              "add": "ADD", "sub": "SUB", "mul": "MUL", "sigmoid": "sigmoid table",
              "tanh": "tanh table", "softmax": "SOFTMAX"}  # fmt: skip


def _part(v: np.ndarray, which: str, u: int) -> np.ndarray:
    """A gate's slice of a GRU op output: [z | r | h] thirds of gx/gh, halves of sigmoid."""
    return {"all": v, "zr": v[: 2 * u], "z": v[:u], "r": v[u : 2 * u], "h": v[2 * u :]}[which]


@dataclass
class Op:
    """One element-wise op of a step as the benchmark times it."""

    name: str  # e.g. gru1.zr_add, softmax
    kind: str  # add, sub, mul, sigmoid, tanh, softmax
    op: int  # 16 * layer + KB_OP_* (kernel_bench.c)
    a: np.ndarray  # (steps, na) int8
    b: np.ndarray  # (steps, nb) int8 (nb = 0 for one-input ops)
    y: np.ndarray  # (steps, ny) int8, host engine


@dataclass
class Workload:
    """The inputs of a benchmark run and what the host engine computes from them."""

    x: np.ndarray  # (steps, k·C) int8 step inputs
    layer_in: list[np.ndarray]  # per FC layer (steps, cols) int8
    layer_out: list[np.ndarray]  # per FC layer (steps, rows) int8, host engine
    y: np.ndarray  # (steps, n_outputs) int8 head outputs of the chained steps, host engine
    h: np.ndarray  # (sum of units,) int8 final states, host engine
    ops: list[Op] = field(default_factory=list)  # element-wise ops, in step order
    counts: np.ndarray | None = None  # (samples, C) int16 whose pushes run the same steps


# The benchmark's input and output buffers (KB_MAX_IN, KB_MAX_OUT in kernel_bench.c): boards
# with little RAM build smaller ones (their board.mk) and run fewer steps (fit_steps).
BUFFER_BYTES = {"microbit": (7168, 3072), "netduinoplus2": (65536, 40960)}
DEFAULT_BUFFER_BYTES = (98304, 65536)


def io_bytes(model: Any, w: Workload) -> tuple[int, int]:
    """The bytes kernel_bench.c reads and writes for ``w`` (its KB_MAX_IN/KB_MAX_OUT check)."""
    steps = len(w.x)
    n_in = w.x.nbytes + sum(a.nbytes for a in w.layer_in)
    n_in += sum(op.a.nbytes + op.b.nbytes for op in w.ops)
    n_in = (n_in + 3) // 4 * 4 + (w.counts.nbytes if w.counts is not None else 0)
    n_out = 16 + sum(8 + o.nbytes for o in w.layer_out) + sum(8 + op.y.nbytes for op in w.ops)
    n_out += 4 + w.y.nbytes + len(w.h) + 8 + steps * model.n_outputs
    return n_in, n_out


def fit_steps(model: Any, w: Workload, machine: str) -> int:
    """The most steps of ``w`` whose buffers fit ``machine``'s benchmark build."""
    cap_in, cap_out = BUFFER_BYTES.get(machine, DEFAULT_BUFFER_BYTES)
    n_in, n_out = io_bytes(model, w)
    steps = len(w.x)
    per_in = -(-n_in // steps) + 4  # + alignment slack
    per_out = -(-n_out // steps)
    return max(1, min(steps, cap_in // per_in, cap_out // per_out))


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
    counts = _reference_counts(bundle)
    xs = step_inputs(prep, counts)[:steps]
    counts = counts[: (len(xs) - 1) * m.stride + 1]  # the samples whose pushes run xs
    eng = host.load(fw, prefix, m, debug=True)
    names = [n for n, _ in fc_layers(m)]
    ins: dict[str, list[np.ndarray]] = {n: [] for n in names}
    outs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    op_io: dict[str, list[tuple[np.ndarray, ...]]] = {}
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
        for i, u in enumerate(m.units):
            ins[f"gru{i + 1}_gx"].append(t)
            outs[f"gru{i + 1}_gx"].append(tr[f"layer{i + 1}.gx"])
            ins[f"gru{i + 1}_gh"].append(h[i])
            outs[f"gru{i + 1}_gh"].append(tr[f"layer{i + 1}.gh"])
            role = {k: tr[f"layer{i + 1}.{k}"] for k, *_ in GATE_OPS} | {
                "gx": tr[f"layer{i + 1}.gx"],
                "gh": tr[f"layer{i + 1}.gh"],
                "h_in": h[i],
            }
            for name, _, _, a, b in GATE_OPS:
                io = (
                    _part(role[a[0]], a[1], u),
                    _part(role[b[0]], b[1], u) if b else np.zeros(0, np.int8),
                    role[name],
                )
                op_io.setdefault(f"gru{i + 1}.{name}", []).append(io)  # fmt: skip
            t = tr[f"layer{i + 1}.out_add"]
        ins["head"].append(t)
        outs["head"].append(tr["head"])
        if m.softmax_exp is not None:
            op_io.setdefault("softmax", []).append((tr["head"], np.zeros(0, np.int8), y))
        ys.append(y)
        h = h_new
    stack = lambda v: np.ascontiguousarray(np.stack(v), np.int8)  # noqa: E731
    ops = []
    for i in range(len(m.units)):
        for name, kind, k, _, _ in GATE_OPS:
            io = op_io[f"gru{i + 1}.{name}"]
            ops.append(Op(f"gru{i + 1}.{name}", kind, 16 * i + k,
                          *(stack([v[j] for v in io]) for j in range(3))))  # fmt: skip
    if "softmax" in op_io:
        io = op_io["softmax"]
        ops.append(
            Op("softmax", "softmax", OP_SOFTMAX, *(stack([v[j] for v in io]) for j in range(3)))
        )
    return Workload(x=stack(list(xs)), layer_in=[stack(ins[n]) for n in names],
                    layer_out=[stack(outs[n]) for n in names], y=stack(ys),
                    h=np.concatenate(h).astype(np.int8), ops=ops,
                    counts=np.ascontiguousarray(counts, np.int16))  # fmt: skip


def run_elf(elf: Path, core: str, model: Any, w: Workload, reps: int,
            timeout: float = 300.0) -> dict[str, Any]:  # fmt: skip
    """Boot the benchmark; per layer and per step instructions, outputs checked against ``w``."""
    c = CORES[core]
    layers = fc_layers(model)
    steps = len(w.x)
    counts = w.counts if w.counts is not None else np.zeros((0, model.channels), np.int16)
    head = np.array([MAGIC_IN, reps, steps, len(layers), SPIN], "<u4").tobytes()
    head += np.array([[f.rows, f.cols] for _, f in layers], "<u4").tobytes()
    head += np.array([len(w.ops)], "<u4").tobytes()
    for op in w.ops:
        head += np.array([op.op, op.a.shape[1], op.b.shape[1], op.y.shape[1]], "<u4").tobytes()
    head += np.array([len(counts)], "<u4").tobytes()
    body = w.x.tobytes() + b"".join(a.tobytes() for a in w.layer_in)
    body += b"".join(op.a.tobytes() + op.b.tobytes() for op in w.ops)
    body += bytes(-len(body) % 4) + counts.astype("<i2").tobytes()  # counts 4-byte aligned
    data = qemu.boot(elf, c.machine, "kb_in.bin", head + body, "kb_out.bin", timeout)
    u32 = lambda off: int(np.frombuffer(data, "<u4", 1, off)[0])  # noqa: E731
    if u32(0) != MAGIC_OUT or u32(4) != len(layers) or u32(8) != steps:
        raise RuntimeError(f"{c.machine}: bad output header {data[:12].hex()}")
    spin_ticks = u32(12)
    per_tick = 2 * SPIN / spin_ticks
    ipt = c.board.instructions_per_tick  # 1e9 / the board's SysTick clock (40 at 25 MHz)
    if abs(per_tick - ipt) > 0.01 * ipt:
        raise RuntimeError(f"{c.machine}: the calibration loop gives {per_tick:.2f} instructions "
                           f"per SysTick tick, expected {ipt:.2f}")  # fmt: skip
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
    off += len(w.h)
    step_bad = int((y != w.y).sum() + (h != w.h).sum())
    per_op: dict[str, Any] = {}
    for op in w.ops:
        t_op, t_empty = u32(off), u32(off + 4)
        n = op.y.shape[1]
        out = np.frombuffer(data, np.int8, steps * n, off + 8).reshape(steps, n)
        off += 8 + steps * n
        bad = int((out != op.y).sum())
        mismatches += bad
        per_op[op.name] = {
            "kind": op.kind, "elements": n,
            "instructions_per_call": round((t_op - t_empty) * ipt / calls, 1),
            "overhead_per_call": round(t_empty * ipt / calls, 1),
            "output_mismatches": bad,
        }  # fmt: skip
    t_push, ready = u32(off), u32(off + 4)
    n_out = model.n_outputs
    y_push = np.frombuffer(data, np.int8, steps * n_out, off + 8).reshape(steps, n_out)
    stream_bad = int((y_push != w.y).sum()) + (0 if ready == steps else 1)
    macs = sum(f.rows * f.cols for _, f in layers)
    step_instr = t_steps * ipt / calls
    parts = _step_parts(per_layer, per_op, step_instr)
    return {
        "core": c.name, "machine": c.machine, "cpu": c.cpu, "dsp": c.dsp,
        "kernel_instructions_per_step": round(kernel_total, 1),
        "instructions_per_mac": round(kernel_total / macs, 3),
        "step_instructions": round(step_instr, 1),
        "step_instructions_per_mac": round(step_instr / macs, 3),
        "kernel_share_of_step": round(kernel_total / step_instr, 3),
        "step_parts": parts,
        "stream_bookkeeping_per_step": round((t_push - t_steps) * ipt / calls, 1),
        "layers": per_layer,
        "ops": per_op,
        "kernel_output_mismatches": mismatches,
        "step_output_mismatches": step_bad,
        "stream_output_mismatches": stream_bad,
        "instructions_per_tick": round(ipt, 4),
    }  # fmt: skip


def _step_parts(per_layer: dict[str, Any], per_op: dict[str, Any], step: float) -> dict[str, float]:
    """Instructions of one step per op kind (PART_NAMES order), and the rest as step glue."""
    sums: dict[str, float] = {}
    for name, v in per_layer.items():
        role = name.split("_", 1)[1] if name.startswith("gru") else name
        sums[role] = sums.get(role, 0.0) + v["instructions_per_call"]
    for v in per_op.values():
        sums[v["kind"]] = sums.get(v["kind"], 0.0) + v["instructions_per_call"]
    parts = {PART_NAMES[k]: round(sums[k], 1) for k in PART_NAMES if k in sums}
    parts["step glue"] = round(step - sum(sums.values()), 1)
    return parts


CODE_CFLAGS = ("-std=c99", "-Os", "-mthumb", "-ffunction-sections", "-fdata-sections")


def engine_code_bytes(firmware_dir: str | Path, core: str) -> dict[str, Any]:
    """Flash bytes of the exported engine's code built for ``core``: text + data of each
    engine object (``arm-none-eabi-gcc -Os`` with the board's CPU, ``-DTG_NO_DSP`` for a
    portable build), before link-time garbage collection, as firmware_export.sizes counts
    the M4's."""
    from firmware_export.sizes import engine_sources

    c = CORES[core]
    fw = Path(firmware_dir)
    flags = [*CODE_CFLAGS, f"-mcpu={c.cpu}", *(["-DTG_NO_DSP"] if c.portable else [])]
    per: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="tg_kbench_code_") as tmp:
        for src in engine_sources(fw):
            obj = Path(tmp) / (src.stem + ".o")
            subprocess.run([qemu.CC, *flags, f"-I{fw}", f"-I{fw / 'engine'}", "-c", str(src),
                            "-o", str(obj)], check=True, capture_output=True, text=True)  # fmt: skip
            out = subprocess.run(["arm-none-eabi-size", str(obj)], check=True,
                                 capture_output=True, text=True).stdout  # fmt: skip
            text, data = (int(v) for v in out.splitlines()[1].split()[:2])
            per[src.stem] = text + data
    return {"bytes": sum(per.values()), "by_object": per, "cflags": " ".join(flags)}


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
            loads = {steps: workload(bundle_dir, fw, prefix, steps)}
            for c in cores:
                k = fit_steps(model, loads[steps], CORES[c].machine)
                if k not in loads:
                    loads[k] = workload(bundle_dir, fw, prefix, k)
                w = loads[k]
                r = run_elf(build(fw, prefix, c), c, model, w, reps)
                r["steps"] = k
                r["sparse_mode"] = mode
                r["weights"] = storage
                r["engine_code"] = engine_code_bytes(fw, c)
                runs.append(r)
    return {
        "method": "qemu-system-arm -icount shift=0 (1 instruction = 1 ns); SysTick at the "
        "board's clock (40 instructions per tick at 25 MHz); kernel = tg_fc_layer_run calls minus the same loop calling "
        "an empty function; instructions per MAC = kernel instructions per step / dense MACs "
        "per step; outputs compared with the host engine, tolerance 0",
        "steps": steps,  # per run: "steps" (fewer where a board's RAM holds fewer)
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
    bad = sum(r[k] for r in rep["runs"] for k in MISMATCH_KEYS)
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
