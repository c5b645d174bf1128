"""The host side of the tinygru device protocol (docs/device-protocol.md), over pyserial.

``DeviceLink(url)`` talks to a board running the reference firmware (``firmware/dut``)
through any pyserial URL: ``/dev/ttyACM0`` for a real board, ``socket://127.0.0.1:PORT``
for QEMU (``edge_runtime.qemu_launch`` starts it), a pty path for tests. Nothing here
is specific to an emulator; ``edge_runtime.connect.open_device`` chooses by the
``--device`` value.

    with DeviceLink("socket://127.0.0.1:4321") as dev:
        dev.info()                       # model, sha256s, dims, quantization, engine
        y = dev.infer_window(counts)     # int16 (T, C) -> int8 (n_outputs,)
        dev.timing(counts, runs=5)       # timer ticks per window

A firmware built with ``DUT_INPUT=int8`` takes the int8 model input instead of raw
counts (``info()["input_format"] == "int8"``); ``quantize`` (counts -> int8, e.g. the
bundle's ``edge_runtime.preprocess.quantize_counts``) lets ``infer_window`` and
``stream`` take counts all the same (``edge_runtime.connect.open_device`` sets it).

Every command waits for the device's ``m-ready``; a missing reply raises
:class:`DeviceTimeout`, an ``e-[...]`` reply :class:`DeviceError`, each naming the
command and what was received.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

READY = "m-ready"
TERMINATOR = "%"
CANCEL = "\x18"  # discards a partly received line on the device
LINE_MAX = 256  # longest command line the firmware accepts
CHUNK_BYTES = 120  # bytes per `db <hex>` command: 3 + 240 characters
DEVICE_NAME = "tinygru"


# Seconds between sync nonces while a booting device may drop what it receives.
SYNC_RESEND = 2.0

# the device's input formats (info%: m-info-input-[...]) and their numpy types
INPUT_FORMATS = {"int16le": "<i2", "int8": "i1"}


def _int_or_none(v: str | None) -> int | None:
    return None if v is None else int(v)


class DeviceError(RuntimeError):
    """The device answered with an error, or with something unexpected."""


class DeviceTimeout(DeviceError):
    """The device did not finish its reply (``m-ready``) in time."""


def _shown(data: str, limit: int = 300) -> str:
    s = repr(data)
    return s if len(s) <= limit else s[: limit - 20] + "..." + s[-17:]


@dataclass
class Timing:
    """Timer ticks of ``runs`` whole windows, each from a zero state."""

    runs: int
    ticks: int
    hz: int
    instructions_per_second: float | None = None  # QEMU -icount shift=0: 1e9

    @property
    def ticks_per_window(self) -> float:
        return self.ticks / self.runs

    @property
    def seconds_per_window(self) -> float:
        return self.ticks_per_window / self.hz

    @property
    def instructions_per_window(self) -> float | None:
        """Instructions per window, when the clock counts instructions (emulation)."""
        if self.instructions_per_second is None:
            return None
        return self.seconds_per_window * self.instructions_per_second


class DeviceLink:
    """One connection to a device speaking the tinygru protocol.

    ``url`` is anything ``serial.serial_for_url`` opens. ``timeout`` bounds each
    command's reply (seconds; longer for ``infer`` with many runs).
    """

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 115200,
        timeout: float = 10.0,
        connect_timeout: float = 10.0,
        instructions_per_second: float | None = None,
        quantize: Any = None,
    ) -> None:
        import serial

        self.url = url
        self.timeout = float(timeout)
        self.instructions_per_second = instructions_per_second
        self.quantize = quantize  # counts (n, C) -> int8 (n, C), for an int8-input firmware
        self._buf = b""
        self._info: dict[str, Any] | None = None
        self._close_hooks: list[Any] = []
        try:
            self._ser = serial.serial_for_url(
                url, baudrate=baudrate, timeout=0.05, write_timeout=self.timeout
            )
        except (serial.SerialException, OSError, ValueError) as e:
            raise DeviceError(f"cannot open {url}: {e}") from e
        try:
            self.sync(timeout=connect_timeout)
            name = self.name()
            if name != DEVICE_NAME:
                raise DeviceError(
                    f"{url}: device calls itself {name!r}, not {DEVICE_NAME!r} "
                    "(not the tinygru reference firmware)"
                )
        except BaseException:
            self._ser.close()
            raise

    # ---- plumbing ---------------------------------------------------------

    def __enter__(self) -> DeviceLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on_close(self, fn: Any) -> None:
        """Call ``fn()`` after the port is closed (e.g. stop an emulator)."""
        self._close_hooks.append(fn)

    def close(self) -> None:
        try:
            self._ser.close()
        finally:
            hooks, self._close_hooks = self._close_hooks, []
            for fn in reversed(hooks):
                fn()

    def _read_line(self, deadline: float, cmd: str, got: list[str]) -> str:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                raw, self._buf = self._buf[:i], self._buf[i + 1 :]
                return raw.decode("ascii", "replace").rstrip("\r")
            if time.monotonic() > deadline:
                sofar = "\n".join(got + [self._buf.decode("ascii", "replace")])
                raise DeviceTimeout(
                    f"{self.url}: command {cmd!r}: no m-ready in time; received {_shown(sofar)}"
                )
            chunk = self._ser.read(max(1, self._ser.in_waiting or 1))
            if chunk:
                self._buf += chunk

    def _write(self, text: str) -> None:
        import serial

        try:
            self._ser.write(text.encode("ascii"))
        except serial.SerialTimeoutException as e:
            raise DeviceTimeout(f"{self.url}: sending {_shown(text)} timed out: {e}") from e

    def sync(self, timeout: float | None = None) -> None:
        """Drop any partial line and stale output: a nonce command's error echo marks the end.

        A nonce sent while the device still boots can lose bytes (its UART is not yet
        receiving), so a new nonce goes out every ``SYNC_RESEND`` seconds until one is
        echoed or the deadline passes.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        got: list[str] = []
        while True:
            nonce = "sync-" + secrets.token_hex(4)
            self._write(CANCEL + nonce + TERMINATOR)
            resend = min(deadline, time.monotonic() + SYNC_RESEND)
            seen = False
            try:
                while True:
                    line = self._read_line(resend, nonce, got)
                    got.append(line)
                    if nonce in line:
                        seen = True
                    elif seen and line == READY:
                        return
            except DeviceTimeout:
                if time.monotonic() >= deadline:
                    raise

    def command(self, cmd: str, *, timeout: float | None = None) -> list[str]:
        """Send ``cmd`` (without ``%``); return the reply lines before ``m-ready``."""
        if TERMINATOR in cmd or CANCEL in cmd:
            raise ValueError(f"command {cmd!r} holds a terminator or cancel byte")
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._write(CANCEL + cmd + TERMINATOR)
        got: list[str] = []
        while True:
            line = self._read_line(deadline, cmd, got)
            if line == READY:
                break
            got.append(line)
        errors = [g for g in got if g.startswith("e-")]
        if errors:
            raise DeviceError(
                f"{self.url}: command {cmd!r}: {errors[0]} (reply {_shown(chr(10).join(got))})"
            )
        return got

    def _expect(self, cmd: str, lines: list[str], pattern: str) -> re.Match[str]:
        for line in lines:
            m = re.fullmatch(pattern, line)
            if m:
                return m
        raise DeviceError(
            f"{self.url}: command {cmd!r}: expected a line like {pattern!r}, received {_shown(chr(10).join(lines))}"
        )

    # ---- commands ---------------------------------------------------------

    def name(self) -> str:
        lines = self.command("name")
        return self._expect("name", lines, r"m-name-dut-\[(.*)\]").group(1)

    def profile(self) -> dict[str, str]:
        lines = self.command("profile")
        return {"profile": self._expect("profile", lines, r"m-profile-\[(.*)\]").group(1),
                "model": self._expect("profile", lines, r"m-model-\[(.*)\]").group(1)}  # fmt: skip

    def info(self) -> dict[str, Any]:
        """Model name, the step model's sha256 (given at build) and the model data's (computed
        at boot: ``data_sha256``, ``data_bytes``, ``data_boot_ticks``; None from a firmware
        that does not report it), dims, quantization, engine version, target, timer rate,
        input format, and the MLPerf options (``model_id``, ``timestamp_mode``, ``baud``)."""
        if self._info is not None:
            return dict(self._info)
        lines = self.command("info")
        raw = {}
        for line in lines:
            m = re.fullmatch(r"m-info-([a-z0-9]+)-\[(.*)\]", line)
            if m:
                raw[m.group(1)] = m.group(2)
        for key in ("model", "sha256", "engine", "target", "dims", "quant", "input", "timer"):
            if key not in raw:
                raise DeviceError(
                    f"{self.url}: command 'info': no m-info-{key}-[...] line, received {_shown(chr(10).join(lines))}"
                )
        dims = dict(kv.split("=", 1) for kv in raw["dims"].split(","))
        quant = dict(kv.split("=", 1) for kv in raw["quant"].split(","))
        inp = raw["input"].split(",")
        data = dict(kv.split("=", 1) for kv in raw["data"].split(",")) if "data" in raw else {}
        mlperf = (
            dict(kv.split("=", 1) for kv in raw["mlperf"].split(",")) if "mlperf" in raw else {}
        )
        info = {
            "model": raw["model"], "sha256": raw["sha256"], "engine": raw["engine"],
            "target": raw["target"],
            "window": int(dims["window"]), "channels": int(dims["channels"]),
            "kernel": int(dims["kernel"]), "stride": int(dims["stride"]),
            "outputs": int(dims["outputs"]), "layers": int(dims["layers"]),
            "units": [int(u) for u in dims["units"].split("/")],
            "quant": {k: (float(v) if "." in v or "e" in v else int(v)) for k, v in quant.items()},
            "input_format": inp[0], "input_bytes": int(inp[1].split("=", 1)[1]),
            "timer_hz": int(raw["timer"].split("=", 1)[1]),
            "data_sha256": data.get("sha256"), "data_bytes": _int_or_none(data.get("bytes")),
            "data_boot_ticks": _int_or_none(data.get("boot_ticks")),
            "data_dsp": _int_or_none(data.get("dsp")),
            "model_id": mlperf.get("model"), "timestamp_mode": mlperf.get("timestamp"),
            "baud": _int_or_none(mlperf.get("baud")),
        }  # fmt: skip
        if info["input_format"] not in INPUT_FORMATS:
            raise DeviceError(
                f"{self.url}: command 'info': input format {info['input_format']!r}, expected "
                f"one of {sorted(INPUT_FORMATS)}"
            )
        self._info = info
        return dict(info)

    def load(self, counts: np.ndarray) -> None:
        """Fill the device's input buffer with int16 counts ``(n, C)`` (little endian), or,
        for an int8-input firmware, with ``quantize(counts)``."""
        info = self.info()
        c = np.asarray(counts)
        if c.ndim != 2 or c.shape[1] != info["channels"] or c.shape[0] < 1:
            raise ValueError(f"counts must be (samples, {info['channels']}), got shape {c.shape}")
        if c.dtype != np.int16 and (c.min() < -32768 or c.max() > 32767):
            raise ValueError("counts out of int16 range")
        if info["input_format"] == "int8":
            if self.quantize is None:
                raise DeviceError(
                    f"{self.url}: the firmware takes the int8 model input (DUT_INPUT=int8); "
                    "give the link a quantize function (connect.open_device does, from the bundle)"
                )
            self.load_values(np.asarray(self.quantize(c), np.int8))
        else:
            self.load_values(c.astype("<i2"))

    def load_values(self, values: np.ndarray) -> None:
        """Fill the input buffer with ``(n, C)`` values in the firmware's input format as they
        are: int16 counts (``int16le``) or int8 model inputs (``int8``)."""
        info = self.info()
        v = np.asarray(values)
        want = INPUT_FORMATS[info["input_format"]]
        if v.dtype != np.dtype(want) or v.ndim != 2 or v.shape[1] != info["channels"]:
            raise ValueError(
                f"values must be {np.dtype(want).name} (samples, {info['channels']}) for a "
                f"{info['input_format']} firmware, got {v.dtype} {v.shape}"
            )
        data = v.tobytes()
        if len(data) > info["input_bytes"]:
            raise ValueError(
                f"{v.shape[0]} samples need {len(data)} bytes; the device holds {info['input_bytes']}"
            )
        cmd = f"db load {len(data)}"
        self._expect(cmd, self.command(cmd), rf"m-\[Expecting {len(data)} bytes\]")
        for i in range(0, len(data), CHUNK_BYTES):
            cmd = "db " + data[i : i + CHUNK_BYTES].hex()
            lines = self.command(cmd)
            if i + CHUNK_BYTES >= len(data):
                self._expect(f"db <{len(data) - i} bytes>", lines, r"m-load-done")

    def infer(self, runs: int = 1, warmup: int = 0) -> list[float]:
        """``infer runs warmup`` on the loaded input; the m-results values (dequantized)."""
        cmd = f"infer {int(runs)} {int(warmup)}"
        lines = self.command(cmd, timeout=self.timeout + 0.01 * (runs + warmup))
        self._expect(cmd, lines, r"m-infer-done")
        laps = [int(m.group(1)) for x in lines if (m := re.fullmatch(r"m-lap-us-(\d+)", x))]
        want = 0 if self.info()["timestamp_mode"] == "energy" else 2  # energy: pin pulses
        if len(laps) != want:
            raise DeviceError(
                f"{self.url}: command {cmd!r}: expected {want} m-lap-us lines, received {_shown(chr(10).join(lines))}"
            )
        res = self._expect(cmd, lines, r"m-results-\[(.*)\]").group(1)
        return [float(v) for v in res.split(",")] if res else []

    def results_raw(self) -> np.ndarray:
        """The int8 head output of the last inference or stream step."""
        lines = self.command("results-raw")
        res = self._expect("results-raw", lines, r"m-results-raw-\[(.*)\]").group(1)
        return np.array([int(v) for v in res.split(",")], np.int8)

    def ticks(self) -> Timing:
        lines = self.command("ticks")
        m = self._expect("ticks", lines, r"m-ticks-\[runs=(\d+),total=(\d+),hz=(\d+)\]")
        return Timing(int(m.group(1)), int(m.group(2)), int(m.group(3)),
                      self.instructions_per_second)  # fmt: skip

    def infer_window(self, counts: np.ndarray) -> np.ndarray:
        """int16 counts ``(T, C)`` -> int8 head output of the last step, from a zero state."""
        self.load(counts)
        self.infer(1, 0)
        y = self.results_raw()
        if len(y) != self.info()["outputs"]:
            raise DeviceError(
                f"{self.url}: results-raw has {len(y)} values, model has {self.info()['outputs']} outputs"
            )
        return y

    def timing(self, counts: np.ndarray | None = None, runs: int = 5, warmup: int = 1) -> Timing:
        """Timer ticks of ``runs`` windows (after ``warmup``) on ``counts`` or the loaded input."""
        if counts is not None:
            self.load(counts)
        self.infer(runs, warmup)
        return self.ticks()

    def stream_reset(self) -> None:
        self._expect("stream reset", self.command("stream reset"), r"m-stream-reset")

    def stream_push(self, counts: np.ndarray) -> np.ndarray:
        """Push samples through the device's carried state; int8 ``(steps, n_outputs)``."""
        self.load(counts)
        lines = self.command("stream")
        m = self._expect("stream", lines, r"m-stream-\[samples=(\d+),steps=(\d+),t=(\d+)\]")
        steps = [
            [int(v) for v in g.group(1).split(",")]
            for x in lines
            if (g := re.fullmatch(r"m-step-\[(.*)\]", x))
        ]
        n_out = self.info()["outputs"]
        if len(steps) != int(m.group(2)) or any(len(s) != n_out for s in steps):
            raise DeviceError(
                f"{self.url}: command 'stream': {m.group(2)} steps announced, received "
                f"{_shown(chr(10).join(lines))}"
            )
        return np.array(steps, np.int8).reshape(len(steps), n_out)

    def stream(self, counts: np.ndarray) -> np.ndarray:
        """A series of int16 counts ``(n, C)`` from a zero state: every step's int8 output."""
        c = np.asarray(counts)
        self.stream_reset()
        per = self.info()["window"]
        outs = [self.stream_push(c[i : i + per]) for i in range(0, len(c), per)]
        if not outs:
            return np.zeros((0, self.info()["outputs"]), np.int8)
        return np.concatenate(outs)
