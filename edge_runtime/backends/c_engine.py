"""tinygru's C engine (the bundle's export, built for this host) as a step backend.

Tensor details come from the step model it was exported from (positions as indices,
as for TFLM); the export must be of exactly these model bytes (``files.json``'s
``step_model_sha256``). ``raw`` is the :class:`edge_runtime.backends.engine.Engine`.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends import Step
from edge_runtime.backends.engine import EngineError, load
from edge_runtime.backends.tflm import positional_details
from edge_runtime.tflite_reader import read_model

__all__ = ["CEngine"]


class CEngine:
    """One host build of the exported engine."""

    label = "engine"

    def __init__(self, model_content: bytes, firmware_dir: Path, prefix: str) -> None:
        index = Path(firmware_dir) / "files.json"
        want = hashlib.sha256(model_content).hexdigest()
        try:
            got = json.loads(index.read_text(encoding="utf-8")).get("step_model_sha256")
        except (OSError, ValueError) as e:
            raise EngineError(f"{index}: cannot read the export index: {e}") from None
        if got != want:
            raise EngineError(
                f"{index}: the export is of step model {str(got)[:12]}…, not of this one "
                f"({want[:12]}…): rerun `python -m firmware_export`"
            )
        self.model = read_model(model_content)
        self.raw = load(firmware_dir, prefix)

    def details(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        return positional_details(self.model)

    def stepper(
        self, x: int, h_in: list[int], h_out: list[int], y: int
    ) -> tuple[Step, tuple[Any, ...] | None]:
        eng = self.raw
        units = eng.units
        cuts = np.cumsum(units)[:-1]
        h = np.zeros(sum(units), np.int8)
        hp = ctypes.c_void_p(h.ctypes.data)
        fn = eng.lib.host_step
        n_out = eng.n_outputs

        def step(xv: np.ndarray, states: list[np.ndarray]) -> np.ndarray:
            xs = np.ascontiguousarray(xv, np.int8)
            h[:] = np.concatenate([s.reshape(-1) for s in states]) if len(states) > 1 else (
                states[0].reshape(-1))  # fmt: skip
            out = np.empty((1, n_out), np.int8)
            fn(ctypes.c_void_p(xs.ctypes.data), hp, ctypes.c_void_p(out.ctypes.data))
            states[:] = [v.reshape(1, -1) for v in np.split(h.copy(), cuts)]
            return out

        return step, None

    def close(self) -> None:
        pass
