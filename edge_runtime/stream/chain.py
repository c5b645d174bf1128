"""The int8 step chain over a whole series, offline: what streaming is compared with.

The series is quantized with the device input contract, its step inputs come from
:func:`edge_runtime.contract.step_inputs` (not from the streaming ring buffer), and
each runs one interpreter step from a zero state::

    chain = StepChain(Bundle.open("build/har"))
    y = chain.window(counts[start : start + T])   # the window's int8 head output
"""

from __future__ import annotations

import numpy as np

from edge_runtime import contract
from edge_runtime.bundle import Bundle
from edge_runtime.interpreter import StepInterpreter
from edge_runtime.preprocess import quantize_counts
from edge_runtime.stream.config import StreamConfig, input_quant

__all__ = ["StepChain"]


class StepChain:
    """The bundle's int8 step model run over whole series from a zero state."""

    def __init__(self, bundle: Bundle, backend: str = "litert") -> None:
        self.interp = StepInterpreter.from_bundle(bundle, backend=backend)
        self.cfg = StreamConfig.from_manifest(bundle.manifest)
        self.iq = input_quant(bundle.manifest, self.cfg, self.interp)

    def steps(self, counts: np.ndarray) -> np.ndarray:
        """int8 head output ``(S, n_out)`` of every step over one series ``(n, C)`` of counts."""
        cfg = self.cfg
        q = quantize_counts(np.asarray(counts), self.iq)
        xs = contract.step_inputs(q, cfg.kernel, cfg.stride, cfg.fill)  # (S, k*C)
        states = self.interp.zero_states()
        ys = [self.interp.step(np.ascontiguousarray(x[None]), states).reshape(-1) for x in xs]
        width = self.interp.y.width
        return np.asarray(ys, np.int8).reshape(len(ys), width)

    def window(self, counts: np.ndarray) -> np.ndarray:
        """int8 head output of a window's last step ``(n_out,)``."""
        return self.steps(counts)[-1]

    def close(self) -> None:
        self.interp.close()
