"""The boards tinygru builds for and emulates: one table, one name per board.

A board's name is its QEMU machine (``mps2-an386``). Two shorter spellings are
accepted wherever a board is asked for: the machine without its family
(``an386``) and the core (``m4``, the default board of that core). Everything
that starts QEMU, builds firmware or labels a report row looks the board up here.

    from edge_runtime.boards import board
    b = board("m4")          # Board(name='mps2-an386', core='m4', cpu='cortex-m4', ...)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BOARDS", "Board", "board", "names"]


@dataclass(frozen=True)
class Board:
    """One emulated board."""

    name: str  # the QEMU machine, also the board's name everywhere (``mps2-an386``)
    short: str  # ``an386``
    core: str  # ``m4``: the core, also an alias of its default board
    cpu: str  # ``-mcpu`` for arm-none-eabi-gcc and QEMU's CPU (``cortex-m4``)
    dsp: bool  # the Arm DSP extension (SMLAD): the engine's DSP path runs
    support: str  # its board-support folder under ``firmware/board/``

    @property
    def label(self) -> str:
        """For tables: ``Cortex-M4 (mps2-an386)``."""
        return f"Cortex-{self.core.upper()} ({self.name})"


BOARDS: tuple[Board, ...] = (
    Board("mps2-an385", "an385", "m3", "cortex-m3", False, "mps2"),
    Board("mps2-an386", "an386", "m4", "cortex-m4", True, "mps2"),
    Board("mps2-an500", "an500", "m7", "cortex-m7", True, "mps2"),
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
