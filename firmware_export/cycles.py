"""Cycles per step, ESTIMATED from the executed instruction mix (not measured).

QEMU counts instructions, not cycles (it models no pipeline, and the DWT cycle counter
reads 0). This module turns one traced step into an estimate of core cycles:

1. **Trace.** The engine runner (``firmware/runner``, the ``-O2`` ELF that
   :mod:`firmware_export.qemu` builds) runs one short window on the board under
   ``qemu-system-arm -singlestep -d exec,nochain``: one log line per executed
   instruction, with its address. The addresses from the first instruction of
   ``tg_window`` to its return are the step's executed instructions.
2. **Mix.** Each address is looked up in ``arm-none-eabi-objdump -d`` of the same ELF and
   put in a class (ALU, load, store, LDM/STM/PUSH/POP with its register count, MUL,
   long multiply, DSP SIMD, divide, IT, branch); a branch is *taken* when the next traced
   address is not the next instruction.
3. **Cycles.** Each instruction costs what the core's published timing tables say
   (:data:`TIMINGS`, the source named per core), with the load/store pipelining and
   address-dependency rules of the Cortex-M3/M4 Technical Reference Manuals, and for
   the Cortex-M7 an assumed dual-issue rule (:func:`instruction_cycles`).

What it leaves out: memory wait states (the figures are for zero-wait-state memory:
TCM, SRAM, or flash behind an accelerator that hits), unaligned 32-bit instruction
fetches, interrupts, caches and branch mispredictions on the Cortex-M7, and the
data-dependent early termination of long multiplies on the Cortex-M3 (the middle of
the published range is used). :data:`PUBLISHED` holds cycle counts published for small
sequences on real cores; :func:`validate` runs each through the same trace and model
and states the error. No goal is judged on this estimate.

    python -m firmware_export cycles --bundle B [--target m4 ...] [--target-file T.toml]
        [--steps 4] [--json OUT]

prints, per core, instructions and estimated cycles per step, cycles per instruction,
and with a target file's clock the estimated ms per step and share of the sample period.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import boards

OBJDUMP = "arm-none-eabi-objdump"
NM = "arm-none-eabi-nm"
QEMU = "qemu-system-arm"
CC = "arm-none-eabi-gcc"
LABEL = "estimate"  # every figure of this module is labelled so in its output
METHOD = (
    "estimate: the instructions of one traced tg_window (QEMU -singlestep -d exec,nochain), "
    "classed from the ELF's disassembly and weighted by the core's published per-instruction "
    "cycle counts (firmware_export/cycles.py TIMINGS); zero-wait-state memory, no interrupts"
)

CONDS = ("eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt",
         "gt", "le", "al")  # fmt: skip
BRANCHES = {"b", "bl", "blx", "bx", "cbz", "cbnz", "tbb", "tbh"}
LONG_MUL = {"umull", "smull", "umlal", "smlal", "umaal", "smlald", "smlaldx", "smlsld",
            "smlsldx", "smlalbb", "smlalbt", "smlaltb", "smlaltt"}  # fmt: skip
MUL = {"mul", "mla", "mls", "smulbb", "smulbt", "smultb", "smultt", "smulwb", "smulwt",
       "smmul", "smmulr", "smmla", "smmlar", "smmls", "smmlsr", "smlabb", "smlabt", "smlatb",
       "smlatt", "smlawb", "smlawt"}  # fmt: skip
DSP = {"smlad", "smladx", "smlsd", "smlsdx", "smuad", "smuadx", "smusd", "smusdx", "sxtb16",
       "sxtab16", "uxtb16", "uxtab16", "sadd16", "ssub16", "sadd8", "ssub8", "uadd8", "usub8",
       "qadd", "qsub", "qdadd", "qdsub", "qadd16", "qsub16", "qadd8", "qsub8", "ssat16",
       "usat16", "sel", "pkhbt", "pkhtb", "usad8", "usada8", "shadd16", "shsub16"}  # fmt: skip
DIV = {"sdiv", "udiv"}
NO_DEST = {"cmp", "cmn", "tst", "teq", "it", "nop", "bkpt", "dsb", "dmb", "isb", "wfi",
           "cpsie", "cpsid", "msr", "svc"}  # fmt: skip


@dataclass(frozen=True)
class Insn:
    """One instruction of the disassembly."""

    addr: int
    size: int  # bytes: 2 or 4
    mnem: str  # as objdump prints it, lower case, without .w/.n
    ops: str  # operands, comment removed
    kind: str  # alu | load | store | ldrd | strd | ldm | stm | mul | mla | mull | dsp | div | it | branch
    nregs: int  # registers moved by LDM/STM/PUSH/POP, 2 for LDRD/STRD, else 0
    writes_pc: bool  # a branch, or a load/pop/mov into pc
    dest: str | None  # register written (first operand), None for stores/compares/branches
    addr_regs: tuple[str, ...]  # base and index registers of a load/store


def _strip_cond(m: str, known: set[str]) -> str:
    if m in known:
        return m
    if len(m) > 2 and m[-2:] in CONDS and m[:-2] in known:
        return m[:-2]
    return m


def _base(m: str) -> str:
    """Mnemonic without condition (IT blocks) and without the flag-setting ``s``."""
    for cand in (m, m[:-2] if m[-2:] in CONDS else m):
        for c in (cand, cand[:-1] if cand.endswith("s") else cand):
            if c in MUL | LONG_MUL | DSP | DIV:
                return c
    return m[:-2] if len(m) > 3 and m[-2:] in CONDS else m


def _regs(text: str) -> list[str]:
    return re.findall(r"\b(r\d+|sp|lr|pc|ip|fp|sl|sb)\b", text)


def _reglist_count(ops: str) -> tuple[int, bool]:
    m = re.search(r"\{([^}]*)\}", ops)
    if not m:
        return 0, False
    n = 0
    pc = False
    for part in m.group(1).split(","):
        part = part.strip()
        if "-" in part:
            a, b = (int(x.strip()[1:]) for x in part.split("-"))
            n += b - a + 1
        elif part:
            n += 1
            pc = pc or part == "pc"
    return n, pc


def classify(addr: int, size: int, mnem: str, ops: str) -> Insn:
    """The class of one instruction for the timing model."""
    m = mnem.lower().removesuffix(".w").removesuffix(".n")
    regs = _regs(ops)
    dest = regs[0] if regs else None
    kind, nregs, writes_pc, addr_regs = "alu", 0, False, ()
    inside = re.search(r"\[([^\]]*)\]", ops)
    if inside:
        addr_regs = tuple(_regs(inside.group(1)))
    b = _strip_cond(m, BRANCHES)
    if b in BRANCHES or (m.startswith("b") and m[1:] in CONDS):
        kind, writes_pc, dest = "branch", True, None
    elif m.startswith("it") and set(m[2:]) <= {"t", "e"}:
        kind, dest = "it", None
    elif m.startswith(("ldm", "pop")):
        nregs, pc = _reglist_count(ops)
        kind, writes_pc, dest = "ldm", pc, None
    elif m.startswith(("stm", "push")):
        nregs, _ = _reglist_count(ops)
        kind, dest = "stm", None
    elif m.startswith("ldrd"):
        kind, nregs = "ldrd", 2
    elif m.startswith("strd"):
        kind, nregs, dest = "strd", 2, None
    elif m.startswith("ldr"):
        kind, writes_pc = "load", dest == "pc"
    elif m.startswith("str"):
        kind, dest = "store", None
    else:
        base = _base(m)
        if base in LONG_MUL:
            kind = "mull"
        elif base in {"mla", "mls"}:
            kind = "mla"
        elif base in MUL:
            kind = "mul"
        elif base in DSP:
            kind = "dsp"
        elif base in DIV:
            kind = "div"
        elif base in NO_DEST or _strip_cond(m, NO_DEST) in NO_DEST:
            dest = None
        if dest == "pc" and kind == "alu":
            writes_pc = True
    return Insn(addr, size, m, ops, kind, nregs, writes_pc, dest, addr_regs)


_LINE = re.compile(r"^\s*([0-9a-f]+):\t((?:[0-9a-f]{4} ?)+)\s*\t(\S+)\s*(.*)$")


def disassemble(elf: str | Path) -> dict[int, Insn]:
    """Every instruction of ``elf`` by address (objdump's view; literal pools are left out)."""
    out = subprocess.run([OBJDUMP, "-d", str(elf)], capture_output=True, text=True, check=True)
    table: dict[int, Insn] = {}
    for line in out.stdout.splitlines():
        m = _LINE.match(line)
        if not m or m.group(3).startswith("."):
            continue
        ops = re.split(r"\s[@;]", m.group(4))[0].strip()
        size = 2 * len(m.group(2).split())
        table[int(m.group(1), 16)] = classify(int(m.group(1), 16), size, m.group(3), ops)
    return table


def symbols(elf: str | Path) -> dict[str, tuple[int, int]]:
    """Function and label symbols of ``elf``: name -> (address without the Thumb bit, size)."""
    out = subprocess.run([NM, "-S", str(elf)], capture_output=True, text=True, check=True)
    syms: dict[str, tuple[int, int]] = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4:
            syms[parts[3]] = (int(parts[0], 16) & ~1, int(parts[1], 16))
        elif len(parts) == 3:
            syms[parts[2]] = (int(parts[0], 16) & ~1, 0)
    return syms


# ---- the timing model ---------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Cycles per instruction class of one core (zero-wait-state memory)."""

    core: str
    source: str  # where the numbers come from
    load: int = 2  # LDR/LDRB/LDRH single
    store: int = 1  # STR single, immediate offset (register offset: store_reg)
    store_reg: int = 2
    pipelined_ls: bool = True  # a load/store after a load/store single costs 1 (M3/M4 rule)
    agu_stall: bool = True  # +1 when the address register was written by the previous ALU op
    mul: int = 1
    mla: int = 1
    mull: int = 1
    dsp: int = 1
    div: int = 7  # 2..12 on the M3/M4 (early termination): middle of the range
    it: int = 1
    refill: int = 2  # P: pipeline refill after a taken branch (TRM: 1..3)
    branch_taken: int | None = None  # fixed cost of a taken branch (M0), else 1 + refill
    bl: int | None = None
    ldm_base: int = 1  # LDM/STM/PUSH/POP: base + N (+ refill with pc)
    ldm_pc_extra: int | None = None  # M0: POP {..., pc} costs 3 + N
    dual_issue: bool = False  # the M7 rule of instruction_cycles
    assumptions: tuple[str, ...] = field(default_factory=tuple)


_M4 = Timing(
    "m4",
    "Arm Cortex-M4 TRM r0p1 (DDI 0439B) §3.3.1 Table 3-1 and §3.3.2 load/store timings",
    assumptions=("P (pipeline refill) = 2, the middle of the TRM's 1..3",),
)
TIMINGS: dict[str, Timing] = {
    "m0": Timing(
        "m0",
        "Arm Cortex-M0 TRM r0p0 (DDI 0432C) §3.3 Table 3-1",
        load=2,
        store=2,
        store_reg=2,
        pipelined_ls=False,
        agu_stall=False,
        mul=1,
        mla=1,
        mull=1,
        div=1,
        branch_taken=3,
        bl=4,
        ldm_pc_extra=2,
        assumptions=(
            "the single-cycle multiplier option; 64-bit products are libgcc "
            "calls, traced like any code",
        ),
    ),  # fmt: skip
    "m3": Timing(
        "m3",
        "Arm Cortex-M3 TRM r2p1 (DDI 0337I) §18.2 Table 18-1 and load/store timings",
        mla=2,
        mull=4,
        assumptions=(
            "P (pipeline refill) = 2, the middle of the TRM's 1..3",
            "UMULL/SMULL/UMLAL/SMLAL: 4 cycles, the middle of 3..5 / 4..7 "
            "(early termination depends on the operands)",
        ),
    ),  # fmt: skip
    "m4": _M4,
    "stm32f405": Timing(
        "stm32f405",
        _M4.source,
        assumptions=(
            *_M4.assumptions,
            "zero flash wait states (at 168 MHz the part has 5; "
            "the ART accelerator hides them only for code it holds)",
        ),
    ),  # fmt: skip
    "m33": Timing(
        "m33",
        "no cycle table is published for the Cortex-M33 TRM; the Cortex-M4 TRM's "
        "(DDI 0439B Table 3-1) are used: both are 3-stage in-order Armv7E-M/Armv8-M Mainline",
        assumptions=("Cortex-M4 timings", *_M4.assumptions),
    ),  # fmt: skip
    "m55": Timing(
        "m55",
        "Cortex-M55 scalar timings are not published as a table; the Cortex-M4 TRM's "
        "(DDI 0439B Table 3-1) are used",
        assumptions=(
            "Cortex-M4 timings for the scalar path (the engine runs no Helium code)",
            *_M4.assumptions,
        ),
    ),  # fmt: skip
    "m7": Timing(
        "m7",
        "Arm Cortex-M7 TRM r1p2 (DDI 0489F) §1: 6-stage superscalar, dual issue; no cycle "
        "table is published, the rule below is assumed",
        load=1,
        store=1,
        store_reg=1,
        pipelined_ls=False,
        agu_stall=False,
        it=0,
        refill=0,
        dual_issue=True,
        assumptions=(
            "two neighbouring instructions issue together unless: both access "
            "memory, both multiply (MUL/MAC/DSP), either is LDM/STM/PUSH/POP, "
            "LDRD/STRD or a divide, or the second reads the first's destination",
            "every branch predicted (taken branch: no refill)",
            "no load-use stalls, caches always hit (TCM-like memory)",
        ),
    ),  # fmt: skip
}


def instruction_cycles(stream: Sequence[Insn], taken: Sequence[bool], t: Timing) -> np.ndarray:
    """Estimated cycles of each instruction of ``stream`` (executed order) on core ``t``.

    ``taken[i]``: control left instruction i for anything but the next address. With
    ``t.dual_issue`` an instruction that issues with the one before it costs 0.
    """
    cost = np.zeros(len(stream), np.int64)
    prev: Insn | None = None
    paired = False
    for i, ins in enumerate(stream):
        k = ins.kind
        c = 1
        refill = 1 + t.refill
        if k == "load":
            c = t.load
            if ins.writes_pc:
                c = t.load + t.refill
        elif k == "store":
            c = t.store if len(ins.addr_regs) <= 1 else t.store_reg
        elif k in ("ldrd", "strd"):
            c = 1 + ins.nregs if not t.dual_issue else 1
        elif k in ("ldm", "stm"):
            n = ins.nregs if not t.dual_issue else math.ceil(ins.nregs / 2)
            c = t.ldm_base + n
            if ins.writes_pc:
                c += t.ldm_pc_extra if t.ldm_pc_extra is not None else t.refill
        elif k == "mul":
            c = t.mul
        elif k == "mla":
            c = t.mla
        elif k == "mull":
            c = t.mull
        elif k == "dsp":
            c = t.dsp
        elif k == "div":
            c = t.div
        elif k == "it":
            c = t.it
        elif k == "branch":
            if ins.mnem in ("tbb", "tbh"):
                c = 2 + 1 + t.refill
            elif not taken[i]:
                c = 1
            elif ins.mnem.startswith("bl"):
                c = t.bl if t.bl is not None else refill
            else:
                c = t.branch_taken if t.branch_taken is not None else refill
        elif ins.writes_pc:
            c = refill
        if prev is not None and k in ("load", "store") and not t.dual_issue:
            if t.pipelined_ls and prev.kind in ("load", "store") and prev.dest not in ins.addr_regs:
                c = 1  # pipelined with the load/store before it
            elif t.agu_stall and prev.kind in ("alu", "mul", "dsp") and prev.dest in ins.addr_regs:
                c += 1  # address computed by the instruction before: no forwarding path
        if t.dual_issue and prev is not None and not paired and _pairs(prev, ins):
            c = 0
            paired = True
        else:
            paired = False
        cost[i] = c
        prev = ins
    return cost


def _pairs(a: Insn, b: Insn) -> bool:
    """The assumed Cortex-M7 dual-issue rule for neighbours ``a`` then ``b``."""
    mem = ("load", "store", "ldrd", "strd", "ldm", "stm")
    mac = ("mul", "mla", "mull", "dsp")
    if a.kind in ("ldm", "stm", "ldrd", "strd", "div") or b.kind in (
        "ldm",
        "stm",
        "ldrd",
        "strd",
        "div",
    ):
        return False
    if (a.kind in mem and b.kind in mem) or (a.kind in mac and b.kind in mac):
        return False
    if a.writes_pc:
        return False
    return a.dest is None or a.dest not in _regs(b.ops)


# ---- tracing ------------------------------------------------------------------------

_PC = re.compile(rb"\[[0-9a-f]+/([0-9a-f]+)/")


def qemu_trace(
    elf: str | Path, machine: str, files: dict[str, bytes], timeout: float = 300.0
) -> np.ndarray:
    """Addresses of every instruction ``elf`` executes on ``machine`` (one per line of
    ``-singlestep -d exec,nochain``), with ``files`` in its semihosting folder."""
    with tempfile.TemporaryDirectory(prefix="tg_trace_") as tmp:
        d = Path(tmp)
        for name, data in files.items():
            (d / name).write_bytes(data)
        log = d / "trace.log"
        cmd = [QEMU, "-M", machine, "-display", "none", "-monitor", "none", "-serial", "none",
               "-nodefaults", "-semihosting-config", "enable=on,target=native",
               "-icount", "shift=0,align=off,sleep=off", "-singlestep", "-d", "exec,nochain",
               "-D", str(log), "-kernel", str(Path(elf).resolve())]  # fmt: skip
        proc = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{machine}: trace run exited {proc.returncode}: {proc.stderr.strip()}"
            )
        pcs = [int(m.group(1), 16) for m in _PC.finditer(log.read_bytes())]
    return np.asarray(pcs, np.int64)


@dataclass
class Mix:
    """Executed instructions of a traced region and their estimated cycles."""

    insns: list[Insn]
    taken: list[bool]

    def cycles(self, core: str) -> np.ndarray:
        return instruction_cycles(self.insns, self.taken, TIMINGS[core])


def mix_of(pcs: np.ndarray, table: dict[int, Insn]) -> Mix:
    """The instructions at ``pcs`` (executed order) and whether each one's successor in
    the trace is not the next instruction (a taken branch)."""
    missing = [int(p) for p in pcs if int(p) not in table]
    if missing:
        raise RuntimeError(f"traced address 0x{missing[0]:x} is not in the disassembly")
    insns = [table[int(p)] for p in pcs]
    taken = [
        i + 1 < len(insns) and int(pcs[i + 1]) != ins.addr + ins.size for i, ins in enumerate(insns)
    ]
    return Mix(insns, taken)


def window_mix(elf: str | Path, board: str, window: np.ndarray) -> Mix:
    """The instructions of one ``tg_window`` call of the runner ``elf`` on ``board``
    over ``window`` (samples, channels) int16, from its first instruction to its return."""
    from firmware_export.qemu import MAGIC_IN

    w = np.ascontiguousarray(window, np.int16)[None]
    head = np.array([MAGIC_IN, *w.shape], "<u4").tobytes()
    table = disassemble(elf)
    entry = symbols(elf)["tg_window"][0]
    calls = [i for i in table.values() if i.mnem == "bl" and i.ops.endswith("<tg_window>")]
    if len(calls) != 1:
        raise RuntimeError(f"{elf}: expected one call of tg_window, found {len(calls)}")
    ret = calls[0].addr + calls[0].size
    pcs = qemu_trace(elf, boards.board(board).name, {"tg_in.bin": head + w.astype("<i2").tobytes()})
    start = int(np.flatnonzero(pcs == entry)[0])
    end = start + int(np.flatnonzero(pcs[start:] == ret)[0])
    return mix_of(pcs[start:end], table)


# ---- the estimate of a bundle's step --------------------------------------------------


def engine_code_bytes(elf: str | Path) -> dict[str, int]:
    """Code bytes of the engine in ``elf``: its ``tg_*`` functions (not the board's reset
    handler) and the library routines they call (``__aeabi_lmul`` on ARMv6-M)."""
    syms = symbols(elf)
    table = disassemble(elf)
    funcs = {n: v for n, v in syms.items() if n.startswith("tg_") and n != "tg_reset_handler"}
    spans = [(a, a + s) for a, s in funcs.values()]
    helpers: set[str] = set()
    for ins in table.values():
        if ins.mnem == "bl" and any(a <= ins.addr < b for a, b in spans):
            name = ins.ops.rsplit("<", 1)[-1].rstrip(">")
            if not name.startswith("tg_") and "+" not in name:
                helpers.add(name)
    engine = sum(s for _, s in funcs.values())
    lib = sum(syms[h][1] for h in sorted(helpers) if h in syms)
    return {"engine_functions": engine, "library_helpers": lib, "total": engine + lib,
            "helpers": sorted(helpers)}  # type: ignore[dict-item]  # fmt: skip


def estimate(elf: str | Path, core: str, window: np.ndarray, steps: int) -> dict[str, Any]:
    """The estimate for one ``tg_window`` of the runner ``elf`` on ``core``'s board:
    ``window`` (samples, channels) makes ``steps`` steps. Everything is per step."""
    b = boards.board(core)
    mix = window_mix(elf, b.name, window)
    per = mix.cycles(b.core)
    kinds = sorted({i.kind for i in mix.insns})
    by_class = {
        k: {
            "instructions": sum(1 for i in mix.insns if i.kind == k) / steps,
            "cycles": float(sum(int(c) for i, c in zip(mix.insns, per, strict=True) if i.kind == k))
            / steps,
        }
        for k in kinds
    }
    taken = sum(1 for i, t in zip(mix.insns, mix.taken, strict=True) if i.kind == "branch" and t)
    n, cyc = len(mix.insns) / steps, float(per.sum()) / steps
    t = TIMINGS[b.core]
    return {
        "label": LABEL,
        "core": b.core,
        "board": b.name,
        "cpu": b.cpu,
        "steps_traced": steps,
        "instructions_per_step": n,
        "cycles_per_step_estimate": cyc,
        "cycles_per_instruction_estimate": cyc / n,
        "taken_branches_per_step": taken / steps,
        "by_class": by_class,
        "method": METHOD,
        "timing_source": t.source,
        "assumptions": list(t.assumptions),
    }


def with_clock(
    est: dict[str, Any], clock_hz: float, steps_per_second: float | None
) -> dict[str, Any]:
    """``est`` plus the estimated time per step at ``clock_hz`` and, given the steps per
    second (sample rate ÷ stride), the estimated share of the sample period."""
    ms = est["cycles_per_step_estimate"] / clock_hz * 1e3
    out = {**est, "clock_hz": clock_hz, "ms_per_step_estimate": ms}
    if steps_per_second:
        out["steps_per_second"] = steps_per_second
        out["period_share_estimate"] = ms * 1e-3 * steps_per_second
    return out


# ---- validation against published cycle counts -----------------------------------------


@dataclass(frozen=True)
class Published:
    """A cycle count published for a small sequence on a real core."""

    core: str
    name: str
    body: str  # Thumb assembly: the measured region, between labels tg_v_begin and tg_v_end
    cycles: float  # published cycles of one pass over the region
    passes: int  # how often the program runs the region (a loop's iterations)
    source: str


# The loops count down r0 by the loop's length in cycles (so the author's calibration
# reads as cycles per iteration); r1/r2/r3 point at RAM.
PUBLISHED: tuple[Published, ...] = (
    Published("m0", "SUBS/BHI delay loop, code in RAM (STM32F072, Cortex-M0), per iteration",
              "1: subs r0, #4\n bhi 1b", 4.0, 256,
              "A. van der Linden (blaatschaap.be), 'Wait a microsecond' (2023): Thumb loop "
              "'sub r0, #4 / bhi', 1 + 3 cycles, calibrated on an STM32F072 from RAM"),
    Published("m3", "SUBS/BHI delay loop, code in RAM (STM32F103, Cortex-M3), per iteration",
              "1: subs r0, #4\n bhi 1b", 4.0, 256,
              "A. van der Linden (blaatschaap.be), 'Wait a microsecond' (2023): Thumb-2 loop "
              "'subs r0, 4 / bhi', measured 4 cycles per iteration on an STM32F103 from RAM"),
    Published("m4", "LDR R0,[R1]; LDR R1,[R2] (pipelined loads)",
              "ldr r0, [r1]\n ldr r1, [r2]", 3.0, 1,
              "Arm Cortex-M4 TRM r0p1 (DDI 0439B) §3.3.2 'Load/store timings' ('normally "
              "three cycles total'); also in TI SWCU185G, Cortex-M4 instruction timing"),
    Published("m4", "LDR R0,[R1,R2]; STR R0,[R3,#20] (load then store)",
              "ldr r0, [r1, r2]\n str r0, [r3, #20]", 3.0, 1,
              "Arm Cortex-M4 TRM r0p1 (DDI 0439B) §3.3.2 'Load/store timings' ('normally "
              "three cycles total'); also in TI SWCU185G"),
)  # fmt: skip


def _program(p: Published, b: boards.Board) -> str:
    """The test program: vector table, set-up, the region ``passes`` times, semihosting exit.
    r1 points at RAM, r2 = 4 (an offset, and a readable address), r3 = r1."""
    ram = b.ram_base
    return f"""    .syntax unified
    .thumb
    .text
    .word {ram + 0x1000:#x}
    .word tg_v_start + 1
    .global tg_v_start, tg_v_begin, tg_v_end
    .thumb_func
tg_v_start:
    ldr r1, ={ram + 0x100:#x}
    movs r2, #4
    mov r3, r1
    ldr r0, ={4 * p.passes}
    nop
tg_v_begin:
    {p.body}
tg_v_end:
    nop
    movs r0, #0x18
    ldr r1, =0x20026
    bkpt 0xab
    b .
    .ltorg
"""


def run_published(p: Published) -> dict[str, Any]:
    """Trace ``p``'s sequence on its core's board, estimate it and compare (error in %)."""
    b = boards.board(p.core)
    with tempfile.TemporaryDirectory(prefix="tg_cyc_") as tmp:
        src, elf = Path(tmp) / "v.S", Path(tmp) / "v.elf"
        src.write_text(_program(p, b))
        subprocess.run([CC, f"-mcpu={b.cpu}", "-mthumb", "-nostdlib", "-nostartfiles",
                        f"-Wl,-Ttext={b.flash_base:#x}", "-Wl,-e,tg_v_start",
                        str(src), "-o", str(elf)], check=True, capture_output=True)  # fmt: skip
        table = disassemble(elf)
        syms = symbols(elf)
        pcs = qemu_trace(elf, b.name, {})
        lo, hi = syms["tg_v_begin"][0], syms["tg_v_end"][0]
        mix = mix_of(pcs, table)
        per = mix.cycles(b.core)
        inside = [lo <= i.addr < hi for i in mix.insns]
        est = float(per[inside].sum()) / p.passes
    return {"core": p.core, "board": b.name, "name": p.name, "published_cycles": p.cycles,
            "estimated_cycles": est, "error_percent": 100.0 * (est - p.cycles) / p.cycles,
            "source": p.source}  # fmt: skip


def validate() -> list[dict[str, Any]]:
    """Every :data:`PUBLISHED` sequence, estimated the way a step is, against its count."""
    return [run_published(p) for p in PUBLISHED]


# ---- a bundle, per core, and the command line -------------------------------------------

DEFAULT_STEPS = 4  # steps traced per core: ~35k instructions each on the M4 (HAR)


def estimate_bundle(
    bundle_dir: str | Path, core: str, steps: int = DEFAULT_STEPS
) -> dict[str, Any]:
    """The estimate for the bundle's step on ``core``: the first ``steps`` steps of its
    first reference window (a forecaster: of its test series), from a zero state; with
    the engine's code bytes in that core's runner ELF."""
    from edge_runtime.bundle import Bundle
    from firmware_export import qemu
    from firmware_export.export import export, prepare

    bundle = Bundle.open(bundle_dir)
    m = prepare(bundle).model
    ref = bundle.load_npz("reference.npz")
    series = ref["x_counts"][0] if "x_counts" in ref else ref["series_counts"]
    window = series[: steps * m.stride]
    result = export(bundle_dir)
    elf = qemu.build_firmware(result["out"], result["prefix"], core)
    est = estimate(elf, core, window, steps)
    est["engine_code_bytes"] = engine_code_bytes(elf)
    est["stride"] = m.stride
    return est


def render(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of estimates (every cycle column says estimate)."""
    clock = any("clock_hz" in r for r in rows)
    head = ["core", "board", "instructions/step", "cycles/step (estimate)", "CPI (estimate)",
            "engine code bytes"]  # fmt: skip
    if clock:
        head += ["ms/step (estimate)", "share of sample period (estimate)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["core"], r["board"], f"{r['instructions_per_step']:,.0f}",
                 f"{r['cycles_per_step_estimate']:,.0f}",
                 f"{r['cycles_per_instruction_estimate']:.2f}",
                 f"{r['engine_code_bytes']['total']:,}"]  # fmt: skip
        if clock:
            share = r.get("period_share_estimate")
            cells += [f"{r['ms_per_step_estimate']:.3f}",
                      "n/a" if share is None else f"{100 * share:.2f}%"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Cycles and times are an {METHOD}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from firmware_export.qemu import missing_tools

    parser = argparse.ArgumentParser(prog="python -m firmware_export cycles")
    parser.add_argument("--bundle", help="bundle folder (its export and runner)")
    parser.add_argument("--target", action="append",
                        help="a board or core alias (repeatable; default: every board)")  # fmt: skip
    parser.add_argument("--target-file", help="configs/targets/*.toml: its clock gives ms per "
                        "step and the share of the sample period")  # fmt: skip
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="steps traced per core")
    parser.add_argument("--validate", action="store_true",
                        help="compare the method with the published cycle counts of PUBLISHED")  # fmt: skip
    parser.add_argument("--json", help="write the rows as JSON here")
    ns = parser.parse_args(argv)
    why = missing_tools()
    if why:
        print(f"firmware_export cycles: {why}", file=sys.stderr)
        return 1
    try:
        if ns.validate:
            checks = validate()
            for c in checks:
                print(f"{c['core']}: {c['name']}: published {c['published_cycles']:g}, "
                      f"estimate {c['estimated_cycles']:.2f} ({c['error_percent']:+.1f}%)")  # fmt: skip
            if ns.json:
                Path(ns.json).write_text(json.dumps(checks, indent=1) + "\n")
            if not ns.bundle:
                return 0
        if not ns.bundle:
            parser.error("--bundle is required (or --validate alone)")
        if ns.steps < 1:
            parser.error(f"--steps: expected a count >= 1, found {ns.steps}")
        target = None
        if ns.target_file:
            from edge_runtime.targets import load_target

            target = load_target(ns.target_file)
        if ns.target:
            cores = [boards.board(t).core for t in ns.target]
        elif target is not None and target.board is not None:
            cores = [target.board.core]  # the core whose counts stand for the target's chip
        else:
            cores = [b.core for b in boards.BOARDS]
        rows = []
        for c in cores:
            est = estimate_bundle(ns.bundle, c, ns.steps)
            if target is not None:
                rate = target.sample_rate_hz or bundle_rate(ns.bundle)
                est = with_clock(est, target.clock_hz, rate / est["stride"] if rate else None)
                est["target_file"] = target.path
            rows.append(est)
        print(render(rows))
        if ns.json:
            Path(ns.json).write_text(json.dumps(rows, indent=1) + "\n")
    except Exception as e:  # noqa: BLE001 - the CLI contract: one line, non-zero exit
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"firmware_export cycles: {type(e).__name__}: {reason}", file=sys.stderr)
        return 1
    return 0


def bundle_rate(bundle_dir: str | Path) -> float | None:
    """The bundle's sensor sample rate (manifest dataset.sample_rate), or None."""
    from edge_runtime.bundle import Bundle

    rate = Bundle.open(bundle_dir).manifest.get("dataset", {}).get("sample_rate")
    return float(rate) if rate else None


if __name__ == "__main__":
    sys.exit(main())
