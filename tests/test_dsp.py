"""The Arm DSP branches of the FC kernels equal the portable C path byte for byte: the
Cortex-M4 build (mps2-an386, DSP) compiles them (SMLAD on halfword pairs, SMMLAR in the
requantization, and the DSP word order of the packed weights), the Cortex-M3 build
(mps2-an385) and the host use plain C and the portable word order, and head outputs and
final GRU states agree exactly on real windows, for packed and block-sparse weights.
Tolerance 0: both paths compute the same int32 accumulators and the same requantization.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import Bundle
from firmware_export import host, qemu
from firmware_export.export import export, prepare

N_WINDOWS = 12
OBJDUMP = "arm-none-eabi-objdump"
KERNELS = ("tg_fc_packed_s8.c", "tg_fully_connected_sparse_s8.c")
STRICT = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Wconversion", "-Werror", "-mthumb")

MISSING = qemu.missing_tools() or (None if shutil.which(OBJDUMP) else f"{OBJDUMP} not found")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MISSING is not None, reason=f"emulator run impossible: {MISSING}"),
]


@pytest.fixture(scope="module")
def bm(engine_bm: Path) -> Path:
    return engine_bm


def host_outputs(fw: Path, prefix: str, bundle: Path, windows: np.ndarray) -> tuple:
    m = prepare(Bundle.open(bundle)).model
    return host.load(fw, prefix, m).windows(windows)


def disassemble(source: Path, cpu: str, out: Path) -> str:
    obj = out / f"{cpu}_{source.stem}.o"
    subprocess.run([qemu.CC, *STRICT, f"-mcpu={cpu}", f"-I{source.parent}", "-c", str(source),
                    "-o", str(obj)], check=True, capture_output=True, text=True)  # fmt: skip
    return subprocess.run([OBJDUMP, "-d", str(obj)], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


@pytest.mark.parametrize("kernel", KERNELS)
def test_m4_object_has_the_dsp_branch_and_m3_object_has_not(bm: Path, tmp_path, kernel) -> None:
    source = Path(export(bm)["out"]) / "engine" / kernel
    m4 = disassemble(source, "cortex-m4", tmp_path)
    m3 = disassemble(source, "cortex-m3", tmp_path)
    assert "smlad" in m4 and "sxtb16" in m4 and "smmlar" in m4
    assert "smlad" not in m3 and "sxtb16" not in m3 and "smmlar" not in m3


def test_m4_dsp_equals_host_equals_m3_dense(bm: Path) -> None:
    windows = Bundle.open(bm).load_npz("reference.npz")["x_counts"][:N_WINDOWS]
    result = export(bm)
    assert "packed" in {w["layout"] for w in result["model_data"]["weights"].values()}
    want_y, want_h = host_outputs(Path(result["out"]), result["prefix"], bm, windows)
    m4 = qemu.run(bm, "m4", windows)
    m3 = qemu.run(bm, "m3", windows)
    for res in (m4, m3):
        assert (res.status == 1).all()
        np.testing.assert_array_equal(res.y, want_y, err_msg=res.machine)
        np.testing.assert_array_equal(res.h, want_h, err_msg=res.machine)
    assert len({row.tobytes() for row in m4.y}) > 1  # not one constant output
    # the DSP branch does less work per window than the C path on the M3
    assert np.median(m4.instructions) < np.median(m3.instructions)


def test_m4_dsp_equals_host_equals_m3_block_sparse(bm: Path, tmp_path) -> None:
    windows = Bundle.open(bm).load_npz("reference.npz")["x_counts"][:N_WINDOWS]
    result = export(bm, tmp_path / "sparse", sparse="always")
    assert {w["stored"] for w in result["model_data"]["weights"].values()} == {"block_sparse"}
    fw, prefix = Path(result["out"]), result["prefix"]
    want_y, want_h = host_outputs(fw, prefix, bm, windows)
    dense = export(bm)
    dense_y, _ = host_outputs(Path(dense["out"]), dense["prefix"], bm, windows)
    np.testing.assert_array_equal(want_y, dense_y)  # the same weights, stored otherwise
    for target in ("m4", "m3"):
        res = qemu.run_elf(qemu.build_firmware(fw, prefix, target), target, windows)
        assert (res.status == 1).all()
        np.testing.assert_array_equal(res.y, want_y, err_msg=res.machine)
        np.testing.assert_array_equal(res.h, want_h, err_msg=res.machine)
