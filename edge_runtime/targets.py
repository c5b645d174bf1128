"""A target: the chip a model is made for, as a file (``configs/targets/*.toml``).

::

    name = "cortex-m4-80mhz"
    description = "Cortex-M4F at 80 MHz, 256 KB flash, 64 KB RAM for model and engine"
    kind = "mcu"              # mcu | linux
    board = "mps2-an386"      # mcu: the emulated board whose instruction counts stand for it
    clock_hz = 80_000_000

    [budget]                  # what the model and the engine may use, not the whole firmware
    flash_bytes = 262_144     # model data + engine code
    ram_bytes = 65_536        # state + scratch + stream struct + stack

    [sensor]
    sample_rate_hz = 50.0     # optional: the data set's own rate when absent

An ``mcu`` target's instruction counts come from QEMU ``-icount`` on its board; divided
by the clock they give a lower bound of the time per step (a core needs at least one
cycle per instruction), and with the sensor rate the share of the sample period used.
A ``linux`` target (a Raspberry Pi) has no board; its budgets bound the model files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.boards import Board, board
from edge_runtime.settings import SettingsError, check_keys, number, read_toml, text

__all__ = ["KINDS", "Target", "TargetError", "fit", "load_target"]

KINDS = ("mcu", "linux")
_TOP = ("name", "description", "kind", "board", "clock_hz", "budget", "sensor")


class TargetError(SettingsError):
    """A target file is malformed, or a model does not fit a target."""


@dataclass(frozen=True)
class Target:
    """One target file, checked."""

    name: str
    description: str
    kind: str
    board: Board | None
    clock_hz: float
    flash_bytes: int
    ram_bytes: int
    sample_rate_hz: float | None
    path: str

    def time_per_step_s(self, instructions_per_step: float) -> float:
        """Lower bound of the time of one step: instructions ÷ clock (≥ 1 cycle each)."""
        return float(instructions_per_step) / self.clock_hz

    def share_of_period(self, instructions_per_step: float, steps_per_sample: float,
                        sample_rate_hz: float) -> float:  # fmt: skip
        """Fraction of the sample period spent stepping (lower bound): steps per second ×
        time per step."""
        return steps_per_sample * sample_rate_hz * self.time_per_step_s(instructions_per_step)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "kind": self.kind,
            "board": self.board.name if self.board else None, "clock_hz": self.clock_hz,
            "flash_bytes": self.flash_bytes, "ram_bytes": self.ram_bytes,
            "sample_rate_hz": self.sample_rate_hz, "path": self.path,
        }  # fmt: skip


def load_target(path: str | Path) -> Target:
    """Read and check a target file; :class:`TargetError` names the file and field."""
    p = Path(path)
    try:
        raw = read_toml(p)
        check_keys(raw, _TOP, str(p))
        kind = text(raw, "kind", str(p), default="mcu")
        if kind not in KINDS:
            raise SettingsError(f"{p}: kind: expected one of {list(KINDS)}, found {kind!r}")
        b = None
        if kind == "mcu":
            name = text(raw, "board", str(p))
            try:
                b = board(name)
            except ValueError as e:
                raise SettingsError(f"{p}: board: {e}") from None
        budget = raw.get("budget", {})
        sensor = raw.get("sensor", {})
        for sect, table, keys in (("budget", budget, ("flash_bytes", "ram_bytes")),
                                  ("sensor", sensor, ("sample_rate_hz",))):  # fmt: skip
            if not isinstance(table, dict):
                raise SettingsError(f"{p}: [{sect}]: expected a table, found {table!r}")
            check_keys(table, keys, f"{p}: [{sect}]")
        rate = sensor.get("sample_rate_hz")
        return Target(
            name=text(raw, "name", str(p)),
            description=text(raw, "description", str(p), default=""),
            kind=kind,
            board=b,
            clock_hz=number(raw, "clock_hz", str(p), lo=1e3, hi=1e11),
            flash_bytes=number(budget, "flash_bytes", f"{p}: [budget]", kind=int, lo=1),
            ram_bytes=number(budget, "ram_bytes", f"{p}: [budget]", kind=int, lo=1),
            sample_rate_hz=None
            if rate is None
            else number(sensor, "sample_rate_hz", f"{p}: [sensor]", lo=1e-3, hi=1e6),
            path=str(p),
        )
    except TargetError:
        raise
    except SettingsError as e:
        raise TargetError(str(e)) from None


def fit(target: Target, flash_bytes: int, ram_bytes: int) -> list[str]:
    """What does not fit: one line per budget exceeded, naming it and by how much."""
    over = []
    for what, need, have in (("flash", flash_bytes, target.flash_bytes),
                             ("RAM", ram_bytes, target.ram_bytes)):  # fmt: skip
        if need > have:
            over.append(
                f"target {target.name} ({target.path}): {what} budget {have:,} B, the model and "
                f"engine need {need:,} B ({need - have:,} B over)"
            )
    return over
