"""Read a .tflite flatbuffer: operators in execution order, tensors, types, quantization.

Uses the flatbuffer schema module TensorFlow ships, so it lives in ``quantize/``;
``edge_runtime`` learns what it needs from its interpreter instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from edge_runtime.interpreter import logical_name  # one name matcher for host and Pi

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    dtype: str  # "INT8", "INT32", "FLOAT32", …
    shape: tuple[int, ...]
    scale: tuple[float, ...]  # empty when not quantized
    zero_point: tuple[int, ...]
    quantized_dimension: int
    is_constant: bool  # backed by a non-empty buffer (weights, biases)
    n_bytes: int  # size of the constant data, 0 for activations


@dataclass(frozen=True)
class OpInfo:
    index: int  # position in the execution order
    op: str  # builtin name, e.g. "FULLY_CONNECTED"
    version: int
    inputs: tuple[int, ...]  # tensor indices, -1 = optional input absent
    outputs: tuple[int, ...]


@dataclass
class GraphInfo:
    ops: list[OpInfo]
    tensors: list[TensorInfo]
    inputs: list[int]  # subgraph input tensor indices, in interpreter order
    outputs: list[int]
    signature_inputs: dict[str, int] = field(default_factory=dict)  # logical name -> tensor
    signature_outputs: dict[str, int] = field(default_factory=dict)
    n_subgraphs: int = 1
    size: int = 0

    @property
    def op_names(self) -> list[str]:
        return [o.op for o in self.ops]

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name in self.op_names:
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))

    def tensor(self, index: int) -> TensorInfo:
        return self.tensors[index]

    def summary(self) -> dict[str, Any]:
        return {
            "size_bytes": self.size,
            "n_ops": len(self.ops),
            "n_tensors": len(self.tensors),
            "ops": self.op_names,
            "op_counts": self.op_counts(),
            "weights_bytes": int(sum(t.n_bytes for t in self.tensors)),
        }


def _op_name(code: Any) -> str:
    # Builtin codes >= 127 live in the wider BuiltinCode field; the old one saturates.
    value = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if value == schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM:{code.CustomCode().decode()}"
    return _OP_NAMES.get(value, f"UNKNOWN_{value}")


def read_graph(tflite_bytes: bytes) -> GraphInfo:
    """Parse the main subgraph (subgraph 0) of a .tflite model."""
    buf = bytearray(tflite_bytes)
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError("not a .tflite flatbuffer (file identifier 'TFL3' missing)")
    model = schema.Model.GetRootAs(buf, 0)
    if model.SubgraphsLength() < 1:
        raise ValueError(".tflite model has no subgraph")
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    sg = model.Subgraphs(0)

    tensors = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        q = t.Quantization()
        scale: tuple[float, ...] = ()
        zp: tuple[int, ...] = ()
        qdim = 0
        if q is not None and q.ScaleLength() > 0:
            scale = tuple(float(s) for s in q.ScaleAsNumpy())
            zp = tuple(int(z) for z in q.ZeroPointAsNumpy())
            qdim = int(q.QuantizedDimension())
        b = model.Buffers(t.Buffer())
        n_bytes = int(b.DataLength()) if b is not None else 0
        if b is not None and n_bytes == 0 and b.Size() > 0:  # data stored after the flatbuffer
            n_bytes = int(b.Size())
        tensors.append(
            TensorInfo(
                index=i,
                name=t.Name().decode() if t.Name() else "",
                dtype=_TYPE_NAMES.get(t.Type(), str(t.Type())),
                shape=tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else (),
                scale=scale,
                zero_point=zp,
                quantized_dimension=qdim,
                is_constant=n_bytes > 0,
                n_bytes=n_bytes,
            )
        )

    ops = []
    for i in range(sg.OperatorsLength()):
        o = sg.Operators(i)
        code = codes[o.OpcodeIndex()]
        ops.append(
            OpInfo(
                index=i,
                op=_op_name(code),
                version=int(code.Version()),
                inputs=tuple(int(v) for v in o.InputsAsNumpy()) if o.InputsLength() else (),
                outputs=tuple(int(v) for v in o.OutputsAsNumpy()) if o.OutputsLength() else (),
            )
        )

    sig_in: dict[str, int] = {}
    sig_out: dict[str, int] = {}
    if model.SignatureDefsLength() > 0:
        sd = model.SignatureDefs(0)
        for j in range(sd.InputsLength()):
            m = sd.Inputs(j)
            sig_in[m.Name().decode()] = int(m.TensorIndex())
        for j in range(sd.OutputsLength()):
            m = sd.Outputs(j)
            sig_out[m.Name().decode()] = int(m.TensorIndex())

    return GraphInfo(
        ops=ops,
        tensors=tensors,
        inputs=[int(v) for v in sg.InputsAsNumpy()],
        outputs=[int(v) for v in sg.OutputsAsNumpy()],
        signature_inputs=sig_in,
        signature_outputs=sig_out,
        n_subgraphs=int(model.SubgraphsLength()),
        size=len(tflite_bytes),
    )


def io_tensors(graph: GraphInfo, in_names: list[str], out_names: list[str]) -> dict[str, Any]:
    """Resolve logical input/output names to tensors of the subgraph.

    Returns ``{"inputs": {name: {...}}, "outputs": {name: {...}}}`` with for each
    name the tensor ``index``, its ``position`` in the subgraph's input (output)
    list — what index-based interpreters such as TFLM use —, ``shape``, ``dtype``,
    ``scale`` and ``zero_point``. The signature names are used when present,
    tensor names otherwise.
    """
    result: dict[str, Any] = {}
    for kind, names, listed, sig in (
        ("inputs", in_names, graph.inputs, graph.signature_inputs),
        ("outputs", out_names, graph.outputs, graph.signature_outputs),
    ):
        found: dict[str, int] = {}
        for name in names:
            if name in sig:
                found[name] = sig[name]
        for idx in listed:
            ln = logical_name(graph.tensors[idx].name, names)
            if ln is not None and ln not in found:
                found[ln] = idx
        missing = [n for n in names if n not in found]
        if missing:
            listed_names = [graph.tensors[i].name for i in listed]
            raise KeyError(f"{kind}: cannot find {missing} among {listed_names}")
        entry = {}
        for name in names:
            t = graph.tensors[found[name]]
            entry[name] = {
                "index": t.index,
                "position": listed.index(t.index),
                "tensor_name": t.name,
                "shape": list(t.shape),
                "dtype": t.dtype,
                "scale": t.scale[0] if len(t.scale) == 1 else list(t.scale),
                "zero_point": t.zero_point[0] if len(t.zero_point) == 1 else list(t.zero_point),
            }
        result[kind] = entry
    return result


def constant_data(tflite_bytes: bytes, tensor_index: int) -> np.ndarray:
    """The constant data of a tensor (weights, bias) as a numpy array of its type and shape."""
    buf = bytearray(tflite_bytes)
    model = schema.Model.GetRootAs(buf, 0)
    t = model.Subgraphs(0).Tensors(tensor_index)
    b = model.Buffers(t.Buffer())
    dtypes = {
        schema.TensorType.INT8: np.int8,
        schema.TensorType.UINT8: np.uint8,
        schema.TensorType.INT16: np.int16,
        schema.TensorType.INT32: np.int32,
        schema.TensorType.INT64: np.int64,
        schema.TensorType.FLOAT32: np.float32,
    }
    if t.Type() not in dtypes:
        raise ValueError(f"tensor {tensor_index}: unsupported type {_TYPE_NAMES.get(t.Type())}")
    if b is None or b.DataLength() == 0:
        raise ValueError(f"tensor {tensor_index} ({t.Name().decode()}) has no constant data")
    raw = b.DataAsNumpy().tobytes()
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    return np.frombuffer(raw, dtypes[t.Type()]).reshape(shape).copy()
