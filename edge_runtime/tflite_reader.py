"""A small, dependency-free reader of the .tflite flatbuffer fields the exporter needs.

Why not TensorFlow's schema module: ``firmware_export`` must run without TensorFlow.
Why not the LiteRT interpreter: it does not report builtin options (fused activation,
softmax beta, split counts), and the exporter must verify those. The fields read here
are a fixed, small part of ``tensorflow/lite/schema/schema.fbs`` (field ids below);
every offset is bounds-checked, so a corrupted or hostile file is a ``TfliteError``,
never a crash or a huge allocation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# BuiltinOperator codes (schema.fbs) of the ops this project meets; others print as numbers.
OPCODES: dict[int, str] = {
    0: "ADD", 2: "CONCATENATION", 3: "CONV_2D", 6: "DEQUANTIZE", 9: "FULLY_CONNECTED",
    14: "LOGISTIC", 18: "MUL", 19: "RELU", 21: "RELU6", 22: "RESHAPE", 25: "SOFTMAX", 28: "TANH", 32: "CUSTOM",
    41: "SUB", 45: "STRIDED_SLICE", 49: "SPLIT", 102: "SPLIT_V", 114: "QUANTIZE",
}  # fmt: skip
# TensorType codes
TYPES: dict[int, str] = {
    0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 4: "INT64", 5: "STRING", 6: "BOOL",
    7: "INT16", 9: "INT8", 10: "FLOAT64",
}  # fmt: skip
_NP = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32,
       "INT64": np.int64, "FLOAT32": np.float32}  # fmt: skip
# builtin_options union members read here: type code -> (name, {field id: (key, fmt)})
_OPTIONS: dict[int, tuple[str, dict[int, tuple[str, str]]]] = {
    8: ("FullyConnectedOptions", {0: ("fused_activation_function", "b"), 1: ("weights_format", "b"),
                                  2: ("keep_num_dims", "?")}),
    9: ("SoftmaxOptions", {0: ("beta", "f")}),
    11: ("AddOptions", {0: ("fused_activation_function", "b")}),
    21: ("MulOptions", {0: ("fused_activation_function", "b")}),
    28: ("SubOptions", {0: ("fused_activation_function", "b")}),
    35: ("SplitOptions", {0: ("num_splits", "i")}),
    77: ("SplitVOptions", {0: ("num_splits", "i")}),
}  # fmt: skip


class TfliteError(ValueError):
    """The bytes are not a .tflite model this reader can read."""


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    quantized_dimension: int
    buffer: int
    data: bytes | None  # constant contents, None for activations

    def array(self) -> np.ndarray:
        """The constant data as a numpy array of the tensor's type and shape."""
        if self.data is None:
            raise TfliteError(f"tensor #{self.index} {self.name!r} has no constant data")
        if self.dtype not in _NP:
            raise TfliteError(f"tensor #{self.index} {self.name!r}: unsupported type {self.dtype}")
        a = np.frombuffer(self.data, _NP[self.dtype])
        if a.size != int(np.prod(self.shape)):
            raise TfliteError(
                f"tensor #{self.index} {self.name!r}: data size != shape {self.shape}"
            )
        return a.reshape(self.shape).copy()


@dataclass(frozen=True)
class Operator:
    index: int  # position in the execution order
    opcode: str
    inputs: tuple[int, ...]  # -1 = optional input absent
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"op #{self.index} ({self.opcode})"


@dataclass
class Model:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    signature_inputs: dict[str, int]
    signature_outputs: dict[str, int]
    n_subgraphs: int


class _Buf:
    def __init__(self, data: bytes) -> None:
        self.b = data

    def _need(self, pos: int, n: int) -> None:
        if pos < 0 or pos + n > len(self.b):
            raise TfliteError(f"offset {pos}+{n} outside the {len(self.b)}-byte file (corrupted?)")

    def u8(self, pos: int) -> int:
        self._need(pos, 1)
        return self.b[pos]

    def unpack(self, fmt: str, pos: int) -> Any:
        self._need(pos, struct.calcsize(fmt))
        return struct.unpack_from("<" + fmt, self.b, pos)[0]

    def field(self, table: int, fid: int) -> int | None:
        """Absolute position of field ``fid`` of the table at ``table``, None if absent."""
        vt = table - self.unpack("i", table)
        vt_size = self.unpack("H", vt)
        slot = 4 + 2 * fid
        if slot + 2 > vt_size:
            return None
        off = self.unpack("H", vt + slot)
        return table + off if off else None

    def scalar(self, table: int, fid: int, fmt: str, default: Any = 0) -> Any:
        pos = self.field(table, fid)
        return default if pos is None else self.unpack(fmt, pos)

    def ref(self, table: int, fid: int) -> int | None:
        pos = self.field(table, fid)
        return None if pos is None else pos + self.unpack("I", pos)

    def vector(self, table: int, fid: int) -> tuple[int, int] | None:
        """(position of the first element, length) of a vector field."""
        pos = self.ref(table, fid)
        if pos is None:
            return None
        n = self.unpack("I", pos)
        return pos + 4, n

    def scalars(self, table: int, fid: int, fmt: str) -> tuple[Any, ...]:
        v = self.vector(table, fid)
        if v is None:
            return ()
        start, n = v
        size = struct.calcsize(fmt)
        self._need(start, n * size)
        return struct.unpack_from(f"<{n}{fmt}", self.b, start)

    def tables(self, table: int, fid: int) -> list[int]:
        v = self.vector(table, fid)
        if v is None:
            return []
        start, n = v
        self._need(start, 4 * n)
        return [start + 4 * i + self.unpack("I", start + 4 * i) for i in range(n)]

    def string(self, table: int, fid: int) -> str:
        v = self.vector(table, fid)
        if v is None:
            return ""
        start, n = v
        self._need(start, n)
        return self.b[start : start + n].decode("utf-8", "replace")

    def bytes_(self, table: int, fid: int) -> bytes | None:
        v = self.vector(table, fid)
        if v is None or v[1] == 0:
            return None
        start, n = v
        self._need(start, n)
        return bytes(self.b[start : start + n])


def _options(buf: _Buf, op: int) -> dict[str, Any]:
    kind = buf.scalar(op, 3, "B")
    table = buf.ref(op, 4)
    if kind not in _OPTIONS or table is None:
        return {}
    name, fields = _OPTIONS[kind]
    out: dict[str, Any] = {"type": name}
    for fid, (key, fmt) in fields.items():
        out[key] = buf.scalar(table, fid, fmt, 1.0 if fmt == "f" else 0)
    return out


def _tensor(buf: _Buf, t: int, index: int, buffers: list[int]) -> Tensor:
    q = buf.ref(t, 4)
    scale: tuple[float, ...] = ()
    zp: tuple[int, ...] = ()
    qdim = 0
    if q is not None:
        scale = tuple(float(s) for s in buf.scalars(q, 2, "f"))
        zp = tuple(int(z) for z in buf.scalars(q, 3, "q"))
        qdim = int(buf.scalar(q, 6, "i"))
    b_index = int(buf.scalar(t, 2, "I"))
    if b_index >= len(buffers):
        raise TfliteError(f"tensor #{index}: buffer {b_index} does not exist")
    b = buffers[b_index]
    data = buf.bytes_(b, 0)
    if data is None and buf.scalar(b, 1, "Q") > 0:
        raise TfliteError(f"tensor #{index}: data stored outside the flatbuffer (unsupported)")
    dtype = int(buf.scalar(t, 1, "b"))
    return Tensor(
        index=index,
        name=buf.string(t, 3),
        dtype=TYPES.get(dtype, f"TYPE_{dtype}"),
        shape=tuple(int(d) for d in buf.scalars(t, 0, "i")),
        scale=scale,
        zero_point=zp,
        quantized_dimension=qdim,
        buffer=b_index,
        data=data,
    )


def read_model(data: bytes) -> Model:
    """Parse subgraph 0 of a .tflite model."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TfliteError("not a .tflite flatbuffer (file identifier 'TFL3' missing)")
    buf = _Buf(bytes(data))
    root = buf.unpack("I", 0)
    codes = []
    for c in buf.tables(root, 1):
        value = max(int(buf.scalar(c, 0, "b")), int(buf.scalar(c, 3, "i")))
        codes.append(OPCODES.get(value, f"BUILTIN_{value}"))
    subgraphs = buf.tables(root, 2)
    if not subgraphs:
        raise TfliteError(".tflite model has no subgraph")
    buffers = buf.tables(root, 4)
    sg = subgraphs[0]
    tensors = [_tensor(buf, t, i, buffers) for i, t in enumerate(buf.tables(sg, 0))]
    ops = []
    for i, o in enumerate(buf.tables(sg, 3)):
        code = int(buf.scalar(o, 0, "I"))
        if code >= len(codes):
            raise TfliteError(f"op #{i}: opcode index {code} does not exist")
        ins = tuple(int(v) for v in buf.scalars(o, 1, "i"))
        outs = tuple(int(v) for v in buf.scalars(o, 2, "i"))
        if any(v >= len(tensors) or v < -1 for v in ins + outs):
            raise TfliteError(f"op #{i} ({codes[code]}): tensor index out of range")
        ops.append(Operator(i, codes[code], ins, outs, _options(buf, o)))
    sig_in: dict[str, int] = {}
    sig_out: dict[str, int] = {}
    for sd in buf.tables(root, 7)[:1]:
        for fid, target in ((0, sig_in), (1, sig_out)):
            for m in buf.tables(sd, fid):
                target[buf.string(m, 0)] = int(buf.scalar(m, 1, "I"))
    return Model(
        tensors=tensors,
        operators=ops,
        inputs=[int(v) for v in buf.scalars(sg, 1, "i")],
        outputs=[int(v) for v in buf.scalars(sg, 2, "i")],
        signature_inputs=sig_in,
        signature_outputs=sig_out,
        n_subgraphs=len(subgraphs),
    )
