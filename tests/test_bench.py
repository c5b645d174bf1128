"""The kernel benchmark under QEMU and ``python -m pipeline.bench`` on the small
BasicMotions bundle.

What is compared: the emulated kernels' and steps' outputs with the host engine
(tolerance 0, and a doctored expectation must be caught); instruction counts only
against each other where the work makes the order certain (the SMLAD path does
two multiply-accumulates per instruction where the portable C does one), never
against wall-clock time; the reports' structure and the
ratios they state against the figures beside them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import Bundle
from firmware_export import kernel_bench, qemu
from firmware_export.export import export, prepare

MISSING = qemu.missing_tools()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MISSING is not None, reason=f"emulator run impossible: {MISSING}"),
]
STEPS, REPS = 8, 2


@pytest.fixture(scope="module")
def kb(engine_bm: Path) -> dict:
    return kernel_bench.bench(engine_bm, ("m3", "m4", "m4-portable"), ("never", "always"),
                              steps=STEPS, reps=REPS)  # fmt: skip


def test_kernel_outputs_equal_the_host_engine(kb: dict) -> None:
    assert len(kb["runs"]) == 6
    for r in kb["runs"]:
        for key in kernel_bench.MISMATCH_KEYS:
            assert r[key] == 0, (key, r["core"], r["sparse_mode"])
        assert r["instructions_per_tick"] == qemu.INSTRUCTIONS_PER_TICK
        macs = sum(v["macs"] for v in r["layers"].values())
        assert macs == kb["dense_macs_per_step"]
        # per MAC = kernel instructions per step / dense MACs (rounding of the report)
        assert r["instructions_per_mac"] == pytest.approx(
            r["kernel_instructions_per_step"] / macs, abs=1e-3
        )
        # the matrix kernels are part of a step, so they take less than the step
        assert 0 < r["kernel_instructions_per_step"] < r["step_instructions"]
        # where the step's instructions go: every op kind plus the step's glue, summing to
        # the step (each part rounded to 0.1)
        parts = r["step_parts"]
        assert sum(parts.values()) == pytest.approx(r["step_instructions"], abs=0.1 * len(parts))
        assert {"gx FC", "gh FC", "head FC", "ADD", "SUB", "MUL", "sigmoid table"} <= set(parts)
        assert all(v["output_mismatches"] == 0 for v in r["ops"].values())
        assert r["stream_bookkeeping_per_step"] > 0


def test_the_other_boards_run_the_benchmark_bit_identical(engine_bm: Path) -> None:
    """The boards off the MPS2 map (own clocks, the micro:bit's 16 KB RAM): outputs equal
    the host engine's (tolerance 0), SysTick read at each board's own clock (the
    calibration loop inside run_elf must agree within 1 %), the steps cut to fit RAM."""
    from edge_runtime import boards

    cores = ("m0", "m33", "m55", "stm32f405")
    rep = kernel_bench.bench(engine_bm, cores, ("never",), steps=STEPS, reps=1)
    assert [r["core"] for r in rep["runs"]] == list(cores)
    for r in rep["runs"]:
        for key in kernel_bench.MISMATCH_KEYS:
            assert r[key] == 0, (key, r["core"])
        b = boards.board(r["core"])
        assert r["instructions_per_tick"] == round(b.instructions_per_tick, 4)
        assert 1 <= r["steps"] <= STEPS
        assert 0 < r["kernel_instructions_per_step"] < r["step_instructions"]
    m0 = rep["runs"][0]
    assert not m0["dsp"] and m0["engine_code"]["cflags"].endswith("-mcpu=cortex-m0")


def test_dsp_path_executes_fewer_instructions_than_portable_c(kb: dict) -> None:
    runs = {(r["core"], r["sparse_mode"]): r for r in kb["runs"]}
    for mode in ("never", "always"):
        m3, m4, m4c = (runs[(c, mode)] for c in ("m3", "m4", "m4-portable"))
        assert m4["dsp"] and not m4c["dsp"] and not m3["dsp"]
        assert m4["kernel_instructions_per_step"] < m4c["kernel_instructions_per_step"]
        assert m4["kernel_instructions_per_step"] < m3["kernel_instructions_per_step"]


def test_a_wrong_kernel_output_is_caught(engine_bm: Path, tmp_path: Path) -> None:
    res = export(engine_bm, tmp_path / "fw", sparse="never")
    fw, prefix = Path(res["out"]), res["prefix"]
    model = prepare(Bundle.open(engine_bm)).model
    w = kernel_bench.workload(engine_bm, fw, prefix, 4)
    w.layer_out[0] = w.layer_out[0].copy()
    w.layer_out[0][1, 0] ^= np.int8(1)  # one expected output off by one bit
    w.y = w.y.copy()
    w.y[-1, 0] ^= np.int8(1)
    r = kernel_bench.run_elf(kernel_bench.build(fw, prefix, "m4"), "m4", model, w, 1)
    assert r["kernel_output_mismatches"] == 1
    assert r["step_output_mismatches"] == 1
    assert r["stream_output_mismatches"] == 1  # the same step, run through tg_push_sample


def test_pipeline_bench_writes_json_and_markdown(engine_bm: Path, tmp_path: Path) -> None:
    from pipeline import bench

    b = tmp_path / "bm"
    shutil.copytree(engine_bm, b)
    rep = bench.bench(b, seconds=0.3, with_window=False, cores=("m4",), reps=1, steps=4)
    # the cycle estimate: labelled, per board run, in ms at the M4 target file's clock
    est = rep["cycles_estimate"]
    assert est["label"] == "estimate" and [r["core"] for r in est["rows"]] == ["m4"]
    (at,) = est["rows"][0]["at_targets"]
    assert at["target"] == "cortex-m4-80mhz" and at["clock_hz"] == 80e6
    cyc = est["rows"][0]["cycles_per_step_estimate"]
    assert at["ms_per_step_estimate"] == pytest.approx(cyc / 80e6 * 1e3)
    assert rep["figures"]["per_core"]["m4"]["cycles_per_step_estimate"] == round(cyc)
    assert {c["core"] for c in est["validation"]} >= {"m0", "m3", "m4"}
    assert "ESTIMATE (not measured)" in (b / bench.REPORT_MD).read_text()
    on_disk = json.loads((b / bench.REPORT).read_text())
    assert on_disk["emulated"]["runs"] == rep["emulated"]["runs"]
    runtime = json.loads((b / bench.RUNTIME_REPORT).read_text())
    assert on_disk["runtime_bench"]["backends"] == runtime["backends"]
    assert set(runtime["backends"]) <= set(rep["host_step_us"])
    assert {"tflm", "tinygru engine (ctypes)"} <= set(rep["host_step_us"])
    for name, v in rep["host_step_us"].items():
        base = rep["host_step_us"]["tinygru engine (ctypes)"]["p50"]
        assert rep["host_ratio_to_engine"][name] == pytest.approx(v["p50"] / base, abs=0.006)
    mem = rep["memory"]
    eng = mem["routes"]["tinygru_engine"]
    assert eng["model_bytes"] == sum(eng["flash_parts"].values())
    assert eng["ram_bytes"] == sum(eng["ram_parts"].values())
    step = mem["routes"]["tflm_step"]
    assert step["model_bytes"] == (b / "step_int8.tflite").stat().st_size
    assert mem["ratio_to_engine"]["tflm_step"]["model_bytes"] == pytest.approx(
        step["model_bytes"] / eng["model_bytes"], abs=0.006
    )
    assert "tflm_unrolled_window" not in mem["routes"]
    # the tracked figures restate the runs and the memory route, per core
    f = rep["figures"]
    assert f["engine_ram_bytes"] == eng["ram_bytes"]
    assert f["dense_macs_per_step"] == rep["emulated"]["dense_macs_per_step"]
    for run in rep["emulated"]["runs"]:
        d = f["per_core"][run["core"]]
        key = "dense" if run["sparse_mode"] == "never" else "block_sparse"
        assert d[key]["kernel_instructions_per_mac"] == run["instructions_per_mac"]
        assert d[key]["step_instructions"] == run["step_instructions"]
        assert d["engine_code_bytes"] == run["engine_code"]["bytes"] > 0
    md = (b / bench.REPORT_MD).read_text()
    assert "## Tracked figures" in md and "Where a step's instructions go, dense" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    # header + separator + 2 storages on one core; header + separator + 1; host table;
    # memory table with two routes
    assert len(rows) >= 4 + 3 + (2 + len(rep["host_step_us"])) + 4
    for ln in rows:  # every row of a table has as many cells as its header
        assert ln.endswith("|")
    assert "| tinygru engine |" in md
