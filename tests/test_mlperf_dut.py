"""The DUT firmware as a drop-in MLPerf Tiny device under test, under QEMU.

The MLPerf Tiny host runner (mlcommons/tiny benchmark/runner) is not a package and is not
vendored: the command sequences of its accuracy and performance modes, and the replies it
expects, are recorded in tests/data/mlperf_runner/ (source cited there and in
docs/device-protocol.md). These tests replay them byte for byte, framed as the runner
frames them (`%` after each command, no CAN; a reply ends at the line holding `m-ready`),
against a firmware built with a configured model id (DUT_MODEL_ID=kws01) on the data set
scripts/mlperf_dataset.py writes from the bundle's reference windows; the runner-style
accuracy then equals the project's own device check. Also: the whole-window rule as the
runner meets it, the int8-tensor input build, and the energy-mode build (banner, the
timestamp pin on the MPS2 FPGA I/O register, the baud rate), as far as QEMU shows them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from test_device_link import MISSING
from test_firmware import FIRMWARE, ROOT, dut_bundle

from edge_runtime.bundle import Bundle
from edge_runtime.device import DeviceLink
from edge_runtime.qemu_launch import QemuBoard

sys.path.insert(0, str(ROOT))
from scripts.mlperf_dataset import TRUTH_FILE, write_dataset  # noqa: E402

DATA = ROOT / "tests" / "data" / "mlperf_runner"
MODEL_ID = "kws01"  # a stock entry of the runner's test scripts (tests_*.yaml)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MISSING is not None, reason=f"emulator run impossible: {MISSING}"),
]


def _toml(name: str) -> dict:
    with open(DATA / name, "rb") as f:
        return tomllib.load(f)


RUNNER = _toml("runner.toml")
FRAMING = RUNNER["framing"]


def build_variant(bundle: Path, out: Path, **options: str) -> Path:
    """The DUT for mps2-an386 -O2 with DUT_* options, into out (the bundle's ELFs untouched)."""
    args = [f"DUT_{k.upper()}={v}" for k, v in options.items()]
    proc = subprocess.run(["make", "-s", "-C", str(FIRMWARE), f"BUNDLE={bundle}", f"DUT_OUT={out}",
                           "TARGETS=mps2-an386", "OPTS=O2", *args], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "firmware.json").read_text())
    assert report["dut_options"]["model_id"] == options.get("model_id", "basic_motions")
    return out / "mps2-an386-O2" / "dut.elf"


class RunnerPort:
    """The runner's side of the wire (serial_device.py, read, not copied): writes a command
    and its terminator, reads LF-ended lines without CR and NUL, and takes a reply to end
    at the first line that contains the end-of-response marker."""

    def __init__(self, url: str) -> None:
        import serial

        self.ser = serial.serial_for_url(url, timeout=0.05)
        self.buf = b""

    def close(self) -> None:
        self.ser.close()

    def line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if time.monotonic() > deadline:
                raise AssertionError(f"no reply line in {timeout} s; pending {self.buf!r}")
            self.buf += self.ser.read(max(1, self.ser.in_waiting))
        raw, self.buf = self.buf.split(b"\n", 1)
        text = raw.decode("ascii")
        return "".join(c for c in text if c not in FRAMING["dropped"])

    def until_end(self, timeout: float) -> list[str]:
        lines = []
        while True:
            s = self.line(timeout)
            if FRAMING["end_of_response"] in s:
                assert s == FRAMING["end_of_response"], f"end line {s!r}"
                return lines
            lines.append(s)

    def send(self, cmd: str, timeout: float | None = None) -> list[str]:
        self.ser.write((cmd + FRAMING["terminator"]).encode("ascii"))
        return self.until_end(timeout or FRAMING["reply_timeout_s"])


def _pattern(p: str, **values: object) -> re.Pattern[str]:
    for k, v in values.items():
        p = p.replace("{" + k + "}", re.escape(str(v)))
    return re.compile(p)


def expect(reply: list[str], patterns: list[str], what: str, **values: object) -> None:
    """Every reply line matches its recorded pattern in full, in order."""
    assert len(reply) == len(patterns), f"{what}: reply {reply}, recorded {patterns}"
    for line, p in zip(reply, patterns, strict=True):
        assert _pattern(p, **values).fullmatch(line), f"{what}: {line!r} !~ {p!r}"


def runner_parse(reply: list[str], patterns: list[str]) -> dict[str, object]:
    """What _ScriptInferStep._gather_infer_results takes: results, start and end laps."""
    results, lap = re.compile(patterns[0]), re.compile(patterns[1])
    out: dict[str, object] = {}
    for line in reply:
        if m := results.match(line):
            out["results"] = [float(x) for x in m.group(1).split(",") if x.strip()]
        elif m := lap.match(line):
            out["end_time" if "start_time" in out else "start_time"] = int(m.group(1))
    return out


def boot_and_identify(port: RunnerPort, model_id: str, banner: list[str]) -> None:
    """The boot banner as MLPerf's reference firmware prints it, then the runner's
    identification; it keys the test script by the model id (main.py run_test)."""
    expect(port.until_end(10.0), banner, "boot")
    found = {}
    for step in RUNNER["identify"]:
        reply = port.send(step["send"])
        expect(reply, step["reply"], step["send"], model_id=model_id)
        for line in reply:  # the runner's own regular expressions find what it needs
            for p in step["runner"]:
                if m := re.match(p, line):
                    found[m.group(1)] = m.group(2)
    assert found["name"] == "tinygru" and found["model"] == model_id, found


def download(port: RunnerPort, data: bytes) -> None:
    load, chunk = RUNNER["download"]
    expect(
        port.send(load["send"].format(bytes=len(data))), load["reply"], "db load", bytes=len(data)
    )
    n = FRAMING["db_chunk_bytes"]
    for i in range(0, len(data), n):
        reply = port.send(chunk["send"].format(hex=data[i : i + n].hex()))
        expect(reply, chunk["last_reply"] if i + n >= len(data) else chunk["reply"], "db")


def truth(folder: Path) -> list[tuple[str, int]]:
    rows = [line.split(",") for line in (folder / TRUTH_FILE).read_text().splitlines()]
    return [(r[0], int(r[2])) for r in rows]


@pytest.fixture(scope="module")
def bm(tmp_path_factory) -> Path:
    bundle = dut_bundle(tmp_path_factory)
    if not Bundle.open(bundle).has("engine_outputs.npz"):
        from firmware_export.check import check

        check(bundle)
    return bundle


@pytest.fixture(scope="module")
def kws01(bm: Path, tmp_path_factory) -> Path:
    return build_variant(bm, tmp_path_factory.mktemp("dut_kws01"), model_id=MODEL_ID)


@pytest.fixture(scope="module")
def dataset(bm: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("datasets")
    s = write_dataset(bm, out, model_id=MODEL_ID)
    assert (s["files"], s["bytes_per_file"], s["format"]) == (120, 600, "int16")
    return Path(s["folder"])


def engine_floats(bm: Path) -> np.ndarray:
    b = Bundle.open(bm)
    y = b.load_npz("engine_outputs.npz")["y"].astype(np.float64)
    q = b.manifest["quantization"]["step"]["outputs"]["y"]
    return (y - q["zero_point"]) * q["scale"]


def test_accuracy_mode_replayed_and_equal_to_the_device_check(bm, kws01, dataset) -> None:
    acc = _toml("accuracy.toml")
    step = acc["infer"][0]
    files = truth(dataset)
    got = []
    with QemuBoard(kws01) as q:
        port = RunnerPort(q.url)
        try:
            boot_and_identify(port, MODEL_ID, RUNNER["boot"]["reply"])
            for name, _cls in files:  # loop over the truth file: download, infer 1 0
                download(port, (dataset / name).read_bytes())
                reply = port.send(step["send"], FRAMING["infer_timeout_s"])
                expect(reply, step["reply"], name)
                got.append(runner_parse(reply, step["runner"]))
        finally:
            port.close()
    results = np.array([g["results"] for g in got])
    assert all(g["end_time"] >= g["start_time"] for g in got)
    # the m-results values are the engine's int8 outputs, dequantized, to three decimals
    np.testing.assert_allclose(results, engine_floats(bm), atol=0.0005 + 1e-9)
    # main.py summarize_result: normalised results, argmax per file against the class
    norm = results / results.sum(axis=1, keepdims=True)
    classes = np.array([c for _n, c in files])
    top1 = float(np.mean(np.argmax(norm, axis=1) == classes))
    from edge_runtime import check

    own = check.check_bundle(Bundle.open(bm), device="qemu:an386")
    assert own.passed, check.render(own)
    assert top1 == own.metrics["accuracy"]  # the same windows, the same outputs: equal


def test_performance_mode_replayed(kws01, dataset) -> None:
    perf = _toml("performance.toml")
    n, w = perf["counts"][MODEL_ID]
    step = perf["infer"][0]
    files = truth(dataset)[: perf["loop"]]  # `download` without an index: the next file
    elapsed = []
    with QemuBoard(kws01) as q:
        port = RunnerPort(q.url)
        try:
            boot_and_identify(port, MODEL_ID, RUNNER["boot"]["reply"])
            for name, _cls in files:
                download(port, (dataset / name).read_bytes())
                reply = port.send(step["send"].format(n=n, w=w), FRAMING["infer_timeout_s"])
                expect(reply, step["reply"], name, n=n, w=w)
                r = runner_parse(reply, step["runner"])
                elapsed.append(r["end_time"] - r["start_time"])
            # after the runner's sequence: the timer ticks of the last timed run
            m = re.fullmatch(r"m-ticks-\[runs=(\d+),total=(\d+),hz=(\d+)\]", port.send("ticks")[0])
        finally:
            port.close()
    assert len(elapsed) == 5 and min(elapsed) > 0
    runs, ticks, hz = (int(g) for g in m.groups())
    # the laps bracket exactly the N timed windows: each lap is rounded down to a us
    assert runs == n and abs(elapsed[-1] - ticks * 1e6 / hz) < 1.0
    # -icount shift=0: 1 us of virtual time is 1,000 instructions; a BasicMotions window
    # (25 steps) costs the same within 0.1 % whatever its data (clamps and rounding)
    assert max(elapsed) - min(elapsed) <= 0.001 * min(elapsed), elapsed
    throughput = float(np.median([n / (e / 1e6) for e in elapsed]))  # main.py: the median
    assert throughput > 0


def test_a_partial_window_is_refused_to_the_runner(kws01, dataset) -> None:
    """A file one sample short: `db load` takes it (stream uses 1..T samples), `infer`
    answers one e- line and no results, so the runner records none for it."""
    name, _cls = truth(dataset)[0]
    data = (dataset / name).read_bytes()[:-12]
    with QemuBoard(kws01) as q:
        port = RunnerPort(q.url)
        try:
            port.until_end(10.0)
            download(port, data)
            reply = port.send("infer 1 0", FRAMING["infer_timeout_s"])
        finally:
            port.close()
    assert reply == ["e-[infer: 588 bytes loaded, a window is 600 bytes (50 samples of 12 bytes)]"]
    assert "results" not in runner_parse(reply, _toml("accuracy.toml")["infer"][0]["runner"])


def test_int8_input_build_is_bit_identical(bm: Path, tmp_path: Path) -> None:
    """DUT_INPUT=int8: db takes the int8 model input (T*C bytes), quantized on the host by
    the data set script; the outputs are the engine's, bit for bit."""
    elf = build_variant(bm, tmp_path / "dut", model_id=MODEL_ID, input="int8")
    s = write_dataset(bm, tmp_path / "datasets", model_id=MODEL_ID, fmt="int8", limit=12)
    assert s["bytes_per_file"] == 300
    want = Bundle.open(bm).load_npz("engine_outputs.npz")["y"][:12]
    folder = Path(s["folder"])
    with QemuBoard(elf) as q, DeviceLink(q.url) as dev:
        assert dev.info()["input_format"] == "int8" and dev.info()["input_bytes"] == 300
        got = []
        for name, _cls in truth(folder):
            q8 = np.frombuffer((folder / name).read_bytes(), np.int8).reshape(50, 6)
            dev.load_values(q8)
            dev.infer(1, 0)
            got.append(dev.results_raw())
    np.testing.assert_array_equal(np.stack(got), want)  # tolerance 0: the same engine and data


class TracedBoard(QemuBoard):
    """QEMU with the MPS2 FPGA I/O writes and the UART's line settings traced to its log."""

    def command(self) -> list[str]:
        c = super().command()
        return [c[0], "-trace", "mps2_fpgaio_write", "-trace", "cmsdk_apb_uart_set_params", *c[1:]]

    def pin_writes(self) -> list[int]:
        """Values written to the FPGA I/O LED0 register (offset 0), in order."""
        return [int(m.group(1), 16) for m in
                re.finditer(r"mps2_fpgaio_write .*offset 0x0 data (0x[0-9a-f]+)", self.log())]  # fmt: skip


def test_energy_mode_build(bm: Path, tmp_path: Path, dataset: Path) -> None:
    """DUT_ENERGY=1 DUT_BAUD=9600: the energy banner, timestamps as pulses on the pin (low,
    then high again) instead of m-lap-us lines, the UART at 9600 baud."""
    elf = build_variant(bm, tmp_path / "dut", model_id=MODEL_ID, energy="1", baud="9600")
    name, _cls = truth(dataset)[0]
    with TracedBoard(elf) as q:
        port = RunnerPort(q.url)
        try:
            expect(port.until_end(10.0), ["m-timestamp-mode-energy", "m-init-done"], "boot")
            boot_pulses = q.pin_writes()
            assert port.send("timestamp") == []  # a pulse, no line
            download(port, (dataset / name).read_bytes())
            reply = port.send("infer 20 0", FRAMING["infer_timeout_s"])  # tests_energy.yaml
            writes = q.pin_writes()
        finally:
            port.close()
    assert boot_pulses == [0, 1]  # th_timestamp_initialize: one pulse, the pin rests high
    expect(reply, ["m-warmup-start-0", "m-warmup-done", "m-infer-start-20", "m-infer-done",
                   r"m-results-\[[^]]+\]"], "infer")  # fmt: skip
    assert writes == [0, 1] * 4  # boot, timestamp, infer start, infer end
    assert "CMSDK APB UART: params set to 9600 8N1" in q.log()
