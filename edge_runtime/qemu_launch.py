"""Start the reference firmware on an emulated board for ``--device qemu:<board>``.

    with open_qemu_link("build/har", "an386") as dev:   # a DeviceLink
        dev.infer_window(counts)

A board is any name :func:`edge_runtime.boards.board` knows (``mps2-an386``, ``an386``
or ``m4``; ``netduinoplus2`` or ``stm32f405``, ``microbit`` or ``m0``, ...). The ELF is
``<bundle>/firmware/build/<board>-<opt>/dut.elf`` (``make -C firmware BUNDLE=<bundle>``).
The board's console, the machine's first UART or USART (UART0 on MPS2/MPS3, the nRF51
UART on the micro:bit, USART1 on the STM32F405), becomes a TCP server on a free loopback port
(``-serial tcp:127.0.0.1:PORT,server=on,wait=on,nodelay=on``: the guest starts when
the link connects) and the link connects with ``socket://127.0.0.1:PORT``. With
``-icount shift=0`` one guest instruction takes 1 ns of virtual time, so the firmware's
timer counts instructions (``Timing.instructions_per_window``; the board's clock is its
``timer_hz``), not Cortex-M cycles.
QEMU is stopped when the link closes.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_runtime import boards
from edge_runtime.contract import FIRMWARE_DIR
from edge_runtime.device import DeviceError, DeviceLink

QEMU = "qemu-system-arm"
INSTRUCTIONS_PER_SECOND = 1e9  # -icount shift=0


def elf_path(bundle: str | Path, board: str, opt: str = "O2") -> Path:
    """Where ``make -C firmware BUNDLE=<bundle>`` puts the DUT ELF for ``board``."""
    name = boards.board(board).name
    return Path(bundle) / FIRMWARE_DIR / "build" / f"{name}-{opt}" / "dut.elf"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class QemuBoard:
    """One qemu-system-arm process running ``elf`` with its console on a loopback TCP port."""

    def __init__(self, elf: str | Path, board: str = "an386", *, icount: bool = True) -> None:
        self.elf = Path(elf).resolve()
        self.board = boards.board(board)
        self.machine = self.board.name
        self.icount = icount
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [QEMU, "-M", self.machine, "-display", "none", "-monitor", "none",
               "-nodefaults", "-nic", "none"]  # fmt: skip
        if self.icount:
            cmd += ["-icount", "shift=0,align=off,sleep=off"]
        cmd += ["-serial", f"tcp:127.0.0.1:{self.port},server=on,wait=on,nodelay=on",
                "-kernel", str(self.elf)]  # fmt: skip
        return cmd

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace").strip()

    def start(self, timeout: float = 10.0) -> str:
        """Start QEMU; returns the pyserial URL once the TCP server listens."""
        if shutil.which(QEMU) is None:
            raise DeviceError(f"{QEMU} not found (Debian: qemu-system-arm)")
        if not self.elf.is_file():
            raise DeviceError(f"no firmware {self.elf}: run `make -C firmware BUNDLE=<bundle>`")
        for _attempt in range(3):
            self.port = _free_port()
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=self._log, stderr=self._log)  # fmt: skip
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if "waiting for connection" in self.log():
                    return self.url
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.stop()
                raise DeviceError(
                    f"{self.machine}: QEMU did not listen in {timeout} s: {self.log()}"
                )
            # exited: most likely the port was taken in between; try another
        raise DeviceError(f"{self.machine}: QEMU exited with {self.proc.returncode}: {self.log()}")

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> QemuBoard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def open_qemu_link(bundle: str | Path, board: str = "an386", *, opt: str = "O2",
                   elf: str | Path | None = None, **link_kw: Any) -> DeviceLink:  # fmt: skip
    """Start the bundle's DUT firmware on ``board`` and connect; QEMU stops on ``close()``."""
    q = QemuBoard(elf if elf is not None else elf_path(bundle, board, opt), board)
    q.start()
    try:
        link_kw.setdefault("instructions_per_second", INSTRUCTIONS_PER_SECOND if q.icount else None)
        link = DeviceLink(q.url, **link_kw)
    except BaseException as e:
        log = q.log()
        q.stop()
        if isinstance(e, DeviceError) and log:
            raise DeviceError(f"{e} [qemu: {log}]") from e
        raise
    link.on_close(q.stop)
    link.qemu = q  # type: ignore[attr-defined]
    return link
