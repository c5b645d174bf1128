"""The boards tinygru builds for and emulates: one table, one name per board.

A board's name is its QEMU machine (``mps2-an386``). Two shorter spellings are
accepted wherever a board is asked for: the machine without its family
(``an386``) and the core alias (``m4``; one board per alias: the Cortex-M4 of
``netduinoplus2``, an STM32F405, is ``stm32f405``). The core alias also names the
board's reports (``mcu_m4.json``). Everything that starts QEMU, builds firmware or
labels a report row looks the board up here.

    from edge_runtime.boards import board
    b = board("m4")          # Board(name='mps2-an386', core='m4', cpu='cortex-m4', ...)

``clock_hz`` is the processor clock of QEMU's model of the board, which drives SysTick
(CLKSOURCE = 1); under ``-icount shift=0`` one instruction takes 1 ns of virtual time,
so one SysTick tick is ``instructions_per_tick`` instructions (40 at 25 MHz).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BOARDS", "Board", "board", "names"]


@dataclass(frozen=True)
class Board:
    """One emulated board."""

    name: str  # the QEMU machine, also the board's name everywhere (``mps2-an386``)
    short: str  # ``an386``
    core: str  # ``m4``: the core alias, unique per board; its reports' name (mcu_m4.json)
    cpu: str  # ``-mcpu`` for arm-none-eabi-gcc and QEMU's CPU (``cortex-m4``)
    dsp: bool  # the Arm DSP extension (SMLAD): the engine's DSP path runs
    support: str  # its board-support folder under ``firmware/board/``
    clock_hz: int = 25_000_000  # processor clock = SysTick clock of QEMU's model
    flash_base: int = 0x0000_0000  # where code is linked (its linker script's FLASH origin)
    ram_base: int = 0x2000_0000  # its RAM origin

    @property
    def label(self) -> str:
        """For tables: ``Cortex-M4 (mps2-an386)``."""
        return f"Cortex-{self.cpu.removeprefix('cortex-').upper()} ({self.name})"

    @property
    def instructions_per_tick(self) -> float:
        """Instructions per SysTick tick under ``-icount shift=0`` (1 instruction = 1 ns)."""
        return 1e9 / self.clock_hz


BOARDS: tuple[Board, ...] = (
    Board("mps2-an385", "an385", "m3", "cortex-m3", False, "mps2"),
    Board("mps2-an386", "an386", "m4", "cortex-m4", True, "mps2"),
    Board("mps2-an500", "an500", "m7", "cortex-m7", True, "mps2"),
    # ARMv6-M: no DSP, no 64-bit multiply (libgcc's __aeabi_lmul); 16 KB RAM
    Board("microbit", "microbit", "m0", "cortex-m0", False, "microbit", 16_000_000),
    # IoT Kit (SSE-200 class), boots in the Secure state
    Board(
        "mps2-an505",
        "an505",
        "m33",
        "cortex-m33",
        True,
        "an505",
        20_000_000,
        0x1000_0000,
        0x3800_0000,
    ),  # fmt: skip
    # SSE-300; Helium (MVE) is there, the engine uses its DSP path
    Board("mps3-an547", "an547", "m55", "cortex-m55", True, "an547", 32_000_000),
    # STM32F405 (Cortex-M4F) as QEMU models it; console on USART1
    Board(
        "netduinoplus2",
        "netduinoplus2",
        "stm32f405",
        "cortex-m4",
        True,
        "stm32f405",
        168_000_000,
        0x0800_0000,
    ),  # fmt: skip
)
_BY_NAME = {
    **{b.core: b for b in BOARDS},
    **{b.short: b for b in BOARDS},
    **{b.name: b for b in BOARDS},
}


def names() -> list[str]:
    """Every board name, in table order."""
    return [b.name for b in BOARDS]


def board(name: str) -> Board:
    """The board called ``name`` (``mps2-an386``, ``an386`` or ``m4``); a clear error otherwise."""
    found = _BY_NAME.get(str(name).strip().lower())
    if found is None:
        known = ", ".join(f"{b.name} ({b.short}, {b.core})" for b in BOARDS)
        raise ValueError(f"board {name!r}: use one of {known}")
    return found
