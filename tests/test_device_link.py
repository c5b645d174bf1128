"""The on-target check over serial: the DUT firmware on emulated MPS2 boards, driven by
edge_runtime.device.DeviceLink through a TCP socket (and once through a pty), gives the
host engine's int8 outputs bit for bit; faults on the wire are answered and survived.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from test_firmware import arm_tools_missing, dut_bundle

from edge_runtime.bundle import Bundle
from edge_runtime.connect import open_device
from edge_runtime.device import DeviceError, DeviceLink, DeviceTimeout
from edge_runtime.qemu_launch import QemuBoard, elf_path, open_qemu_link

N_WINDOWS = 10

MISSING = arm_tools_missing() or (
    None if shutil.which("qemu-system-arm") else "qemu-system-arm not found"
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MISSING is not None, reason=f"emulator run impossible: {MISSING}"),
]


@pytest.fixture(scope="module")
def bm(tmp_path_factory) -> Path:
    return dut_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(bm: Path) -> dict[str, np.ndarray]:
    """Host engine outputs of the first reference windows, each from a zero state."""
    from firmware_export import host
    from firmware_export.export import export, prepare

    bundle = Bundle.open(bm)
    windows = bundle.load_npz("reference.npz")["x_counts"][:N_WINDOWS]
    result = export(bm)
    m = prepare(bundle).model
    eng = host.load(Path(result["out"]), result["prefix"], m)
    y = np.stack([eng.window(w) for w in windows])
    return {"windows": windows, "y": y, "stride": np.array(m.stride)}


@pytest.fixture(scope="module")
def m4(bm: Path):
    with open_qemu_link(bm, "an386") as dev:
        yield dev


def test_identity_and_model_description(m4: DeviceLink, bm: Path) -> None:
    assert m4.name() == "tinygru"
    prof = m4.profile()
    assert prof["model"] == "basic_motions" and prof["profile"].startswith("tinygru-")
    info = m4.info()
    bundle = Bundle.open(bm)
    assert info["sha256"] == hashlib.sha256(bundle.read_bytes("step_int8.tflite")).hexdigest()
    cfg = bundle.manifest["model"]["config"]
    assert info["channels"] == cfg["n_channels"] == 6
    assert (info["kernel"], info["stride"]) == (cfg["front_end_kernel"], cfg["front_end_stride"])
    assert info["input_format"] == "int16le"
    assert info["input_bytes"] == 2 * info["window"] * info["channels"]
    assert info["target"] == "cortex-m4/mps2-an386" and info["timer_hz"] == 25_000_000
    iq = bundle.manifest["preprocess"]["input_quant"]
    assert info["quant"]["input_zero_point"] == iq["zero_point"]


def test_windows_bit_identical_to_host_engine(m4: DeviceLink, reference) -> None:
    got = np.stack([m4.infer_window(w) for w in reference["windows"]])
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, reference["y"])
    assert len({row.tobytes() for row in got}) > 1
    # the MLPerf-style float results are the same outputs, dequantized
    q = m4.info()["quant"]
    floats = m4.infer(1, 0)
    want = (reference["y"][-1].astype(float) - q["output_zero_point"]) * q["output_scale"]
    np.testing.assert_allclose(floats, want, atol=0.0005)


def test_timing_counts_instructions_repeatably(m4: DeviceLink, reference) -> None:
    w = reference["windows"][0]
    a = m4.timing(w, runs=5, warmup=1)
    b = m4.timing(w, runs=5, warmup=0)
    assert a.runs == 5 and a.hz == 25_000_000
    assert a.instructions_per_window is not None
    assert 10_000 < a.instructions_per_window < 5_000_000
    assert abs(a.ticks - b.ticks) <= 2  # -icount shift=0: virtual time is exact
    steps = len(range(0, w.shape[0], int(reference["stride"])))
    assert a.instructions_per_window / steps > 100


def test_stream_carries_state_across_commands(m4: DeviceLink, reference) -> None:
    w = reference["windows"][1]
    n_steps = len(range(0, len(w), int(reference["stride"])))
    m4.stream_reset()
    a = m4.stream_push(w[:20])
    b = m4.stream_push(w[20:])
    assert len(a) + len(b) == n_steps
    np.testing.assert_array_equal(b[-1], reference["y"][1])
    whole = m4.stream(w)
    assert whole.shape == (n_steps, 4) and whole.dtype == np.int8
    np.testing.assert_array_equal(whole, np.concatenate([a, b]))
    # a series longer than the device buffer goes in window-sized pieces
    series = np.concatenate(reference["windows"][:3])
    steps = m4.stream(series)
    assert len(steps) == len(range(0, len(series), int(reference["stride"])))
    first = m4.stream(reference["windows"][0])
    np.testing.assert_array_equal(steps[: len(first)], first)
    np.testing.assert_array_equal(first[-1], reference["y"][0])


def test_faults_on_the_wire_are_answered(m4: DeviceLink, reference) -> None:
    with pytest.raises(DeviceError, match="longer than 256"):
        m4.command("x" * 256 + " y")  # 258 characters
    with pytest.raises(DeviceError, match=r"'db 0g'.*bad hex digit"):
        m4.command("db load 12")
        m4.command("db 0g")
    with pytest.raises(DeviceError, match="not a whole number of samples"):
        m4.command("db load 7")
    with pytest.raises(DeviceError, match="not a whole number of samples"):
        m4.command("db load 612")  # 51 samples, window 50
    with pytest.raises(DeviceError, match="input incomplete"):
        m4.command("db load 24")
        m4.command("infer 1 0")
    with pytest.raises(ValueError, match="device holds 600"):
        m4.load(np.zeros((51, 6), np.int16))
    # a command without its terminator, then raw garbage: the next command still works
    m4._write("infer 1 0")
    m4._write("\x01\x02garbage")
    assert m4.name() == "tinygru"
    m4._write("name")  # unterminated, no CAN: the device sees "namebogus"
    with pytest.raises(DeviceError, match="unknown command 'namebogus'"):
        m4._write("bogus%")
        m4.command("")
    m4.sync()
    np.testing.assert_array_equal(m4.infer_window(reference["windows"][2]), reference["y"][2])


def test_a_silent_device_times_out_with_the_command_named(bm: Path) -> None:
    with QemuBoard(elf_path(bm, "an386")) as q:
        link = DeviceLink(q.url, timeout=0.3)
        try:
            q.proc.send_signal(19)  # SIGSTOP: the board stops answering
            with pytest.raises(DeviceTimeout, match=r"command 'info': no m-ready"):
                link.info()
        finally:
            q.proc.send_signal(18)
            link.close()


@pytest.mark.parametrize(
    "spec, target",
    [("an385", "cortex-m3/mps2-an385"), ("mps2-an500", "cortex-m7/mps2-an500"),
     ("m4", "cortex-m4/mps2-an386")],
)  # fmt: skip
def test_every_board_and_spelling_bit_identical(bm: Path, reference, spec: str, target) -> None:
    with open_device(f"qemu:{spec}", str(bm)) as dev:
        assert dev.info()["target"] == target
        got = np.stack([dev.infer_window(w) for w in reference["windows"][:3]])
    np.testing.assert_array_equal(got, reference["y"][:3])


def test_size_optimized_build_bit_identical(bm: Path, reference) -> None:
    with open_qemu_link(bm, "an386", opt="Os") as dev:
        got = np.stack([dev.infer_window(w) for w in reference["windows"][:3]])
    np.testing.assert_array_equal(got, reference["y"][:3])


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat not found")
def test_through_a_pty(bm: Path, reference, tmp_path: Path) -> None:
    tty = tmp_path / "ttyDUT"
    with QemuBoard(elf_path(bm, "an386")) as q:
        # wait-slave: socat connects to QEMU only once the link opens the pty;
        # its log goes nowhere (an unread pipe would fill up and stall it)
        socat = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,wait-slave,link={tty}", f"tcp:127.0.0.1:{q.port},nodelay"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not tty.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert tty.exists(), "socat made no pty"
            with DeviceLink(str(tty)) as dev:
                got = np.stack([dev.infer_window(w) for w in reference["windows"][:3]])
        finally:
            socat.terminate()
            socat.wait(5)
    np.testing.assert_array_equal(got, reference["y"][:3])


def test_check_hook_runs_the_reference_windows_on_the_device(bm: Path, monkeypatch) -> None:
    from edge_runtime import check, connect

    monkeypatch.setattr(check, "open_device", connect.open_device)
    bundle = Bundle.open(bm)
    on_device = check.check_bundle(bundle, device="qemu:an386")
    on_host = check.check_bundle(bundle)
    assert on_device.backend == "device qemu:an386"
    assert on_device.metrics["accuracy"] == on_host.metrics["accuracy"]


def test_a_device_with_another_model_is_refused(bm: Path, monkeypatch) -> None:
    monkeypatch.setattr(Bundle, "read_bytes", lambda self, name: b"another model")
    with pytest.raises(DeviceError, match="the device runs model .* the bundle"):
        open_device("qemu:an386", str(bm))
