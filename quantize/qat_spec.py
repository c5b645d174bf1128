"""What the converted int8 step quantizes, read from a ``.tflite``, and the integer
parameters of every op, derived from float weights exactly as the converter and TFLM do.

:func:`read_act_spec` walks a converted step graph by its wiring and returns the
scale and zero point of every activation tensor the int8 step computes, under
logical names (per GRU layer ``l`` = 1, 2, …)::

    x          the int8 input
    fe         front end FULLY_CONNECTED (+ ReLU) output          (front end only)
    gx{l}      x·W + b_in         (FULLY_CONNECTED)
    gh{l}      h·U + b_rec        (FULLY_CONNECTED)
    zrs{l}     gx[:2U] + gh[:2U]  (ADD, the LOGISTIC input)
    zr{l}      σ(zrs)             (LOGISTIC; scale 1/256, zero point −128)
    rh{l}      r ⊙ gh[2U:]        (MUL)
    hs{l}      gx[2U:] + rh       (ADD, the TANH input)
    c{l}       tanh(hs)           (TANH; scale 1/128, zero point 0)
    d{l}       h − c              (SUB)
    zd{l}      z ⊙ d              (MUL)
    h{l}       c + zd             (ADD; the state, scale 1/128, zero point 0)
    logits     head FULLY_CONNECTED output
    y          SOFTMAX output (classifier) — for a forecaster ``y`` is the head output

Weights are not read from the file: :func:`fc_params` quantizes float weights the
way the converter does (per output channel, symmetric, ``max|w| / 127`` in float32,
round half away from zero; a row whose weights are all zero gets the scale that
puts its bias at ``±2^30``) and derives TFLM's per-row multipliers with
:func:`edge_runtime.tflm_ref.fc_multipliers`. ``tests/test_qat.py`` checks both
against the converter's output, value for value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime import contract, tflm_ref
from edge_runtime.tflite_reader import Model
from quantize.graph import read

# A row with no nonzero weight: the converter gives it the range ±5e-7 (scale 5e-7 / 127),
# widened when the bias would not fit: then the weight scale is |b| / (½·(2^31 − 1) · s_in),
# computed in float64 and stored as float32, and the bias lands at about ±2^30 (measured:
# BasicMotions and HAPT pruned columns; a float32 quotient differs by one ulp in 1 of 19
# such rows of a 75 %-block-pruned BasicMotions model, whose bias then moves by 128).
_ZERO_ROW_RANGE = np.float32(5e-7)
_ZERO_ROW_BIAS = 0.5 * (2**31 - 1)


class SpecError(ValueError):
    """The .tflite is not the step graph this module mirrors; the message says where."""


@dataclass(frozen=True)
class Quant:
    scale: float
    zero_point: int

    def to_list(self) -> list[float | int]:
        return [self.scale, self.zero_point]


def read_act_spec(tflite_bytes: bytes, n_layers: int, front_end: bool) -> dict[str, Quant]:
    """``{logical name: Quant}`` of every activation tensor of a converted step model."""
    g = read(tflite_bytes)
    return act_spec_from_graph(g, n_layers, front_end)


def act_spec_from_graph(g: Model, n_layers: int, front_end: bool) -> dict[str, Quant]:
    producer = {o: op for op in g.operators for o in op.outputs}
    users: dict[int, list[Any]] = {}
    for op in g.operators:
        for t in op.inputs:
            if t >= 0:
                users.setdefault(t, []).append(op)

    def q(t: int) -> Quant:
        ti = g.tensors[t]
        if not ti.scale:
            raise SpecError(f"tensor #{t} {ti.name!r} has no quantization")
        return Quant(float(ti.scale[0]), int(ti.zero_point[0]))

    def only_user(t: int, kind: str) -> Any:
        us = [op for op in users.get(t, []) if op.opcode == kind]
        if len(us) != 1:
            raise SpecError(f"tensor #{t} {g.tensors[t].name!r}: expected one {kind} user")
        return us[0]

    def fc_by_weight(tag: str) -> Any:
        found = [
            op
            for op in g.operators
            if op.opcode == "FULLY_CONNECTED"
            and any(p.startswith(tag) for p in g.tensors[op.inputs[1]].name.split("/"))
        ]
        if len(found) != 1:
            raise SpecError(
                f"expected one FULLY_CONNECTED with weights {tag!r}, found {len(found)}"
            )
        return found[0]

    def data_of(t: int) -> int:
        """The tensor a SPLIT / SPLIT_V output comes from (its quantization is the input's)."""
        while t in producer and producer[t].opcode in ("SPLIT", "SPLIT_V"):
            op = producer[t]
            t = op.inputs[1] if op.opcode == "SPLIT" else op.inputs[0]
        return t

    spec: dict[str, Quant] = {contract.X: q(g.signature_inputs[contract.X])}
    if front_end:
        fe = fc_by_weight("front_end")
        spec["fe"] = q(fe.outputs[0])
    for layer in range(1, n_layers + 1):
        gx = fc_by_weight(f"gru_{layer}_gx")
        gh = fc_by_weight(f"gru_{layer}_gh")
        h_in = g.signature_inputs[contract.state_in(layer)]
        if gh.inputs[0] != h_in:
            raise SpecError(f"gru_{layer}_gh does not read {contract.state_in(layer)}")
        spec[f"gx{layer}"], spec[f"gh{layer}"] = q(gx.outputs[0]), q(gh.outputs[0])
        gx_parts = [o for s in users[gx.outputs[0]] if s.opcode == "SPLIT_V" for o in s.outputs]
        add_zr = next(
            op for o in gx_parts for op in users.get(o, []) if op.opcode == "ADD"
            and any(data_of(i) == gh.outputs[0] for i in op.inputs)
        )  # fmt: skip
        spec[f"zrs{layer}"] = q(add_zr.outputs[0])
        sig = only_user(add_zr.outputs[0], "LOGISTIC")
        spec[f"zr{layer}"] = q(sig.outputs[0])
        split = only_user(sig.outputs[0], "SPLIT")
        z_t, r_t = split.outputs
        mul_r = only_user(r_t, "MUL")
        spec[f"rh{layer}"] = q(mul_r.outputs[0])
        add_h = only_user(mul_r.outputs[0], "ADD")
        spec[f"hs{layer}"] = q(add_h.outputs[0])
        th = only_user(add_h.outputs[0], "TANH")
        spec[f"c{layer}"] = q(th.outputs[0])
        sub = only_user(th.outputs[0], "SUB")
        if tuple(sub.inputs) != (h_in, th.outputs[0]):
            raise SpecError(f"layer {layer}: SUB is not h_in − tanh")
        spec[f"d{layer}"] = q(sub.outputs[0])
        mul_z = only_user(sub.outputs[0], "MUL")
        if z_t not in mul_z.inputs:
            raise SpecError(f"layer {layer}: the update MUL does not read z")
        spec[f"zd{layer}"] = q(mul_z.outputs[0])
        add_o = only_user(mul_z.outputs[0], "ADD")
        if add_o.outputs[0] != g.signature_outputs[contract.state_out(layer)]:
            raise SpecError(f"layer {layer}: the last ADD is not {contract.state_out(layer)}")
        spec[f"h{layer}"] = q(add_o.outputs[0])
        hin = q(h_in)
        if (hin.scale, hin.zero_point) != (contract.STATE_SCALE, 0) or spec[f"h{layer}"] != hin:
            raise SpecError(f"layer {layer}: the state is not on scale 1/128, zero point 0")
    head = fc_by_weight("head")
    spec["logits"] = q(head.outputs[0])
    y_t = g.signature_outputs[contract.Y]
    spec[contract.Y] = q(y_t)
    return spec


# --------------------------------------------------------------------------- integer parameters


def round_half_away(x: np.ndarray) -> np.ndarray:
    return contract.round_half_away(x)


def fc_params(
    w: np.ndarray,
    b: np.ndarray,
    q_in: Quant,
    q_out: Quant,
    relu: bool,
) -> dict[str, np.ndarray | int]:
    """int8 FULLY_CONNECTED parameters of float ``w (in, out)`` and ``b (out,)``.

    Returns ``w_q (in, out)`` int8 values, ``w_scale (out,)`` float32, ``b_q (out,)``
    int32, TFLM's per-row ``mult``/``shift``, the zero points and the clamp range.
    """
    w = np.asarray(w, np.float32)
    b = np.asarray(b, np.float32)
    s_in = np.float32(q_in.scale)
    max_abs = np.abs(w).max(axis=0)
    w_scale = (max_abs / np.float32(127.0)).astype(np.float32)
    zero = max_abs == 0
    if zero.any():
        floor = _ZERO_ROW_RANGE / np.float32(127.0)
        fit = (np.abs(b[zero].astype(np.float64)) / (_ZERO_ROW_BIAS * float(s_in))).astype(
            np.float32
        )
        w_scale[zero] = np.maximum(floor, fit)
    w_q = np.clip(round_half_away(w / w_scale), -127, 127).astype(np.int64)
    b_scale = (s_in * w_scale).astype(np.float32)
    b_q = np.clip(round_half_away(b / b_scale), -(2**31) + 1, 2**31 - 1).astype(np.int64)
    mult, shift = tflm_ref.fc_multipliers(q_in.scale, w_scale, q_out.scale)
    act = tflm_ref.ACT_RELU if relu else tflm_ref.ACT_NONE
    lo, hi = tflm_ref.activation_range(act, q_out.scale, q_out.zero_point)
    return {
        "w_q": w_q,
        "w_scale": w_scale,
        "b_q": b_q,
        "mult": mult.astype(np.int64),
        "shift": shift.astype(np.int64),
        "zp_in": q_in.zero_point,
        "zp_out": q_out.zero_point,
        "act_min": lo,
        "act_max": hi,
    }


def elementwise_params(spec: dict[str, Quant], layer: int) -> dict[str, dict]:
    """ADD / MUL / SUB parameters and the LOGISTIC / TANH tables of one GRU layer."""
    s = {k: spec[f"{k}{layer}"] for k in ("gx", "gh", "zrs", "zr", "rh", "hs", "c", "d", "zd", "h")}
    h = s["h"]

    def a(p: Quant, q: Quant, o: Quant) -> tuple:
        return p.scale, p.zero_point, q.scale, q.zero_point, o.scale, o.zero_point

    return {
        "add_zr": tflm_ref.add_params(*a(s["gx"], s["gh"], s["zrs"])),
        "mul_r": tflm_ref.mul_params(*a(s["zr"], s["gh"], s["rh"])),
        "add_h": tflm_ref.add_params(*a(s["gx"], s["rh"], s["hs"])),
        "sub": tflm_ref.sub_params(*a(h, s["c"], s["d"])),
        "mul_z": tflm_ref.mul_params(*a(s["zr"], s["d"], s["zd"])),
        "add_o": tflm_ref.add_params(*a(s["c"], s["zd"], h)),
        "sigmoid": tflm_ref.logistic_table(
            s["zrs"].scale, s["zrs"].zero_point, s["zr"].scale, s["zr"].zero_point
        ).astype(np.int64),
        "tanh": tflm_ref.tanh_table(
            s["hs"].scale, s["hs"].zero_point, s["c"].scale, s["c"].zero_point
        ).astype(np.int64),
    }
