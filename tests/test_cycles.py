"""The cycle ESTIMATE (firmware_export/cycles.py): instruction classes and per-core costs
on hand-made streams, the published cycle counts it is checked against, and on the
emulated boards a traced tg_window whose instruction count equals the SysTick count of
the same window. No figure here is a measurement of cycles; see the module's docstring.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_firmware import arm_tools_missing

from edge_runtime import boards
from firmware_export import cycles

MISSING = arm_tools_missing() or (
    None if shutil.which("qemu-system-arm") else "qemu-system-arm not found"
)


def emulated_mark(f):
    """Slow, and skipped without the cross compiler or QEMU."""
    skip = pytest.mark.skipif(MISSING is not None, reason=f"emulator run impossible: {MISSING}")
    return pytest.mark.slow(skip(f))


def ins(mnem: str, ops: str = "", addr: int = 0, size: int = 2) -> cycles.Insn:
    return cycles.classify(addr, size, mnem, ops)


def cost(stream: list[cycles.Insn], taken: list[bool], core: str) -> list[int]:
    return cycles.instruction_cycles(stream, taken, cycles.TIMINGS[core]).tolist()


def test_instructions_fall_in_their_classes() -> None:
    want = {
        ("ldr", "r0, [r1, #4]"): "load", ("ldrsb.w", "r3, [r2, r1]"): "load",
        ("str", "r0, [sp, #8]"): "store", ("ldrd", "r2, r3, [r4]"): "ldrd",
        ("push", "{r4, r5, lr}"): "stm", ("pop", "{r4, pc}"): "ldm",
        ("ldmia.w", "r0!, {r1, r2, r3}"): "ldm", ("smlad", "r0, r1, r2, r0"): "dsp",
        ("sxtb16", "r1, r2, ror #8"): "dsp", ("smull", "r0, r1, r2, r3"): "mull",
        ("muls", "r0, r1, r0"): "mul", ("mla", "r0, r1, r2, r3"): "mla",
        ("bne.n", "1f0 <x>"): "branch", ("bl", "1874 <tg_window>"): "branch",
        ("cbz", "r0, 20 <x>"): "branch", ("ite", "ge"): "it", ("movge", "r0, #1"): "alu",
        ("sdiv", "r0, r1, r2"): "div", ("adds", "r0, #1"): "alu",
    }  # fmt: skip
    for (m, ops), kind in want.items():
        assert ins(m, ops).kind == kind, (m, ops)
    assert ins("pop", "{r4, r5, r6, pc}").nregs == 4 and ins("pop", "{r4, pc}").writes_pc
    assert ins("push", "{r4-r7, lr}").nregs == 5
    assert ins("ldr", "r0, [r1, r2]").addr_regs == ("r1", "r2")


def test_costs_follow_the_published_tables() -> None:
    ldr, ldr2 = ins("ldr", "r0, [r1]"), ins("ldr", "r1, [r2]")
    dep = ins("ldr", "r1, [r0]")  # address from the first load: not pipelined
    assert cost([ldr, ldr2], [False] * 2, "m4") == [2, 1]  # M4 TRM: three cycles total
    assert cost([ldr, dep], [False] * 2, "m4") == [2, 2]
    assert cost([ldr, ldr2], [False] * 2, "m0") == [2, 2]  # no pipelining on the M0
    add, use = ins("adds", "r3, #4"), ins("ldr", "r0, [r3]")
    assert cost([add, use], [False] * 2, "m4") == [1, 3]  # no forwarding to the address
    bne = ins("bne", "0 <x>")
    assert cost([bne], [True], "m0") == [3] and cost([bne], [False], "m0") == [1]
    assert cost([bne], [True], "m3") == [3]  # 1 + P, P = 2
    pop = ins("pop", "{r4, r5, pc}")
    assert cost([pop], [True], "m0") == [6]  # M0 TRM: POP and return, 4 + N (N: low regs)
    assert cost([pop], [True], "m4") == [6]  # 1 + N + P (N: the list, pc included)
    umull = ins("umull", "r0, r1, r2, r3")
    assert cost([umull], [False], "m3") == [4] and cost([umull], [False], "m4") == [1]
    # the assumed M7 dual issue: independent ALU + load pair, a dependent pair does not
    a, b = ins("adds", "r0, #1"), ins("ldr", "r2, [r3]")
    assert cost([a, b], [False] * 2, "m7") == [1, 0]
    assert cost([a, ins("ldr", "r2, [r0]")], [False] * 2, "m7") == [1, 1]


def test_published_counts_cover_two_cores_and_name_their_source() -> None:
    assert len(cycles.PUBLISHED) >= 3
    assert len({p.core for p in cycles.PUBLISHED}) >= 2
    for p in cycles.PUBLISHED:
        assert p.source and p.cycles > 0 and p.core in cycles.TIMINGS


def test_every_board_has_a_timing_with_its_source() -> None:
    for b in boards.BOARDS:
        t = cycles.TIMINGS[b.core]
        assert t.source, b.core


def test_clock_gives_time_and_share_of_period() -> None:
    est = {"cycles_per_step_estimate": 40_000.0}
    out = cycles.with_clock(est, 80e6, 25.0)  # 50 Hz, stride 2
    assert out["ms_per_step_estimate"] == pytest.approx(0.5)
    assert out["period_share_estimate"] == pytest.approx(0.0125)
    assert "period_share_estimate" not in cycles.with_clock(est, 80e6, None)


@emulated_mark
def test_the_method_against_published_cycle_counts() -> None:
    """Tolerance 5 %: the loops' one error is their last, not-taken branch (-0.2 % over
    256 iterations); the TRM's load/store examples come out exact. A larger error means
    the trace, the classes or the tables changed."""
    for r in cycles.validate():
        assert abs(r["error_percent"]) <= 5.0, r


@pytest.fixture(scope="module")
def bm(engine_bm: Path) -> Path:
    return engine_bm


@pytest.mark.parametrize("core", ["m0", "m4", "m7"])
@emulated_mark
def test_traced_window_matches_the_systick_count(bm: Path, core: str) -> None:
    """The trace counts every instruction of tg_window; SysTick counts the same window in
    ticks. They agree within one tick plus the few instructions of the bracketing."""
    from edge_runtime.bundle import Bundle
    from firmware_export import qemu
    from firmware_export.export import export

    window = Bundle.open(bm).load_npz("reference.npz")["x_counts"][0][:8]
    result = export(bm)
    elf = qemu.build_firmware(result["out"], result["prefix"], core)
    mix = cycles.window_mix(elf, core, window)
    res = qemu.run_elf(elf, core, window[None])
    tick = boards.board(core).instructions_per_tick
    assert abs(len(mix.insns) - int(res.instructions[0])) <= tick + 16
    per = mix.cycles(boards.board(core).core)
    cpi = per.sum() / len(per)
    if core == "m7":
        assert 0.5 <= cpi < 1.0  # dual issue
    else:
        assert 1.0 < cpi < 2.0  # loads, taken branches
    assert np.all(per >= 0)


@emulated_mark
def test_estimate_of_a_bundle_is_labelled(bm: Path) -> None:
    est = cycles.estimate_bundle(bm, "m4", steps=2)
    assert est["label"] == "estimate" and "estimate" in est["method"]
    assert est["cycles_per_step_estimate"] > est["instructions_per_step"] > 0
    assert sum(v["instructions"] for v in est["by_class"].values()) == pytest.approx(
        est["instructions_per_step"]
    )
    assert est["engine_code_bytes"]["total"] > 1000
    assert "estimate" in cycles.render([est])
