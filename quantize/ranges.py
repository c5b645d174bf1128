"""Editing the ranges a calibrated model recorded, before the quantizer turns them into
scales and zero points (TensorFlow's flatbuffer object API).

- :func:`set_state_ranges`: each ``hN_in`` and ``hN_out`` gets one range, the unit
  range [−1, 127/128] (scale 1/128, zero point 0 exactly) or the union of the two
  calibrated ones, so a device copies the state bytes from step to step unchanged.
- :func:`cap_saturated_ranges`: the ranges feeding LOGISTIC and TANH are narrowed
  to where the int8 output saturates; a wider range only coarsens the scale.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tensorflow.lite.tools import flatbuffer_utils

from quantize.graph import TF_OP_NAMES

# |x| beyond which the int8 output of the activation is its extreme value:
# σ (output scale 1/256, zero point −128) rounds to 0 or 255/256 beyond ln(511);
# tanh (scale 1/128, zero point 0) rounds to −1 or 127/128 beyond atanh(1 − 1/256).
_SATURATION = {"LOGISTIC": math.log(511.0), "TANH": math.atanh(1.0 - 1.0 / 256.0)}
# "unit": h ∈ (−1, 1), so [−1, 127/128] gives scale 1/128, zero point 0 exactly.
_UNIT_RANGE = (-1.0, 127.0 / 128.0)


def set_state_ranges(
    calibrated: bytes, pairs: list[tuple[str, str]], mode: str
) -> tuple[bytes, dict]:
    """Give each (h_in, h_out) pair of tensors one range: the unit range, or their union."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    sig = model.signatureDefs[0]
    by_name = {}
    for m in [*sig.inputs, *sig.outputs]:
        name = m.name.decode() if isinstance(m.name, bytes) else m.name
        by_name[name] = m.tensorIndex
    tensors = model.subgraphs[0].tensors
    ranges = {}
    for a, b in pairs:
        qa, qb = tensors[by_name[a]].quantization, tensors[by_name[b]].quantization
        if qa is None or qb is None or qa.min is None or qb.min is None:
            raise RuntimeError(f"calibration recorded no range for {a} or {b}")
        if mode == "unit":
            lo, hi = _UNIT_RANGE
        else:
            lo = float(min(np.min(qa.min), np.min(qb.min)))
            hi = float(max(np.max(qa.max), np.max(qb.max)))
        ranges[a] = {"calibrated": [float(qa.min[0]), float(qa.max[0])], "set": [lo, hi]}
        ranges[b] = {"calibrated": [float(qb.min[0]), float(qb.max[0])], "set": [lo, hi]}
        for q in (qa, qb):
            q.min = np.array([lo], np.float32)
            q.max = np.array([hi], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), ranges


class _Graph:
    """Subgraph 0 of a calibrated model in TensorFlow's flatbuffer object API: who
    produces and who uses each tensor, and the ranges the calibrator recorded."""

    def __init__(self, calibrated: bytes) -> None:
        self.model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
        self.sg = self.model.subgraphs[0]
        self.tensors = self.sg.tensors
        self.producer: dict[int, Any] = {}
        self.users: dict[int, list[Any]] = {}
        for op in self.sg.operators:
            for t in op.outputs:
                self.producer[int(t)] = op
            for t in op.inputs:
                if t >= 0:
                    self.users.setdefault(int(t), []).append(op)

    def to_bytes(self) -> bytes:
        return bytes(flatbuffer_utils.convert_object_to_bytearray(self.model))

    def op_name(self, op: Any) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        return TF_OP_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")

    def recorded(self, t: int) -> tuple[float, float] | None:
        q = self.tensors[t].quantization
        if q is None or q.min is None or q.max is None or len(q.min) != 1:
            return None
        return float(q.min[0]), float(q.max[0])

    def set_range(self, t: int, lo: float, hi: float) -> None:
        q = self.tensors[t].quantization
        q.min = np.array([lo], np.float32)
        q.max = np.array([hi], np.float32)

    def split_data(self, op: Any) -> int | None:
        """The data input of a SPLIT or SPLIT_V, None for any other op."""
        kind = self.op_name(op)
        if kind == "SPLIT":
            return int(op.inputs[1])
        if kind == "SPLIT_V":
            return int(op.inputs[0])
        return None

    def plain_add(self, op: Any) -> bool:
        opts = op.builtinOptions
        return self.op_name(op) == "ADD" and (opts is None or opts.fusedActivationFunction == 0)

    def root_and_outputs(self, t: int) -> tuple[int, list[int]]:
        """The tensor a split chain starts from, and the split outputs on the way to t."""
        chain = [t]
        while t in self.producer and self.split_data(self.producer[t]) is not None:
            t = self.split_data(self.producer[t])
            chain.append(t)
        return t, chain[:-1]

    def leaves(self, t: int) -> list[tuple[int, Any]] | None:
        """Every (tensor, non-split user) below t through splits; None if t is a graph output."""
        out: list[tuple[int, Any]] = []
        for op in self.users.get(t, []):
            if self.split_data(op) is not None and self.split_data(op) == t:
                for o in op.outputs:
                    sub = self.leaves(int(o))
                    if sub is None:
                        return None
                    out += sub
            else:
                out.append((t, op))
        if t in self.sg.outputs:
            return None
        return out


def _activation_bounds(
    g: _Graph,
) -> tuple[dict[int, float], dict[tuple[int, int], float]]:
    """``{activation input: S}`` and ``{(addend, ADD output): S + R_other}``."""
    bounds: dict[int, float] = {}
    addend_bounds: dict[tuple[int, int], float] = {}
    for op in g.sg.operators:
        sat = _SATURATION.get(g.op_name(op))
        if sat is None:
            continue
        t_in = int(op.inputs[0])
        if len(g.users.get(t_in, [])) != 1 or g.recorded(t_in) is None:
            continue
        bounds[t_in] = min(bounds.get(t_in, math.inf), sat)
        add = g.producer.get(t_in)
        if add is None or not g.plain_add(add) or len(add.inputs) != 2:
            continue
        a, b = (int(v) for v in add.inputs)
        ra, rb = g.recorded(a), g.recorded(b)
        if ra is None or rb is None:
            continue
        addend_bounds[(a, t_in)] = sat + max(abs(rb[0]), abs(rb[1]))
        addend_bounds[(b, t_in)] = sat + max(abs(ra[0]), abs(ra[1]))
    return bounds, addend_bounds


def _caps(
    g: _Graph, bounds: dict[int, float], addend_bounds: dict[tuple[int, int], float]
) -> dict[int, float]:
    """The bound of every tensor to narrow: activation inputs, and the addends (with the
    split chains they come through) whose every use is an ADD feeding an activation."""
    caps: dict[int, float] = dict(bounds)
    groups: dict[int, dict[str, Any]] = {}
    for (a, _), bound in addend_bounds.items():
        root, outs = g.root_and_outputs(a)
        group = groups.setdefault(root, {"tensors": {root}, "bound": 0.0})
        group["tensors"].update(outs)
        group["bound"] = max(group["bound"], bound)
    for root, group in groups.items():
        uses = g.leaves(root)
        if not uses or root in g.sg.inputs or g.recorded(root) is None:
            continue
        if not all(g.plain_add(op) and (t, int(op.outputs[0])) in addend_bounds for t, op in uses):
            continue
        for t in {root, *(t for t, _ in uses)} | group["tensors"]:
            caps[t] = min(caps.get(t, math.inf), group["bound"])
    return caps


def cap_saturated_ranges(calibrated: bytes) -> tuple[bytes, dict[int, dict]]:
    """Narrow the recorded ranges feeding LOGISTIC and TANH to where their int8 output saturates.

    For an activation with saturation bound S whose input is used by it alone,
    the input's range is intersected with [−S, S]. When that input is an ADD
    (no fused activation) of a and b, a's range is intersected with
    [−(S + R_b), S + R_b], R_b = max |calibrated range of b|: a value of a
    beyond that bound makes |a + b| > S with a's sign, and so does a clipped
    one, so the activation's int8 output is unchanged. A tensor reaching the
    ADD through SPLIT / SPLIT_V (which keep their input's quantization) is
    capped, with all its split outputs, by the loosest bound among its uses,
    and only when every use is such an ADD. Ranges are only ever narrowed.
    Returns the new bytes and ``{tensor index: {"calibrated": [lo, hi], "set": [lo, hi]}}``.
    """
    g = _Graph(calibrated)
    changed: dict[int, dict] = {}
    for t, cap in sorted(_caps(g, *_activation_bounds(g)).items()):
        r = g.recorded(t)
        if r is None:
            continue
        lo, hi = max(r[0], -cap), min(r[1], cap)
        if (lo, hi) == r:
            continue
        g.set_range(t, lo, hi)
        changed[t] = {"calibrated": [r[0], r[1]], "set": [lo, hi]}
    return g.to_bytes(), changed
