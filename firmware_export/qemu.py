"""The engine on an emulated Cortex-M4 (``mps2-an386``) or Cortex-M3 (``mps2-an385``).

``build_firmware`` links the exported engine, the generated model data, the MPS2
board support in ``firmware/board/mps2/`` (startup, linker script) and the program
in ``engine/target/`` (semihosting calls) with
arm-none-eabi-gcc ``-O2``; the ELF is cached under ``build/cache/qemu/<sha256>/``.
``run`` writes the windows to ``tg_in.bin`` in a temporary folder, boots the ELF in
qemu-system-arm with semihosting and ``-icount shift=0`` (one instruction = 1 ns
of virtual time) and reads ``tg_out.bin``: per window the head output, the final
GRU states and the SysTick ticks of ``tg_window`` (25 MHz SysTick: one tick = 40
instructions), plus the painted-stack high-water mark of the whole program.

    python -m firmware_export.qemu --bundle B [--target m4|m3] [--windows N]

compares the emulated engine with the host engine on the bundle's reference windows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGET_DIR = Path(__file__).resolve().parent / "engine" / "target"
BOARD_DIR = ROOT / "firmware" / "board" / "mps2"
CACHE = ROOT / "build" / "cache" / "qemu"
CC = "arm-none-eabi-gcc"
QEMU = "qemu-system-arm"

TARGETS = {
    "m4": {"machine": "mps2-an386", "cpu": "cortex-m4"},
    "m3": {"machine": "mps2-an385", "cpu": "cortex-m3"},
}
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-mthumb", "-mfloat-abi=soft",
          "-ffunction-sections", "-fdata-sections")  # fmt: skip
LDFLAGS = ("--specs=nano.specs", "-nostartfiles", "-Wl,--gc-sections")
SYSTICK_HZ = 25_000_000
INSTRUCTIONS_PER_TICK = 1_000_000_000 // SYSTICK_HZ  # -icount shift=0: 1 instruction = 1 ns
SERIES_PIECE = 500  # samples per window cut from a forecast bundle's series
MAGIC_IN, MAGIC_OUT = 0x4E494754, 0x554F4754
EXIT_CODES = {2: "semihosting open failed", 3: "semihosting read failed",
              4: "bad input header (channels or window too large)", 5: "tg_stream_init failed",
              6: "semihosting write failed", 0x7F: "CPU fault"}  # fmt: skip


def missing_tools() -> str | None:
    """Why the emulator run is impossible here (a missing tool), or None."""
    for tool in (CC, QEMU):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian: see debian-packages.txt)"
    return None


@dataclass
class QemuResult:
    """One emulator run over n windows."""

    y: np.ndarray  # (n, n_outputs) int8 head outputs
    h: np.ndarray  # (n, sum of units) int8 final GRU states, layer after layer
    status: np.ndarray  # (n,) tg_window status
    instructions: np.ndarray  # (n,) instructions of tg_window, to INSTRUCTIONS_PER_TICK
    peak_stack_bytes: int  # painted-stack high-water mark of the whole program
    target: str
    machine: str


def _firmware_of(bundle_dir: str | Path) -> tuple[Path, str]:
    from firmware_export.export import export

    result = export(bundle_dir)
    return Path(result["out"]), result["prefix"]


def build_firmware(firmware_dir: str | Path, prefix: str, target: str = "m4") -> Path:
    """Compile and link the firmware ELF for ``target`` (cached); returns its path."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r}: use one of {sorted(TARGETS)}")
    fw = Path(firmware_dir).resolve()
    P = prefix.upper()
    sources = [BOARD_DIR / "startup.c", *sorted(TARGET_DIR.glob("*.c")),
               *sorted((fw / "engine").glob("*.c")), fw / f"{prefix}_model.c"]  # fmt: skip
    headers = [BOARD_DIR / "board.h", *sorted(TARGET_DIR.glob("*.h")),
               *sorted((fw / "engine").glob("*.h")), fw / f"{prefix}_model.h"]  # fmt: skip
    flags = [*CFLAGS, f"-mcpu={TARGETS[target]['cpu']}",
             f"-DTGT_MODEL_H=\"{prefix}_model.h\"", f"-DTGT_MODEL={prefix}_model",
             f"-DTGT_STATE_BYTES={P}_STATE_BYTES", f"-DTGT_SCRATCH_BYTES={P}_SCRATCH_BYTES",
             f"-I{fw}", f"-I{fw / 'engine'}", f"-I{TARGET_DIR}", f"-I{BOARD_DIR}",
             "-DBOARD_SEMIHOST_EXIT"]  # fmt: skip
    ld = [*LDFLAGS, f"-T{BOARD_DIR / 'mps2.ld'}"]
    h = hashlib.sha256()
    h.update(
        subprocess.run(
            [CC, "--version"], capture_output=True, text=True, check=True
        ).stdout.encode()
    )
    h.update("\0".join([*flags, *ld]).encode())
    for p in [*sources, *headers, BOARD_DIR / "mps2.ld"]:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    out_dir = CACHE / h.hexdigest()
    elf = out_dir / "fw.elf"
    if elf.is_file():
        return elf
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"fw.{id(flags)}.elf.tmp"
    cmd = [CC, *flags, *map(str, sources), *ld, "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
    tmp.replace(elf)
    return elf


def run_elf(
    elf: str | Path, target: str, windows: np.ndarray, *, timeout: float = 120.0
) -> QemuResult:
    """Boot ``elf`` on the target's board with ``windows`` (n, T, C) int16 as tg_in.bin."""
    w = np.ascontiguousarray(windows, np.int16)
    if w.ndim != 3:
        raise ValueError(f"windows must be (n, samples, channels), got shape {w.shape}")
    machine = TARGETS[target]["machine"]
    with tempfile.TemporaryDirectory(prefix="tg_qemu_") as tmp:
        d = Path(tmp)
        head = np.array([MAGIC_IN, *w.shape], "<u4").tobytes()
        (d / "tg_in.bin").write_bytes(head + w.astype("<i2").tobytes())
        cmd = [QEMU, "-M", machine, "-display", "none", "-monitor", "none", "-serial", "none",
               "-nodefaults", "-semihosting-config", "enable=on,target=native",
               "-icount", "shift=0,align=off,sleep=off", "-kernel", str(Path(elf).resolve())]  # fmt: skip
        proc = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            why = EXIT_CODES.get(proc.returncode, "qemu error")
            raise RuntimeError(
                f"{machine}: exit code {proc.returncode} ({why}) {proc.stderr.strip()}"
            )
        data = (d / "tg_out.bin").read_bytes()
    magic, n, n_out, h_bytes = np.frombuffer(data[:16], "<u4")
    if magic != MAGIC_OUT or n != len(w):
        raise RuntimeError(f"{machine}: bad output header {data[:16].hex()}")
    rec = np.dtype(
        [("ticks", "<u4"), ("status", "<i4"), ("y", "i1", (n_out,)), ("h", "i1", (h_bytes,))]
    )
    body = data[16 : 16 + n * rec.itemsize]
    if len(body) != n * rec.itemsize or len(data) != 16 + n * rec.itemsize + 4:
        raise RuntimeError(
            f"{machine}: output has {len(data)} bytes, expected {16 + n * rec.itemsize + 4}"
        )
    r = np.frombuffer(body, rec)
    peak = int(np.frombuffer(data[-4:], "<u4")[0])
    return QemuResult(y=r["y"].copy(), h=r["h"].copy(), status=r["status"].copy(),
                      instructions=r["ticks"].astype(np.int64) * INSTRUCTIONS_PER_TICK,
                      peak_stack_bytes=peak, target=target, machine=machine)  # fmt: skip


def run(
    bundle_dir: str | Path, target: str, windows: np.ndarray, *, timeout: float = 120.0
) -> QemuResult:
    """Export the bundle, build its firmware for ``target`` and run ``windows`` on QEMU."""
    fw, prefix = _firmware_of(bundle_dir)
    return run_elf(build_firmware(fw, prefix, target), target, windows, timeout=timeout)


def run_on_qemu(bundle_dir: str | Path, target: str, windows: np.ndarray) -> np.ndarray:
    """Head outputs ``(n, n_outputs)`` int8 of ``tg_window`` on each window, from a zero state."""
    res = run(bundle_dir, target, windows)
    if (res.status < 0).any():
        raise RuntimeError(f"tg_window failed with status {res.status.min()}")
    return res.y


def compare_with_host(bundle_dir: str | Path, target: str, n_windows: int | None = None) -> dict:
    """Emulated engine vs host engine on the bundle's reference windows (tolerance 0).

    Head output and final GRU states of ``tg_window`` on each window, from a zero state.
    """
    from edge_runtime.bundle import Bundle
    from firmware_export import host
    from firmware_export.export import prepare

    bundle = Bundle.open(bundle_dir)
    ref = bundle.load_npz("reference.npz")
    if "x_counts" in ref:
        windows = ref["x_counts"][:n_windows]
    else:  # a forecast bundle: consecutive pieces of the series, each from a zero state
        series = ref["series_counts"]
        n = len(series) // SERIES_PIECE
        windows = series[: n * SERIES_PIECE].reshape(n, SERIES_PIECE, -1)[:n_windows]
    fw, prefix = _firmware_of(bundle_dir)
    m = prepare(bundle).model
    eng = host.load(fw, prefix, m)
    want_y, want_h = [], []
    for w in windows:
        want_y.append(eng.window(w))
        want_h.append(np.concatenate(eng.state()))
    res = run(bundle_dir, target, windows)
    return {
        "target": target, "machine": res.machine, "windows": len(windows),
        "y_mismatches": int((res.y != np.stack(want_y)).sum()),
        "h_mismatches": int((res.h != np.stack(want_h)).sum()),
        "instructions_per_window": int(np.median(res.instructions)),
        "instructions_per_step": float(np.median(res.instructions)) / len(range(0, windows.shape[1], m.stride)),
        "peak_stack_bytes": res.peak_stack_bytes,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_export.qemu")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--target", choices=sorted(TARGETS), action="append")
    parser.add_argument("--windows", type=int, default=None, help="first N reference windows")
    ns = parser.parse_args(argv)
    why = missing_tools()
    if why:
        print(f"firmware_export.qemu: {why}", file=sys.stderr)
        return 1
    bad = 0
    for t in ns.target or ["m4", "m3"]:
        rep = compare_with_host(ns.bundle, t, ns.windows)
        print(json.dumps(rep))
        bad += rep["y_mismatches"] + rep["h_mismatches"]
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
