"""The boards beyond MPS2 (micro:bit Cortex-M0, AN505 Cortex-M33, AN547 Cortex-M55,
netduinoplus2 STM32F405): one table row each, board support that matches it, and on each
board under QEMU the reference firmware answers the device protocol over the board's own
UART/USART and the engine runner gives the host engine's outputs. Every comparison of
outputs is at tolerance 0: the engine is integer-only, so any difference is a bug.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_engine import make_bundle
from test_firmware import arm_tools_missing, dut_bundle

from edge_runtime import boards
from edge_runtime.bundle import Bundle

ROOT = Path(__file__).resolve().parents[1]
NEW = ("microbit", "mps2-an505", "mps3-an547", "netduinoplus2")
N_WINDOWS = 10
MISSING = arm_tools_missing() or (
    None if shutil.which("qemu-system-arm") else "qemu-system-arm not found"
)


def emulated_mark(f):
    """Slow, and skipped without the cross compiler or QEMU."""
    skip = pytest.mark.skipif(MISSING is not None, reason=f"emulator run impossible: {MISSING}")
    return pytest.mark.slow(skip(f))


# ---- the table ------------------------------------------------------------------


def test_every_spelling_names_one_board() -> None:
    for key in ("name", "short", "core"):
        values = [getattr(b, key) for b in boards.BOARDS]
        assert len(set(values)) == len(values), f"{key} not unique: {values}"
    for b in boards.BOARDS:
        assert boards.board(b.name) == boards.board(b.short) == boards.board(b.core) == b
    assert boards.board("m4").name == "mps2-an386"  # the Cortex-M4's default board
    assert boards.board("stm32f405").name == "netduinoplus2"
    assert [boards.board(c).name for c in ("m0", "m33", "m55")] == list(NEW[:3])
    assert boards.board("netduinoplus2").label == "Cortex-M4 (netduinoplus2)"


def test_dsp_flag_follows_the_core() -> None:
    """ARMv6-M and the Cortex-M3 lack the DSP extension; the others have it."""
    assert {b.core for b in boards.BOARDS if not b.dsp} == {"m0", "m3"}


@pytest.mark.parametrize("b", boards.BOARDS, ids=lambda b: b.name)
def test_board_h_clock_is_the_table_clock(b: boards.Board) -> None:
    """SysTick ticks become instructions with the table's clock; board.h must agree."""
    text = (ROOT / "firmware" / "board" / b.support / "board.h").read_text()
    m = re.search(r"#define BOARD_CPU_HZ (\d+)u", text)
    assert m and int(m.group(1)) == b.clock_hz
    assert b.instructions_per_tick == pytest.approx(1e9 / b.clock_hz)


def test_ticks_to_instructions_rounds_per_board() -> None:
    from firmware_export.qemu import ticks_to_instructions

    np.testing.assert_array_equal(ticks_to_instructions([1, 3], "m4"), [40, 120])
    np.testing.assert_array_equal(ticks_to_instructions([1, 2], "m0"), [63, 125])  # 62.5 each
    assert ticks_to_instructions([168], "stm32f405")[0] == 1000


# ---- on the emulated boards --------------------------------------------------------


@pytest.fixture(scope="module")
def bm(tmp_path_factory) -> Path:
    """The small BasicMotions bundle with the DUT built for every board."""
    return dut_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def host(bm: Path) -> dict[str, np.ndarray]:
    from firmware_export import host as host_engine
    from firmware_export.export import export, prepare

    bundle = Bundle.open(bm)
    windows = bundle.load_npz("reference.npz")["x_counts"][:N_WINDOWS]
    result = export(bm)
    eng = host_engine.load(Path(result["out"]), result["prefix"], prepare(bundle).model)
    y, h = eng.windows(windows)
    return {"windows": windows, "y": y, "h": h}


@pytest.mark.parametrize("name", NEW)
@emulated_mark
def test_boot_and_echo_over_the_boards_uart(bm: Path, host, name: str) -> None:
    """The DUT on the board's own UART: identity, model, windows and a stream."""
    from edge_runtime.connect import open_device

    b = boards.board(name)
    with open_device(f"qemu:{b.short}", str(bm)) as dev:
        assert dev.name() == "tinygru"
        info = dev.info()
        assert info["target"] == f"{b.cpu}/{b.name}" and info["timer_hz"] == b.clock_hz
        got = np.stack([dev.infer_window(w) for w in host["windows"][:3]])
        dev.stream_reset()
        steps = dev.stream(host["windows"][0])
    np.testing.assert_array_equal(got, host["y"][:3])
    np.testing.assert_array_equal(steps[-1], host["y"][0])


@pytest.mark.parametrize("name", NEW)
@emulated_mark
def test_runner_equals_host_engine(bm: Path, host, name: str) -> None:
    from firmware_export import qemu

    res = qemu.run(bm, name, host["windows"])
    assert res.machine == name and (res.status == 1).all()
    np.testing.assert_array_equal(res.y, host["y"])
    np.testing.assert_array_equal(res.h, host["h"])
    assert 0 < res.peak_stack_bytes < 4096
    assert (res.instructions > 0).all()


@pytest.mark.parametrize("core", ["m0", "stm32f405"])
@emulated_mark
def test_forecaster_on_m0_and_stm32(tmp_path_factory, core: str) -> None:
    """The anomaly forecaster's head and state; on the M0 every 64-bit product of the
    requantization is a libgcc call (no UMULL/SMULL), and must still match exactly."""
    from firmware_export import qemu

    root = tmp_path_factory.getbasetemp() / "engine_bundles"
    root.mkdir(exist_ok=True)
    rep = qemu.compare_with_host(make_bundle("anomaly", str(root)), core, n_windows=3)
    assert rep["windows"] == 3 and rep["y_mismatches"] == 0 and rep["h_mismatches"] == 0


@emulated_mark
def test_edge_check_passes_over_the_stm32_usart(bm: Path, capsys) -> None:
    """`tinygru-edge check --device qemu:stm32f405`: every reference window over USART1."""
    from edge_runtime.__main__ import main

    assert main(["check", "--bundle", str(bm), "--device", "qemu:stm32f405"]) == 0
    out = capsys.readouterr().out
    assert "qemu:stm32f405" in out, out
