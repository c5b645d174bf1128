"""The TFLM kernels on this host through ``tflite_micro`` (x86-64 wheels only).

TFLM addresses tensors by their position among the model's inputs and outputs; the
details given here use that position as ``index``. The arena does not change results;
the default is generous (at least 64 KiB, 10 × the model).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.backends import Step
from edge_runtime.tflite_reader import Model, read_model

__all__ = ["Tflm", "positional_details"]

_DTYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32,
           "FLOAT32": np.float32}  # fmt: skip


def positional_details(
    model: Model,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Tensor details of a read model with the input/output *position* as ``index``."""

    def one(pos: int, t: int) -> dict[str, Any]:
        tensor = model.tensors[t]
        q = (tensor.scale[0], tensor.zero_point[0]) if tensor.scale else (0.0, 0)
        return {
            "name": tensor.name,
            "index": pos,
            "shape": np.array(tensor.shape, np.int32),
            "dtype": _DTYPES.get(tensor.dtype, tensor.dtype),
            "quantization": q,
        }

    ins = [one(p, t) for p, t in enumerate(model.inputs)]
    outs = [one(p, t) for p, t in enumerate(model.outputs)]
    sig = {
        "inputs": {k: model.inputs.index(v) for k, v in model.signature_inputs.items()
                   if v in model.inputs},
        "outputs": {k: model.outputs.index(v) for k, v in model.signature_outputs.items()
                    if v in model.outputs},
    }  # fmt: skip
    return ins, outs, sig


class Tflm:
    """One ``tflite_micro`` interpreter; ``raw`` is it."""

    label = "tflm"

    def __init__(self, model_content: bytes, arena_size: int | None = None) -> None:
        from tflite_micro import runtime

        self.model = read_model(model_content)
        arena = arena_size or max(1 << 16, 10 * len(model_content))
        self.raw = runtime.Interpreter.from_bytes(bytes(model_content), arena_size=arena)

    def details(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        return positional_details(self.model)

    def stepper(
        self, x: int, h_in: list[int], h_out: list[int], y: int
    ) -> tuple[Step, tuple[Any, ...] | None]:
        it = self.raw
        set_input, get_output, invoke = it.set_input, it.get_output, it.invoke
        pairs = list(enumerate(zip(h_in, h_out, strict=True)))

        def step(xv: np.ndarray, states: list[np.ndarray]) -> np.ndarray:
            set_input(xv, x)
            for j, (i, _) in pairs:
                set_input(states[j], i)
            invoke()
            for j, (_, o) in pairs:
                states[j] = np.array(get_output(o))
            return np.array(get_output(y))

        return step, None

    def close(self) -> None:
        pass
