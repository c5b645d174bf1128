"""socat joining two ptys, so a sensor stream crosses a real tty (replays, tests).

::

    br = Bridge(folder)          # the ends appear as folder/a and folder/b
    br.start()
    ...                          # write into br.a, open_source(f"serial:{br.b}", ...)
    br.stop()

Needs ``socat`` (Debian package, listed in debian-packages.txt).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

__all__ = ["Bridge"]


class Bridge:
    """socat joining two ptys, reachable as ``a`` and ``b`` (symlinks in a temp folder)."""

    def __init__(self, folder: Path) -> None:
        self.a = folder / "a"
        self.b = folder / "b"
        self.log = folder / "socat.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "socat",
                    "-d",
                    "-d",
                    f"pty,raw,echo=0,link={self.a}",
                    f"pty,raw,echo=0,link={self.b}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        t0 = time.monotonic()
        while not (self.a.exists() and self.b.exists()):
            if self.proc.poll() is not None or time.monotonic() - t0 > 10:
                raise RuntimeError(f"socat did not start: {self.log.read_text()}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
