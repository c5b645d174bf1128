"""The engine on emulated boards: every board of :mod:`edge_runtime.boards`, named as
it names them (``m4``, ``an386`` or ``mps2-an386``): Cortex-M4 (``mps2-an386``),
Cortex-M3 without DSP (``mps2-an385``, the portable C path), Cortex-M7 (``mps2-an500``),
Cortex-M0 (``microbit``, ARMv6-M: portable C, 64-bit products in libgcc), Cortex-M33
(``mps2-an505``, Secure state), Cortex-M55 (``mps3-an547``) and the STM32F405
(``netduinoplus2``, ``stm32f405``).

``build_firmware`` has ``firmware/Makefile`` build its ``runner`` program (the
runner in ``firmware/runner/``, the board's support, the exported engine and model
data) at ``-O2``; :func:`build_program` keeps every ELF it builds under
``build/cache/<program>/<sha256>/`` (the key: compiler version, the Makefile's flags
and the names and contents of the files it lists as inputs).
``run`` writes the windows to ``tg_in.bin`` in a temporary folder, boots the ELF in
qemu-system-arm with semihosting and ``-icount shift=0`` (one instruction = 1 ns
of virtual time) and reads ``tg_out.bin``: per window the head output, the final
GRU states and the SysTick ticks of ``tg_window`` (SysTick at the board's clock: one
tick = 1e9 / ``clock_hz`` instructions, 40 on the 25 MHz MPS2 boards), plus the painted-stack high-water mark of the whole program. In
series mode (``run_elf(..., series=True)``) the program pushes a whole series
sample by sample with the state carried and returns every step instead.

    python -m firmware_export mcu --bundle B [--target m4|m3|m7 ...] [--windows N] [--report]

compares the emulated engine with the host engine on the bundle's reference windows;
``--report`` runs all of them (or N; a forecaster's whole test series, state
carried), compares them with ``engine_outputs.npz`` at tolerance 0 and writes
``reports/mcu_<target>.json`` (:func:`mcu_report`; ``<target>`` is the board's core,
``m4``): mismatches, instructions per step and window, peak stack and ``backend``,
the parity entry of the emulator's own outputs (:mod:`edge_runtime.parity_entry`).
Exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import boards

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"  # the Makefile of every Cortex-M program
CACHE = ROOT / "build" / "cache"
CC = "arm-none-eabi-gcc"
QEMU = "qemu-system-arm"
MAKE = "make"

# a board's core (its report name, mcu_m4.json) -> its QEMU machine and CPU
TARGETS = {b.core: {"machine": b.name, "cpu": b.cpu} for b in boards.BOARDS}
DEFAULT_TARGETS = tuple(
    b.core for b in boards.BOARDS
)  # the mcu stage: every board (mcu_m4.json, ...)
MCU_TARGET_ARGS = tuple(a for t in DEFAULT_TARGETS for a in ("--target", t))
SYSTICK_HZ = 25_000_000  # the MPS2 boards (AN385/AN386/AN500); others: Board.clock_hz
INSTRUCTIONS_PER_TICK = 1_000_000_000 // SYSTICK_HZ  # -icount shift=0: 1 instruction = 1 ns
SERIES_PIECE = 500  # samples per window cut from a forecast bundle's series
MAGIC_IN, MAGIC_OUT = 0x4E494754, 0x554F4754  # "TGIN", "TGOU": windows
MAGIC_SERIES_IN, MAGIC_SERIES_OUT = 0x53494754, 0x534F4754  # "TGIS", "TGOS": series
EXIT_CODES = {2: "semihosting open failed", 3: "semihosting read failed",
              4: "bad input header (channels or window too large)", 5: "tg_stream_init failed",
              6: "semihosting write failed", 0x7F: "CPU fault"}  # fmt: skip


def target_name(name: str) -> str:
    """The report name of a board (``mps2-an386``, ``an386`` or ``m4``): its core, ``m4``."""
    return boards.board(name).core


def ticks_to_instructions(ticks: np.ndarray, board: str) -> np.ndarray:
    """SysTick ticks on ``board`` as instructions (int64): under ``-icount shift=0`` one
    instruction is 1 ns, one tick 1e9 / ``clock_hz`` ns (exactly 40 at 25 MHz; else
    rounded to the nearest instruction, a resolution of one tick)."""
    hz = boards.board(board).clock_hz
    t = np.asarray(ticks, np.int64)
    if 1_000_000_000 % hz == 0:
        return t * (1_000_000_000 // hz)
    return (t * 1_000_000_000 + hz // 2) // hz


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
    instructions: np.ndarray  # (n,) instructions of tg_window: ticks × 1e9 / clock, rounded
    peak_stack_bytes: int  # painted-stack high-water mark of the whole program
    target: str
    machine: str


def _firmware_of(bundle_dir: str | Path) -> tuple[Path, str]:
    from firmware_export.export import export

    result = export(bundle_dir)
    return Path(result["out"]), result["prefix"]


def build_firmware(firmware_dir: str | Path, prefix: str, target: str = "m4") -> Path:
    """The runner ELF of the export in ``firmware_dir`` for board ``target`` (cached)."""
    return build_program("runner", firmware_dir, target, prefix=prefix)


class BuildError(RuntimeError):
    """``firmware/Makefile`` failed; the message leads with its first error line."""

    def __init__(self, cmd: list[str], output: str) -> None:
        lines = [x.strip() for x in output.splitlines() if x.strip()]
        first = next((x for x in lines if "error" in x.lower()), lines[-1] if lines else "")
        super().__init__(f"{first} (make -C firmware {' '.join(cmd[6:])})")
        self.cmd, self.output = cmd, output


def _make(args: Sequence[str]) -> str:
    # PYTHON: the Makefile reads the board table and the export's files.json with it
    cmd = [MAKE, "-s", "--no-print-directory", "-C", str(FIRMWARE), f"PYTHON={sys.executable}"]
    cmd += args
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(cmd, proc.stderr + proc.stdout)
    return proc.stdout


def _input_name(path: Path, fw: Path) -> str:
    """A build input's name in the cache key: its path in the export or in firmware/."""
    for base in (fw, FIRMWARE):
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix()
    return str(path)


def build_program(
    program: str,
    firmware_dir: str | Path,
    board: str,
    *,
    prefix: str | None = None,
    options: Sequence[str] = (),
) -> Path:
    """Have ``firmware/Makefile`` build ``program`` (``runner``, ``kbench``) of the export in
    ``firmware_dir`` for ``board`` with make ``options`` (``DSP=0``); returns the ELF.

    Cached in ``build/cache/<program>/<key>/``: the key hashes the compiler version, the
    program, board and options, the flags the Makefile compiles with and the contents of
    every file it lists as the build's inputs (``make inputs``), each named by its path
    in the export or in ``firmware/``, so an export in another folder with the same files
    reuses the ELF. ``prefix``, when given, must be the export's. A failed build raises
    :class:`BuildError`.
    """
    fw = Path(firmware_dir).resolve()
    name = boards.board(board).name
    args = [f"FW={fw}", f"BOARD={name}", *options]
    inputs = _make(["inputs", f"PROGRAM={program}", *args])
    lines = dict(line.split(" ", 1) for line in inputs.splitlines() if " " in line)
    got = lines.get("prefix")
    if prefix is not None and got != prefix:
        raise ValueError(f"{fw / 'files.json'}: prefix {got!r}, expected {prefix!r}")
    h = hashlib.sha256()
    cc = subprocess.run([CC, "--version"], capture_output=True, text=True, check=True)
    h.update(cc.stdout.encode())
    h.update("\0".join([program, name, *options, lines["cflags"], lines["ldflags"]]).encode())
    for f in lines["files"].split():
        p = Path(f)
        h.update(_input_name(p, fw).encode() + b"\0" + p.read_bytes())
    out_dir = CACHE / program / h.hexdigest()
    elf = out_dir / f"{program}.elf"
    if elf.is_file():
        return elf
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=out_dir, prefix="tmp.") as tmp:
            _make([program, *args, f"OUT={tmp}"])
            os.replace(Path(tmp) / f"{program}.elf", elf)  # atomic: all or nothing is seen
    except BuildError:
        with contextlib.suppress(OSError):
            out_dir.rmdir()  # nothing cached for a failed build (unless another run made it)
        raise
    return elf


def boot(
    elf: str | Path, machine: str, in_name: str, data: bytes, out_name: str, timeout: float
) -> bytes:
    """Boot ``elf`` on ``machine`` (icount, semihosting) in a fresh folder holding ``data``
    as ``in_name``; returns the bytes the firmware wrote to ``out_name``."""
    with tempfile.TemporaryDirectory(prefix="tg_qemu_") as tmp:
        d = Path(tmp)
        (d / in_name).write_bytes(data)
        cmd = [QEMU, "-M", machine, "-display", "none", "-monitor", "none", "-serial", "none",
               "-nodefaults", "-semihosting-config", "enable=on,target=native",
               "-icount", "shift=0,align=off,sleep=off", "-kernel", str(Path(elf).resolve())]  # fmt: skip
        proc = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            why = EXIT_CODES.get(proc.returncode, "qemu error")
            raise RuntimeError(
                f"{machine}: exit code {proc.returncode} ({why}) {proc.stderr.strip()}"
            )
        return (d / out_name).read_bytes()


def run_elf(
    elf: str | Path,
    target: str,
    windows: np.ndarray,
    *,
    series: bool = False,
    timeout: float = 120.0,
) -> QemuResult:
    """Boot ``elf`` on the target's board with ``windows`` (n, T, C) int16 as tg_in.bin.

    ``series=False``: one ``tg_window`` per window, one result row per window.
    ``series=True``: each of the n series pushed sample by sample with its state
    carried (reset at its start), one result row per step (``instructions`` = the
    pushes since the previous step).
    """
    w = np.ascontiguousarray(windows, np.int16)
    if w.ndim != 3:
        raise ValueError(f"windows must be (n, samples, channels), got shape {w.shape}")
    machine = boards.board(target).name
    magic_in, magic_out = (MAGIC_SERIES_IN, MAGIC_SERIES_OUT) if series else (MAGIC_IN, MAGIC_OUT)
    head = np.array([magic_in, *w.shape], "<u4").tobytes()
    data = boot(elf, machine, "tg_in.bin", head + w.astype("<i2").tobytes(), "tg_out.bin", timeout)
    magic, n, n_out, h_bytes = np.frombuffer(data[:16], "<u4")
    if magic != magic_out or n != len(w):
        raise RuntimeError(f"{machine}: bad output header {data[:16].hex()}")
    rec = np.dtype(
        [("ticks", "<u4"), ("status", "<i4"), ("y", "i1", (n_out,)), ("h", "i1", (h_bytes,))]
    )
    rows = n if not series else (len(data) - 20) // rec.itemsize
    body = data[16 : 16 + rows * rec.itemsize]
    if len(body) != rows * rec.itemsize or len(data) != 16 + rows * rec.itemsize + 4:
        raise RuntimeError(
            f"{machine}: output has {len(data)} bytes, expected {16 + rows * rec.itemsize + 4}"
        )
    r = np.frombuffer(body, rec)
    peak = int(np.frombuffer(data[-4:], "<u4")[0])
    return QemuResult(y=r["y"].copy(), h=r["h"].copy(), status=r["status"].copy(),
                      instructions=ticks_to_instructions(r["ticks"], machine),
                      peak_stack_bytes=peak, target=target_name(target), machine=machine)  # fmt: skip


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
    want_y, want_h = host.load(fw, prefix, m).windows(windows)
    res = run(bundle_dir, target, windows)
    return {
        "target": res.target, "machine": res.machine, "windows": len(windows),
        "y_mismatches": int((res.y != want_y).sum()),
        "h_mismatches": int((res.h != want_h).sum()),
        "instructions_per_window": int(np.median(res.instructions)),
        "instructions_per_step": float(np.median(res.instructions)) / len(range(0, windows.shape[1], m.stride)),
        "peak_stack_bytes": res.peak_stack_bytes,
    }  # fmt: skip


def _engine_outputs(bundle: Any, prep: Any) -> dict[str, np.ndarray]:
    """The host engine's outputs (engine_outputs.npz), refused when not of this step model."""
    from edge_runtime.bundle import BundleError

    hint = "run `python -m firmware_export engine` first"
    if not bundle.has("engine_outputs.npz") or not bundle.has("reports/engine.json"):
        raise BundleError(f"{bundle.root / 'engine_outputs.npz'}: not in the bundle: {hint}")
    made_for = bundle.read_json("reports/engine.json").get("step_model_sha256")
    if made_for != prep.sha256:
        raise BundleError(
            f"{bundle.root / 'reports/engine.json'}: step_model_sha256 {str(made_for)[:12]}…, "
            f"expected {prep.sha256[:12]}… (the bundle's step model): {hint}"
        )
    return bundle.load_npz("engine_outputs.npz")


def _mismatches(name: str, got: np.ndarray, want: np.ndarray) -> tuple[int, str | None]:
    """Values that differ (tolerance 0) and a line naming the first one."""
    if got.shape != want.shape:
        return max(got.size, want.size), f"{name}: shape {got.shape}, expected {want.shape}"
    bad = np.argwhere(got != want)
    if len(bad) == 0:
        return 0, None
    i = tuple(int(v) for v in bad[0])
    return len(bad), f"{name}{list(i)}: emulator {int(got[i])}, host engine {int(want[i])}"


def mcu_report(
    bundle_dir: str | Path,
    target: str,
    n_windows: int | None = None,
    *,
    sizes_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the reference data on the emulated ``target`` and judge it (``mcu_<target>.json``).

    Classifier: the first ``n_windows`` (default all) reference windows, one ``tg_window``
    each from a zero state. Forecaster: the whole test series through ``tg_push_sample``
    with the state carried (``n_windows`` does not apply). The head outputs and final
    GRU states are compared with ``engine_outputs.npz`` (tolerance 0); ``backend`` is the
    parity entry of the emulator's own outputs (:mod:`edge_runtime.parity_entry`).
    """
    from edge_runtime.bundle import Bundle
    from edge_runtime.parity_entry import Reference
    from firmware_export import sizes
    from firmware_export.export import prepare

    bundle = Bundle.open(bundle_dir)
    prep = prepare(bundle)
    m = prep.model
    engine = _engine_outputs(bundle, prep)
    ref = Reference.from_bundle(bundle)
    fw, prefix = _firmware_of(bundle_dir)
    if sizes_info is None:
        sizes_info = sizes.firmware_sizes(fw, prefix)
    elf = build_firmware(fw, prefix, target)
    # final GRU states, layer after layer: (windows, sum of units), or (1, ...) for a series
    h_final = np.concatenate(
        [np.atleast_2d(engine[f"h{i + 1}_final"]) for i in range(len(m.units))], axis=-1
    )
    classify = ref.task == "classification"
    data = ref.ref["x_counts"][:n_windows] if classify else ref.ref["series_counts"][None]
    steps_per_run = len(range(0, data.shape[1], m.stride))
    n_steps = len(data) * steps_per_run
    t0 = time.perf_counter()
    res = run_elf(elf, target, data, series=not classify, timeout=120.0 + 1e-3 * n_steps)
    seconds = time.perf_counter() - t0
    if classify:
        checks = [("y", res.y, engine["y"][: len(data)]), ("h", res.h, h_final[: len(data)])]
        per_window = float(np.median(res.instructions))
        per_step = per_window / steps_per_run
    else:
        checks = [("y", res.y, engine["y"]), ("h_final", res.h[-1:], h_final)]
        per_window = None
        per_step = float(np.median(res.instructions))
    total, first = 0, None
    for name, got, want in checks:
        bad, where = _mismatches(name, got, want)
        total += bad
        first = first or where
    bad_status = int(np.count_nonzero(res.status != 1))
    if bad_status:
        total += bad_status
        first = first or f"status: {bad_status} runs did not end with TG_OUTPUT_READY"
    machine, cpu = res.machine, boards.board(target).cpu
    entry = ref.entry(
        res.y,
        description=f"tinygru C engine on {cpu} ({machine} in QEMU, arm-none-eabi-gcc -O2)",
        model_file=f"{prefix}_model.c",
        model_bytes=sizes_info["flash"]["model_data"],
    )
    entry.update({
        "ram_bytes": sizes_info["ram"]["total"],
        "sizes_from": "Cortex-M4 objects (arm-none-eabi-gcc -Os): model data object text + data "
        "(flash); state + scratch + tg_stream + deepest stack (RAM)",
        "instructions_per_step": per_step,
    })  # fmt: skip
    return {
        "target": res.target,
        "machine": machine,
        "cpu": cpu,
        "mode": "window" if classify else "series",
        "windows": len(data),
        "steps": n_steps if classify else len(res.y),
        "compared_with": "engine_outputs.npz (host engine), tolerance 0",
        "mismatches": total,
        "first_mismatch": first,
        "bit_identical": total == 0,
        "instructions_per_step": per_step,
        "instructions_per_window": per_window,
        "instructions_total": int(res.instructions.sum()),
        "instructions_method": "SysTick under -icount shift=0 (1 instruction = 1 ns, "
        f"{boards.board(target).instructions_per_tick:g} per tick); "
        + (
            "median tg_window over windows / steps per window"
            if classify
            else "median over steps of the tg_push_sample calls since the previous step"
        ),  # fmt: skip
        "peak_stack_bytes": res.peak_stack_bytes,
        "qemu_seconds": round(seconds, 2),
        "backend": entry,
    }


def write_reports(
    bundle_dir: str | Path, reports: list[dict[str, Any]], n_windows: int | None
) -> None:
    """Write ``reports/mcu_<target>.json`` for each report into the bundle (one stage run)."""
    from edge_runtime.bundle import stage_writer

    config = {"targets": [r["target"] for r in reports], "windows": n_windows}
    with stage_writer(bundle_dir, "mcu", config=config) as w:
        for r in reports:
            w.write_json(f"reports/mcu_{r['target']}.json", r)


def _target(name: str) -> str:
    try:
        return target_name(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_export mcu")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--target", type=_target, action="append",
                        help="a board: m4, an386 or mps2-an386, ... (repeatable; default: "
                        f"{', '.join(DEFAULT_TARGETS)})")  # fmt: skip
    parser.add_argument("--windows", type=int, default=None,
                        help="first N reference windows (classifiers; default all with --report)")  # fmt: skip
    parser.add_argument("--report", action="store_true",
                        help="compare with engine_outputs.npz and write reports/mcu_<target>.json")  # fmt: skip
    ns = parser.parse_args(argv)
    if ns.windows is not None and ns.windows < 1:
        parser.error(f"--windows: expected a count >= 1, found {ns.windows}")
    why = missing_tools()
    if why:
        print(f"firmware_export mcu: {why}", file=sys.stderr)
        return 1
    targets = ns.target or list(DEFAULT_TARGETS)
    if ns.report:
        return _main_report(ns.bundle, targets, ns.windows)
    bad = 0
    for t in targets:
        rep = compare_with_host(ns.bundle, t, ns.windows)
        print(json.dumps(rep))
        bad += rep["y_mismatches"] + rep["h_mismatches"]
    return 0 if bad == 0 else 1


def _main_report(bundle_dir: str, targets: list[str], n_windows: int | None) -> int:
    from firmware_export import sizes

    try:
        fw, prefix = _firmware_of(bundle_dir)
        info = sizes.firmware_sizes(fw, prefix)
        # one QEMU per core at a time (each board's build and run are independent)
        with ThreadPoolExecutor(max_workers=max(1, min(len(targets), os.cpu_count() or 1))) as ex:
            reports = list(ex.map(lambda t: mcu_report(bundle_dir, t, n_windows, sizes_info=info),
                                  targets))  # fmt: skip
        for r in reports:
            t = r["target"]
            e = r["backend"]
            fig = (f"accuracy {e['accuracy']:.4f}, agreement {e['argmax_agreement']:.4f}"
                   if "accuracy" in e else f"hit {e['hit']}, margin {_g(e['margin'])}, "
                   f"point AUC {_g(e['point_auc'])}, alarm events {e.get('alarm_events')}")  # fmt: skip
            print(f"firmware_export mcu: {t} ({r['machine']}): {r['windows']} windows, "
                  f"{r['steps']} steps, mismatches {r['mismatches']}, {fig}, "
                  f"{r['instructions_per_step']:.0f} instructions/step, {r['qemu_seconds']} s")  # fmt: skip
            if r["first_mismatch"]:
                print(f"firmware_export mcu: {t}: first mismatch {r['first_mismatch']}")
        write_reports(bundle_dir, reports, n_windows)
    except Exception as e:  # noqa: BLE001 - the CLI contract: one line, non-zero exit
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"firmware_export mcu: {type(e).__name__}: {reason}", file=sys.stderr)
        return 1
    return 0 if all(r["bit_identical"] for r in reports) else 1


def _g(v: float | None) -> str:
    """A figure to 4 significant digits; None (a series without labelled anomaly) as is."""
    return "None" if v is None else f"{v:.4g}"


if __name__ == "__main__":
    sys.exit(main())
