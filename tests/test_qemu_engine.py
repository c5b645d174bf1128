"""The engine on emulated Cortex-M4 (mps2-an386) and Cortex-M3 (mps2-an385) boards
equals the host engine byte for byte: head outputs and final GRU states of real
test windows, each from a zero state. Tolerance 0 (the engine is integer-only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_engine import make_bundle

from edge_runtime.bundle import Bundle
from firmware_export import host, qemu
from firmware_export.export import export, prepare

N_WINDOWS = 20

MISSING = qemu.missing_tools()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MISSING is not None, reason=f"emulator run impossible: {MISSING}"),
]


@pytest.fixture(scope="module")
def bm(engine_bm: Path) -> Path:
    return engine_bm


@pytest.fixture(scope="module")
def host_reference(bm: Path) -> dict[str, np.ndarray]:
    bundle = Bundle.open(bm)
    windows = bundle.load_npz("reference.npz")["x_counts"][:N_WINDOWS]
    result = export(bm)
    m = prepare(bundle).model
    y, h = host.load(Path(result["out"]), result["prefix"], m).windows(windows)
    return {"windows": windows, "y": y, "h": h}


@pytest.mark.parametrize("target", ["m4", "m3"])
def test_emulated_engine_equals_host_engine(bm: Path, host_reference, target: str) -> None:
    windows = host_reference["windows"]
    assert len(windows) == N_WINDOWS
    res = qemu.run(bm, target, windows)
    assert res.machine == qemu.TARGETS[target]["machine"]
    assert (res.status == 1).all()
    assert res.y.dtype == np.int8 and res.y.shape == host_reference["y"].shape
    np.testing.assert_array_equal(res.y, host_reference["y"])
    np.testing.assert_array_equal(res.h, host_reference["h"])
    # the windows are not all alike: the identity is not one constant output
    assert len({row.tobytes() for row in res.y}) > 1
    # SysTick under -icount shift=0 is exact: every window of equal length costs
    # about the same, and a window is a few hundred thousand instructions at most
    assert (res.instructions > 0).all()
    assert res.instructions.max() - res.instructions.min() <= res.instructions.min() // 10
    assert res.instructions.max() < 5_000_000
    assert 0 < res.peak_stack_bytes < 4096


def test_run_on_qemu_returns_head_outputs(bm: Path, host_reference) -> None:
    y = qemu.run_on_qemu(bm, "m4", host_reference["windows"][:3])
    np.testing.assert_array_equal(y, host_reference["y"][:3])


def test_build_is_cached(bm: Path, tmp_path: Path) -> None:
    result = export(bm)
    a = qemu.build_firmware(result["out"], result["prefix"], "m3")
    b = qemu.build_firmware(result["out"], result["prefix"], "mps2-an385")
    assert a == b and a.is_file()
    assert a.parent.parent == qemu.CACHE / "runner"
    assert a != qemu.build_firmware(result["out"], result["prefix"], "m4")
    # the key is the files, not where they are: the same export elsewhere reuses the ELF
    elsewhere = export(bm, tmp_path / "fw")
    assert qemu.build_firmware(elsewhere["out"], elsewhere["prefix"], "m3") == a
    with pytest.raises(ValueError, match="prefix 'basic_motions', expected 'other'"):
        qemu.build_firmware(result["out"], "other", "m3")


def test_a_failed_build_names_its_first_error(bm: Path, tmp_path: Path) -> None:
    result = export(bm, tmp_path / "fw")
    engine_file = Path(result["out"]) / "engine" / "tg_lut_s8.c"
    engine_file.write_text(engine_file.read_text() + "#error this export is broken\n")
    with pytest.raises(
        qemu.BuildError,
        match=r"tg_lut_s8.c:\d+:\d+: error: #error this export is broken \(make -C firmware runner ",
    ):
        qemu.build_firmware(result["out"], result["prefix"], "m4")


def test_targets_are_the_board_table() -> None:
    from edge_runtime import boards

    assert qemu.TARGETS == {b.core: {"machine": b.name, "cpu": b.cpu} for b in boards.BOARDS}
    assert set(qemu.DEFAULT_TARGETS) <= set(qemu.TARGETS)
    assert [qemu.target_name(n) for n in ("m4", "an386", "mps2-an386")] == ["m4"] * 3


def test_a_firmware_failure_is_reported(bm: Path, host_reference) -> None:
    result = export(bm)
    elf = qemu.build_firmware(result["out"], result["prefix"], "m4")
    wrong = host_reference["windows"][:2, :, :-1]  # one channel short
    with pytest.raises(RuntimeError, match="exit code 4"):
        qemu.run_elf(elf, "m4", wrong)


@pytest.mark.parametrize("name", ["bm2", "anomaly"])
def test_two_layers_and_forecast_head_on_m4(tmp_path_factory, name: str) -> None:
    root = tmp_path_factory.getbasetemp() / "engine_bundles"
    root.mkdir(exist_ok=True)
    rep = qemu.compare_with_host(make_bundle(name, str(root)), "m4", n_windows=5)
    assert rep["windows"] == 5
    assert rep["y_mismatches"] == 0 and rep["h_mismatches"] == 0
