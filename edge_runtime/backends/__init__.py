"""The step model's backends: who runs one int8 GRU step.

:class:`edge_runtime.interpreter.StepInterpreter` is the one front; each backend here
only loads the model, describes its tensors (LiteRT's detail format) and returns the
step call. Every row of a parity table is one of these.

==================  ===================================================================
``litert``          ai-edge-litert, built-in kernels (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``)
``xnnpack``         ai-edge-litert as it runs by default (XNNPACK delegate); label
                    ``litert_xnnpack``
``auto``            the built-in kernels of whichever interpreter runs (ai-edge-litert,
                    or ``tflite_runtime`` in a worker)
``tflm``            the TFLM kernels through ``tflite_micro`` (x86-64 hosts)
``engine``          tinygru's C engine of the bundle's export, built with the host's C
                    compiler on first use: the Cortex-M arithmetic, bit for bit
==================  ===================================================================

``litert``, ``xnnpack`` and ``auto`` run in a worker process under another Python when
one is named (:mod:`edge_runtime.worker`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

__all__ = ["ALIASES", "BACKENDS", "Backend", "Step", "canonical"]

BACKENDS = ("litert", "xnnpack", "auto", "tflm", "engine")
ALIASES = {"litert_xnnpack": "xnnpack", "builtin": "litert", "c": "engine"}
LITERT_BACKENDS = ("litert", "xnnpack", "auto")

# y = step(x, states): states (a list) replaced in place by the new states.
Step = Callable[[np.ndarray, list[np.ndarray]], np.ndarray]


def canonical(name: str) -> str:
    """The backend called ``name`` (an alias allowed), or ValueError naming the choices."""
    b = ALIASES.get(name, name)
    if b not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, found {name!r}")
    return b


class Backend(Protocol):
    """What a backend gives the step interpreter."""

    label: str  # the name of its row in a parity table

    def details(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        """Input and output tensor details (``name``, ``index``, ``shape``, ``dtype``,
        ``quantization``) and the signature's ``{"inputs": {name: index}, "outputs": …}``."""
        ...

    def stepper(
        self, x: int, h_in: list[int], h_out: list[int], y: int
    ) -> tuple[Step, tuple[Any, ...] | None]:
        """The step call over these tensor indices, and an inlinable fast path or None."""
        ...

    def close(self) -> None: ...
