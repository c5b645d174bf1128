"""The exported engine on this host, for callers that hold a lowered model.

The engine binding itself is :mod:`edge_runtime.backends.engine` (the ground floor,
so the Pi runtime and the checks share it); this module only keeps the call shape
``load(firmware_dir, prefix, model)`` of the export's own tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_runtime.backends.engine import Engine, build

__all__ = ["Engine", "build", "load"]


def load(fw: Path, prefix: str, model: Any = None, debug: bool = False) -> Engine:
    """Build the engine exported in ``fw`` and open it (``model`` is not needed: the
    engine reports its own sizes)."""
    from edge_runtime.backends.engine import load as load_engine

    return load_engine(fw, prefix, debug=debug)
