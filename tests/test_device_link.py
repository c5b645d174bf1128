"""The on-target check over serial: the DUT firmware on emulated MPS2 boards, driven by
edge_runtime.device.DeviceLink through a TCP socket (and once through a pty), gives the
host engine's int8 outputs bit for bit; faults on the wire are answered and survived.
A device proves its model: the sha256 of the model data it links, computed at boot,
equals the export's, and model C edited after the export is refused; its outputs are
judged against engine_outputs.npz at tolerance 0; infer takes whole windows only.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_firmware import FIRMWARE, arm_tools_missing, dut_bundle

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


def files_json(bundle: Path) -> dict:
    return json.loads((bundle / "firmware" / "files.json").read_text())


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
    # the model data the firmware links, hashed by the firmware at boot, is the export's
    data = files_json(bm)["model_data"]
    want = data["sha256_dsp"] if info["data_dsp"] else data["sha256"]  # mps2-an386: DSP
    assert info["data_dsp"] == 1 and info["data_sha256"] == want
    assert info["data_bytes"] == data["flash_bytes"]
    assert info["data_boot_ticks"] > 0
    assert (info["model_id"], info["timestamp_mode"], info["baud"]) == (
        "basic_motions", "performance", 115200)  # fmt: skip


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
    with pytest.raises(DeviceError, match=r"'infer 1 0'.*12 bytes loaded, a window is 600 bytes"):
        m4.load(reference["windows"][0][:1])  # one sample: loaded, but not a window
        m4.infer(1, 0)
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


def test_infer_answers_whole_windows_only(m4: DeviceLink, reference) -> None:
    """An incomplete window gets no answer from infer (issue: `db load 12`, `infer 1 0`
    returned probabilities computed from one sample); stream still takes 1..T samples."""
    w = reference["windows"][3]
    m4.command("db load 12")
    m4.command("db " + w[:1].astype("<i2").tobytes().hex())
    with pytest.raises(DeviceError) as e:
        m4.command("infer 1 0")
    assert "e-[infer: 12 bytes loaded, a window is 600 bytes (50 samples of 12 bytes)]" in str(
        e.value
    )
    with pytest.raises(DeviceError, match="12 bytes loaded, a window is 600 bytes"):
        m4.command("infer 5 2")  # no warm-up or timed run started either
    m4.stream_reset()
    assert len(m4.stream_push(w[:1])) == 1  # a step at t = 0
    np.testing.assert_array_equal(m4.infer_window(w), reference["y"][3])


def _edit_model_c(src: Path, dst: Path, edit) -> Path:
    """A copy of the bundle (without its builds) whose <prefix>_model.c went through edit."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("build"))
    model_c = dst / "firmware" / "basic_motions_model.c"
    text = model_c.read_text()
    new = edit(text)
    assert new != text
    model_c.write_text(new)
    proc = subprocess.run(["make", "-s", "-C", str(FIRMWARE), f"BUNDLE={dst}",
                           "TARGETS=mps2-an386", "OPTS=O2"], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dst


def _flip_one_weight(text: str) -> str:
    """One weight of the first weight array changed: the sign of its first nonzero int8
    weight (row-major), or the top bit of one byte of its first nonzero packed word (the
    word orders of a packed layer: both under #if TG_USE_DSP, so the DSP one is edited)."""
    m = re.search(r"_weights\[\d+\] = \{\s*", text)
    assert m, "no weight array in the model C"
    word = re.compile(r"0x([0-9a-f]{8})u")
    if text.startswith("#if", m.end()):
        w = word.search(text, m.end())
        while int(w.group(1), 16) == 0:
            w = word.search(text, w.end())
        return text[: w.start()] + f"0x{int(w.group(1), 16) ^ 0x80:08x}u" + text[w.end() :]
    v = re.compile(r"-?\d+").search(text, m.end())
    while int(v.group(0)) == 0:
        v = re.compile(r"-?\d+").search(text, v.end())
    return text[: v.start()] + str(-int(v.group(0))) + text[v.end() :]


def test_model_data_edited_after_the_export_is_refused(bm: Path, tmp_path: Path) -> None:
    """Issue: one weight's sign flipped in the exported model C, firmware rebuilt: the
    step model's sha256 (given at build) still matched and the check passed."""
    bad = _edit_model_c(bm, tmp_path / "bundle", _flip_one_weight)
    want = files_json(bad)["model_data"]["sha256_dsp"]  # mps2-an386 is a DSP build
    with QemuBoard(elf_path(bad, "an386")) as q, DeviceLink(q.url) as dev:
        info = dev.info()
    assert info["sha256"] == hashlib.sha256((bm / "step_int8.tflite").read_bytes()).hexdigest()
    assert info["data_sha256"] != want  # the firmware hashes what it links
    with pytest.raises(DeviceError) as e:
        open_device("qemu:an386", str(bad))
    msg = str(e.value)
    assert info["data_sha256"] in msg and want in msg and "files.json" in msg
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "check", "--bundle", str(bad), "--device",
         "qemu:an386"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and "PASSED" not in proc.stdout
    assert want in proc.stderr and info["data_sha256"] in proc.stderr


@pytest.fixture(scope="module")
def with_engine_outputs(bm: Path) -> Path:
    """The bundle with engine_outputs.npz (python -m firmware_export check writes it)."""
    if not Bundle.open(bm).has("engine_outputs.npz"):
        from firmware_export.check import check

        check(bm)
    return bm


def test_device_check_is_bit_identical_to_the_engine(with_engine_outputs: Path) -> None:
    from edge_runtime import check

    result = check.check_bundle(Bundle.open(with_engine_outputs), device="qemu:an386")
    ident = result.metrics["engine_identity"]
    assert ident == {"compared": 120, "mismatches": 0, "tolerance": 0, "first_mismatch": None}
    mark = next(m for m in result.marks if m.name == check.ENGINE_MARK)
    assert mark.passed and mark.source == "engine_outputs.npz"
    assert "bit-identity with engine_outputs.npz (tolerance 0): 120 of 120" in check.render(result)


def test_outputs_off_the_engine_fail_the_check(with_engine_outputs: Path, tmp_path: Path) -> None:
    """A scalar of the model structure (not model data: not hashed) changed: the hash
    check passes, the outputs differ from engine_outputs.npz and the check fails."""
    from edge_runtime import check

    def shift_zr_add_offset(text: str) -> str:
        # the FC offsets are folded into the (hashed) requantization data; an ADD's are not
        i = text.index(".zr_add = ")
        m = re.compile(r"\.output_offset = (-?\d+)").search(text, i)
        return text[: m.start(1)] + str(int(m.group(1)) + 9) + text[m.end(1) :]

    bad = _edit_model_c(with_engine_outputs, tmp_path / "bundle", shift_zr_add_offset)
    result = check.check_bundle(Bundle.open(bad), device="qemu:an386")
    ident = result.metrics["engine_identity"]
    assert ident["compared"] == 120 and ident["mismatches"] > 0, ident
    mark = next(m for m in result.marks if m.name == check.ENGINE_MARK)
    assert not mark.passed and not result.passed
    first = ident["first_mismatch"]
    assert first["device"] != first["engine"]
