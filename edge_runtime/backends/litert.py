"""LiteRT (ai-edge-litert) in this process: built-in kernels or the XNNPACK delegate."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from edge_runtime.backends import Step

__all__ = ["LiteRT", "signature_indices"]


def signature_indices(it: Any) -> dict[str, dict[str, int]]:
    """``{"inputs": {name: index}, "outputs": {...}}`` of the first signature, if exposed."""
    with contextlib.suppress(Exception):
        sigs = it._get_full_signature_list()
        if sigs:
            sig = next(iter(sigs.values()))
            return {
                "inputs": {str(k): int(v) for k, v in sig.get("inputs", {}).items()},
                "outputs": {str(k): int(v) for k, v in sig.get("outputs", {}).items()},
            }
    return {"inputs": {}, "outputs": {}}


class LiteRT:
    """One ai-edge-litert interpreter; ``raw`` is the Interpreter itself."""

    def __init__(self, model_content: bytes, backend: str, num_threads: int | None) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        kw: dict[str, Any] = {"model_content": model_content}
        if num_threads is not None:
            kw["num_threads"] = int(num_threads)
        kw["experimental_op_resolver_type"] = (
            OpResolverType.AUTO
            if backend == "xnnpack"
            else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        self.raw = Interpreter(**kw)
        self.raw.allocate_tensors()
        self.label = "litert_xnnpack" if backend == "xnnpack" else "litert"

    def details(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        it = self.raw
        return it.get_input_details(), it.get_output_details(), signature_indices(it)

    def stepper(
        self, x: int, h_in: list[int], h_out: list[int], y: int
    ) -> tuple[Step, tuple[Any, ...] | None]:
        it = self.raw
        set_tensor, get_tensor, invoke = it.set_tensor, it.get_tensor, it.invoke
        if len(h_in) == 1:
            (hi,), (ho,) = h_in, h_out

            def step1(xv: np.ndarray, states: list[np.ndarray]) -> np.ndarray:
                set_tensor(x, xv)
                set_tensor(hi, states[0])
                invoke()
                states[0] = get_tensor(ho)
                return get_tensor(y)

            return step1, (set_tensor, get_tensor, invoke, x, hi, ho, y)
        pairs = list(enumerate(zip(h_in, h_out, strict=True)))

        def step(xv: np.ndarray, states: list[np.ndarray]) -> np.ndarray:
            set_tensor(x, xv)
            for j, (i, _) in pairs:
                set_tensor(i, states[j])
            invoke()
            for j, (_, o) in pairs:
                states[j] = get_tensor(o)
            return get_tensor(y)

        return step, None

    def close(self) -> None:
        pass
