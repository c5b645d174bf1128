"""A converted model's graph as the quantize stage records and checks it.

The graph is read by the ground floor's reader (:mod:`edge_runtime.tflite_reader`).
That reader names the ops the step model and the exporter meet; every other builtin
op (the window model's UNPACK, PACK, PAD, …, or whatever a converter emits) is named
here from TensorFlow's flatbuffer schema module, which only a TensorFlow-based tool
has. Then:

- :func:`check_purity`: no FLOAT32 tensor, ops only from an allowed list;
- :func:`summary`: op list in execution order, counts, sizes, constant bytes;
- :func:`step_info`: what a device needs to know about a step model (its named
  inputs and outputs with their quantization, and the state handling).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from typing import Any

from tensorflow.lite.python import schema_py_generated as schema

from edge_runtime import contract, tflm_ref
from edge_runtime.interpreter import logical_name  # one name matcher for host and Pi
from edge_runtime.tflite_reader import Model, read_model

# Ops the step model may contain: what the converter emits for it and what TFLM implements.
STEP_OPS: tuple[str, ...] = (
    "FULLY_CONNECTED",
    "SPLIT",
    "SPLIT_V",
    "ADD",
    "SUB",
    "MUL",
    "LOGISTIC",
    "TANH",
    "SOFTMAX",
)
# The unrolled window model adds the ops that slice the window into steps.
WINDOW_OPS: tuple[str, ...] = (
    *STEP_OPS,
    "STRIDED_SLICE",
    "RESHAPE",
    "UNPACK",
    "PAD",
    "CONV_2D",
    "EXPAND_DIMS",
    "SQUEEZE",
    "CONCATENATION",
    "PACK",
    "TRANSPOSE",
)
_UNNAMED = "BUILTIN_"  # how the reader names a builtin code it does not know
TF_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


class PurityError(ValueError):
    """A converted model is not pure int8: names the offending op or tensor."""


def op_name(opcode: str) -> str:
    """The reader's op name, or TensorFlow's name for a builtin code the reader left unnamed."""
    if opcode.startswith(_UNNAMED) and opcode[len(_UNNAMED) :].isdigit():
        return TF_OP_NAMES.get(int(opcode[len(_UNNAMED) :]), opcode)
    return opcode


def read(tflite_bytes: bytes) -> Model:
    """Subgraph 0 of a .tflite model, every builtin op named (:func:`op_name`)."""
    model = read_model(tflite_bytes)
    model.operators = [dataclasses.replace(op, opcode=op_name(op.opcode)) for op in model.operators]
    return model


def summary(model: Model, size: int) -> dict[str, Any]:
    """Size, op list in execution order, op counts, tensor count and constant bytes
    (every tensor's constant data counted, also where tensors share a buffer)."""
    ops = [op.opcode for op in model.operators]
    return {
        "size_bytes": size,
        "n_ops": len(ops),
        "n_tensors": len(model.tensors),
        "ops": ops,
        "op_counts": dict(sorted(Counter(ops).items())),
        "weights_bytes": int(sum(len(t.data) for t in model.tensors if t.data)),
    }


def check_purity(tflite_bytes: bytes, allowed_ops: Iterable[str] = STEP_OPS) -> dict[str, Any]:
    """Raise ``PurityError`` if any tensor is FLOAT32 or any op is not in ``allowed_ops``.

    Returns the graph :func:`summary`.
    """
    model = read(tflite_bytes)
    allowed = set(allowed_ops)
    if model.n_subgraphs != 1:
        raise PurityError(f"expected one subgraph, found {model.n_subgraphs} (a WHILE loop?)")
    for op in model.operators:
        if op.opcode not in allowed:
            outs = [model.tensors[i].name for i in op.outputs]
            raise PurityError(
                f"op #{op.index} {op.opcode} (outputs {outs}) is not in the allowed ops "
                f"{sorted(allowed)}"
            )
    for t in model.tensors:
        if t.dtype == "FLOAT32":
            users = [o.opcode for o in model.operators if t.index in o.inputs + o.outputs]
            raise PurityError(f"tensor #{t.index} {t.name!r} is FLOAT32 (used by {users})")
        if t.dtype in ("INT8", "INT16") and not t.scale:
            raise PurityError(f"tensor #{t.index} {t.name!r} is {t.dtype} without quantization")
    return summary(model, len(tflite_bytes))


def io_tensors(model: Model, in_names: list[str], out_names: list[str]) -> dict[str, Any]:
    """Resolve logical input/output names to tensors of the subgraph.

    Returns ``{"inputs": {name: {...}}, "outputs": {name: {...}}}`` with for each
    name the tensor ``index``, its ``position`` in the subgraph's input (output)
    list — what index-based interpreters such as TFLM use —, ``tensor_name``,
    ``shape``, ``dtype``, ``scale`` and ``zero_point``. The signature names are
    used when present, tensor names otherwise.
    """
    return {
        "inputs": _resolve(model, in_names, model.inputs, model.signature_inputs, "inputs"),
        "outputs": _resolve(model, out_names, model.outputs, model.signature_outputs, "outputs"),
    }


def _resolve(
    model: Model, names: list[str], listed: list[int], signature: dict[str, int], kind: str
) -> dict[str, Any]:
    found = {name: signature[name] for name in names if name in signature}
    for idx in listed:
        ln = logical_name(model.tensors[idx].name, names)
        if ln is not None and ln not in found:
            found[ln] = idx
    missing = [n for n in names if n not in found]
    if missing:
        listed_names = [model.tensors[i].name for i in listed]
        raise KeyError(f"{kind}: cannot find {missing} among {listed_names}")
    entry = {}
    for name in names:
        t = model.tensors[found[name]]
        entry[name] = {
            "index": t.index,
            "position": listed.index(t.index),
            "tensor_name": t.name,
            "shape": list(t.shape),
            "dtype": t.dtype,
            "scale": t.scale[0] if len(t.scale) == 1 else list(t.scale),
            "zero_point": t.zero_point[0] if len(t.zero_point) == 1 else list(t.zero_point),
        }
    return entry


def step_info(tflite_bytes: bytes, cfg: Any) -> dict[str, Any]:
    """What a device needs to know about a converted step model of ``cfg`` (a
    :class:`train.model.ModelConfig`).

    The :func:`summary`, ``inputs`` / ``outputs`` (:func:`io_tensors`), and per
    state ``state[hN]``: whether ``hN_in`` and ``hN_out`` share one quantization
    and, if not, the integer requantization from ``hN_out`` to ``hN_in``
    (``multiplier``, ``shift``, rounding as :func:`edge_runtime.tflm_ref.requantize`);
    ``state_equal`` when every state does.
    """
    n_layers = len(cfg.gru_units)
    model = read(tflite_bytes)
    io_ = io_tensors(model, contract.input_names(n_layers), contract.output_names(n_layers))
    info: dict[str, Any] = summary(model, len(tflite_bytes))
    info.update(io_)
    states = {
        a[: -len("_in")]: _state_entry(io_["inputs"][a], io_["outputs"][b], a, b)
        for a, b in zip(*contract.state_names(n_layers), strict=True)
    }
    info["state"] = states
    info["state_equal"] = all(e["equal"] for e in states.values())
    return info


def _state_entry(qi: dict[str, Any], qo: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    equal = qi["scale"] == qo["scale"] and qi["zero_point"] == qo["zero_point"]
    entry: dict[str, Any] = {"equal": equal}
    if not equal:
        m, s = tflm_ref.quantize_multiplier(qo["scale"] / qi["scale"])
        entry["requantize"] = {
            "from": b,
            "to": a,
            "multiplier": m,
            "shift": s,
            "zero_point_from": qo["zero_point"],
            "zero_point_to": qi["zero_point"],
            "rounding": "TFLite MultiplyByQuantizedMultiplier (half away from zero)",
        }
    return entry
