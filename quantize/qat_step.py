"""The fake-quant GRU step: the converted int8 step, op for op, inside a TensorFlow graph.

Every int8 tensor of the step (see :mod:`quantize.qat_spec` for the names) is
carried twice: ``q``, its int8 value (int64 tensor, no gradient), computed with
TFLM's integer arithmetic — FULLY_CONNECTED as an exact integer product plus the
int32 bias, then ``MultiplyByQuantizedMultiplier`` with double rounding; ADD, SUB
with the 20-bit left shift and three requantizations; MUL with one; LOGISTIC and
TANH as the 256-entry tables of :mod:`edge_runtime.tflm_ref` (the ones the C engine
uses) — and ``v``, a float surrogate of the same op on the dequantized inputs
(``x·W_q + b``, ``σ``, ``tanh``, sums, products) whose forward value is replaced by
the dequantized ``q`` (a straight-through estimator): the forward pass is the int8
step, the gradient is the float op's. Weights are quantized per output channel,
symmetric (:func:`quantize.qat_spec.fc_params`), with a straight-through gradient.

The softmax of a classifier is left in float: the loss reads the dequantized int8
head logits (what the int8 SOFTMAX reads); the int8 softmax itself is applied
exactly, in numpy, when outputs are evaluated (:func:`edge_runtime.tflm_ref.softmax`).

The parameters (integer multipliers, tables, weight scales, quantized weights)
live in TensorFlow variables that :meth:`FakeQuantStep.assign` refreshes from the
current float weights and an activation spec before each batch, so one traced
graph serves every batch and every spec.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from edge_runtime import tflm_ref
from quantize.qat_spec import Quant, elementwise_params, fc_params
from train.model import ModelConfig

I64 = tf.int64
F32 = tf.float32
F64 = tf.float64


# --------------------------------------------------------------------------- integer ops


def _rdbpot(x: tf.Tensor, exponent: tf.Tensor) -> tf.Tensor:
    """RoundingDivideByPOT (ties away from zero), int64."""
    one = tf.ones_like(exponent)
    mask = tf.bitwise.left_shift(one, exponent) - one
    rem = tf.bitwise.bitwise_and(x, mask)
    thr = tf.bitwise.right_shift(mask, one) + tf.cast(x < 0, I64)
    return tf.bitwise.right_shift(x, exponent) + tf.cast(rem > thr, I64)


def requantize(acc: tf.Tensor, mult: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    """TFLM's MultiplyByQuantizedMultiplier, double rounding (:func:`tflm_ref.requantize`).

    int64 in and out; the values stay in the int32 range for the step's tensors, so
    int32 wrapping never applies (``tests/test_qat.py`` compares with tflm_ref)."""
    zero = tf.zeros_like(shift)
    left = tf.maximum(shift, zero)
    right = tf.maximum(-shift, zero)
    x = tf.bitwise.left_shift(acc, left)
    ab = x * mult
    nudge = tf.where(ab >= 0, tf.constant(1 << 30, I64), tf.constant(1 - (1 << 30), I64))
    high = tf.truncatediv(ab + nudge, tf.constant(1 << 31, I64))
    return _rdbpot(high, right)


def _clip(q: tf.Tensor, lo: Any = -128, hi: Any = 127) -> tf.Tensor:
    return tf.clip_by_value(q, tf.cast(lo, I64), tf.cast(hi, I64))


def _deq(q: tf.Tensor, scale: tf.Tensor, zp: tf.Tensor) -> tf.Tensor:
    return scale * tf.cast(q - zp, F32)


def _ste(surrogate: tf.Tensor, q: tf.Tensor, scale: tf.Tensor, zp: tf.Tensor) -> tf.Tensor:
    """Forward: the dequantized int8 value; backward: the surrogate's gradient."""
    return surrogate + tf.stop_gradient(_deq(q, scale, zp) - surrogate)


def round_half_away(x: tf.Tensor) -> tf.Tensor:
    return tf.sign(x) * tf.floor(tf.abs(x) + 0.5)


# --------------------------------------------------------------------------- the step


class FakeQuantStep:
    """The int8 step of ``cfg`` with its parameters in variables (see the module doc).

    ``weights`` is the list of the window model's float variables in this order:
    [front_end kernel (k, C, F), front_end bias], per GRU layer kernel (in, 3U),
    recurrent kernel (U, 3U), bias (2, 3U), then head kernel and bias; ``masks`` maps
    a variable's position to a 0/1 array applied in the forward pass (pruned weights
    stay zero whatever the gradient says).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        weights: list[Any],
        masks: dict[int, np.ndarray] | None = None,
    ) -> None:
        self.cfg = cfg
        self.weights = weights
        self.masks = {i: tf.constant(m, F32) for i, m in (masks or {}).items()}
        self.vars: dict[str, tf.Variable] = {}
        self.n_layers = len(cfg.gru_units)

    # ---- parameters

    def fc_layers(self) -> list[tuple[str, int, bool]]:
        """(name, index of its kernel in ``weights``, ReLU) of every FULLY_CONNECTED."""
        out: list[tuple[str, int, bool]] = []
        i = 0
        if self.cfg.has_front_end:
            out.append(("fe", 0, True))
            i = 2
        for layer in range(1, self.n_layers + 1):
            out.append((f"gx{layer}", i, False))
            out.append((f"gh{layer}", i + 1, False))
            i += 3
        out.append(("logits", i, False))
        return out

    def float_weights(self, values: list[np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{fc name: (w (in, out), b (out,))}`` from the window model's weight values."""
        cfg = self.cfg
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        i = 0
        if cfg.has_front_end:
            out["fe"] = (values[0].reshape(cfg.step_inputs, cfg.front_end_filters), values[1])
            i = 2
        for layer in range(1, self.n_layers + 1):
            k, r, b = values[i : i + 3]
            out[f"gx{layer}"] = (k, b[0])
            out[f"gh{layer}"] = (r, b[1])
            i += 3
        out["logits"] = (values[i], values[i + 1])
        return out

    def params(self, spec: dict[str, Quant], values: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Every parameter of the int8 step, flat ``{"fc/key": array}``, from float weights."""
        fw = self.float_weights(values)
        flat: dict[str, np.ndarray] = {}
        for name, w_index, relu in self.fc_layers():
            w, b = fw[name]
            if w_index in self.masks:
                w = w * self.masks[w_index].numpy().reshape(w.shape)
            q_in = self._fc_input(spec, name)
            p = fc_params(w, b, q_in, spec[name], relu)
            for k, v in p.items():
                flat[f"{name}/{k}"] = np.asarray(v)
        for layer in range(1, self.n_layers + 1):
            for op, p in elementwise_params(spec, layer).items():
                if isinstance(p, np.ndarray):
                    flat[f"ew{layer}/{op}"] = p
                else:
                    for k, v in p.items():
                        flat[f"ew{layer}/{op}/{k}"] = np.asarray(v)
        for name, q in spec.items():
            flat[f"act/{name}/scale"] = np.asarray(q.scale, np.float32)
            flat[f"act/{name}/zp"] = np.asarray(q.zero_point, np.int64)
        return flat

    def _fc_input(self, spec: dict[str, Quant], name: str) -> Quant:
        if name == "fe":
            return spec["x"]
        if name == "logits":
            return spec[f"h{self.n_layers}"]
        layer = int(name[2:])
        if name.startswith("gh"):
            return spec[f"h{layer}"]
        if layer > 1:
            return spec[f"h{layer - 1}"]
        return spec["fe"] if self.cfg.has_front_end else spec["x"]

    def assign(self, spec: dict[str, Quant], values: list[np.ndarray] | None = None) -> None:
        """Set every parameter variable from ``spec`` and the weights (current ones by default)."""
        if values is None:
            values = [np.asarray(w.numpy(), np.float32) for w in self.weights]
        flat = self.params(spec, values)
        for k, v in flat.items():
            dtype = F32 if v.dtype.kind == "f" else I64
            if k.endswith("/w_q") or k.endswith("/b_q"):
                dtype = F64  # exact integers in a float64 product
            if k not in self.vars:
                self.vars[k] = tf.Variable(tf.constant(v, dtype), trainable=False, name=k)
            else:
                self.vars[k].assign(tf.constant(v, dtype))

    # ---- tensors

    def _w(self, i: int) -> tf.Tensor:
        w = tf.convert_to_tensor(self.weights[i])
        return w * self.masks[i] if i in self.masks else w

    def _float_wb(self) -> dict[str, tuple[tf.Tensor, tf.Tensor]]:
        cfg = self.cfg
        out: dict[str, tuple[tf.Tensor, tf.Tensor]] = {}
        i = 0
        if cfg.has_front_end:
            w = tf.reshape(self._w(0), (cfg.step_inputs, cfg.front_end_filters))
            out["fe"] = (w, tf.convert_to_tensor(self.weights[1]))
            i = 2
        for layer in range(1, self.n_layers + 1):
            b = tf.convert_to_tensor(self.weights[i + 2])
            out[f"gx{layer}"] = (self._w(i), b[0])
            out[f"gh{layer}"] = (self._w(i + 1), b[1])
            i += 3
        out["logits"] = (self._w(i), tf.convert_to_tensor(self.weights[i + 1]))
        return out

    def _a(self, name: str) -> tuple[tf.Tensor, tf.Tensor]:
        return self.vars[f"act/{name}/scale"], self.vars[f"act/{name}/zp"]

    def quantize_input(self, u: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        s, zp = self._a("x")
        q = _clip(tf.cast(round_half_away(u / s), I64) + zp)
        return q, _ste(u, q, s, zp)

    def fc(
        self, name: str, q_in: tf.Tensor, v_in: tf.Tensor, wb: tuple[tf.Tensor, tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor]:
        V = self.vars
        zp_in = V[f"{name}/zp_in"]
        acc = tf.matmul(tf.cast(q_in - zp_in, F64), V[f"{name}/w_q"]) + V[f"{name}/b_q"]
        acc = tf.cast(tf.round(acc), I64)
        q = requantize(acc, V[f"{name}/mult"], V[f"{name}/shift"]) + V[f"{name}/zp_out"]
        q = _clip(q, V[f"{name}/act_min"], V[f"{name}/act_max"])
        w, b = wb
        w_scale = V[f"{name}/w_scale"]
        w_fq = w + tf.stop_gradient(tf.cast(V[f"{name}/w_q"], F32) * w_scale - w)
        r = tf.matmul(v_in, w_fq) + b
        if name == "fe":
            r = tf.nn.relu(r)
        s, zp = self._a(name)
        return q, _ste(r, q, s, zp)

    def _addsub(self, key: str, qa: tf.Tensor, qb: tf.Tensor, sign: int) -> tf.Tensor:
        V = self.vars

        def scaled(q: tf.Tensor, i: int) -> tf.Tensor:
            x = tf.bitwise.left_shift(q + V[f"{key}/input{i}_offset"], V[f"{key}/left_shift"])
            return requantize(x, V[f"{key}/input{i}_multiplier"], V[f"{key}/input{i}_shift"])

        raw = scaled(qa, 1) + sign * scaled(qb, 2)
        out = requantize(raw, V[f"{key}/output_multiplier"], V[f"{key}/output_shift"])
        return _clip(out + V[f"{key}/output_offset"])

    def _mul(self, key: str, qa: tf.Tensor, qb: tf.Tensor) -> tf.Tensor:
        V = self.vars
        prod = (qa + V[f"{key}/input1_offset"]) * (qb + V[f"{key}/input2_offset"])
        out = requantize(prod, V[f"{key}/output_multiplier"], V[f"{key}/output_shift"])
        return _clip(out + V[f"{key}/output_offset"])

    def _table(self, key: str, q: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.vars[key], q + 128)

    def gru(
        self,
        layer: int,
        qx: tf.Tensor,
        vx: tf.Tensor,
        qh: tf.Tensor,
        vh: tf.Tensor,
        wb: dict[str, tuple[tf.Tensor, tf.Tensor]],
        record: dict[str, tf.Tensor] | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One GRU layer of the int8 step; returns the new state (q, v)."""
        u = self.cfg.gru_units[layer - 1]
        L = layer
        ew = f"ew{L}"
        qgx, vgx = self.fc(f"gx{L}", qx, vx, wb[f"gx{L}"])
        qgh, vgh = self.fc(f"gh{L}", qh, vh, wb[f"gh{L}"])
        q_zrs = self._addsub(f"{ew}/add_zr", qgx[:, : 2 * u], qgh[:, : 2 * u], 1)
        v_zrs = _ste(vgx[:, : 2 * u] + vgh[:, : 2 * u], q_zrs, *self._a(f"zrs{L}"))
        q_zr = self._table(f"{ew}/sigmoid", q_zrs)
        v_zr = _ste(tf.sigmoid(v_zrs), q_zr, *self._a(f"zr{L}"))
        qz, qr = q_zr[:, :u], q_zr[:, u:]
        vz, vr = v_zr[:, :u], v_zr[:, u:]
        q_rh = self._mul(f"{ew}/mul_r", qr, qgh[:, 2 * u :])
        v_rh = _ste(vr * vgh[:, 2 * u :], q_rh, *self._a(f"rh{L}"))
        q_hs = self._addsub(f"{ew}/add_h", qgx[:, 2 * u :], q_rh, 1)
        v_hs = _ste(vgx[:, 2 * u :] + v_rh, q_hs, *self._a(f"hs{L}"))
        q_c = self._table(f"{ew}/tanh", q_hs)
        v_c = _ste(tf.tanh(v_hs), q_c, *self._a(f"c{L}"))
        q_d = self._addsub(f"{ew}/sub", qh, q_c, -1)
        v_d = _ste(vh - v_c, q_d, *self._a(f"d{L}"))
        q_zd = self._mul(f"{ew}/mul_z", qz, q_d)
        v_zd = _ste(vz * v_d, q_zd, *self._a(f"zd{L}"))
        q_h = self._addsub(f"{ew}/add_o", q_c, q_zd, 1)
        v_h = _ste(v_c + v_zd, q_h, *self._a(f"h{L}"))
        if record is not None:
            record.update({f"gx{L}": qgx, f"gh{L}": qgh, f"zrs{L}": q_zrs, f"zr{L}": q_zr,
                           f"rh{L}": q_rh, f"hs{L}": q_hs, f"c{L}": q_c, f"d{L}": q_d,
                           f"zd{L}": q_zd, f"h{L}": q_h})  # fmt: skip
        return q_h, v_h

    def step(
        self,
        qx: tf.Tensor,
        vx: tf.Tensor,
        states: list[tuple[tf.Tensor, tf.Tensor]],
        *,
        head: bool = True,
        record: dict[str, tf.Tensor] | None = None,
    ) -> tuple[list[tuple[tf.Tensor, tf.Tensor]], tuple[tf.Tensor, tf.Tensor] | None]:
        """One int8 step from an int8 ``x``; returns the new states and the head logits."""
        wb = self._float_wb()
        if self.cfg.has_front_end:
            qx, vx = self.fc("fe", qx, vx, wb["fe"])
            if record is not None:
                record["fe"] = qx
        new = []
        for layer, (qh, vh) in enumerate(states, start=1):
            qx, vx = self.gru(layer, qx, vx, qh, vh, wb, record)
            new.append((qx, vx))
        if not head:
            return new, None
        out = self.fc("logits", qx, vx, wb["logits"])
        if record is not None:
            record["logits"] = out[0]
        return new, out

    def zero_states(self, n: tf.Tensor) -> list[tuple[tf.Tensor, tf.Tensor]]:
        return [(tf.zeros((n, u), I64), tf.zeros((n, u), F32)) for u in self.cfg.gru_units]

    # ---- the float step (same weights, no quantization)

    def float_step(
        self, x: tf.Tensor, states: list[tf.Tensor], *, head: bool = True
    ) -> tuple[list[tf.Tensor], tf.Tensor | None]:
        wb = self._float_wb()
        if self.cfg.has_front_end:
            w, b = wb["fe"]
            x = tf.nn.relu(tf.matmul(x, w) + b)
        new = []
        for layer, h in enumerate(states, start=1):
            u = self.cfg.gru_units[layer - 1]
            (wx, bx), (wh, bh) = wb[f"gx{layer}"], wb[f"gh{layer}"]
            gx = tf.matmul(x, wx) + bx
            gh = tf.matmul(h, wh) + bh
            zr = tf.sigmoid(gx[:, : 2 * u] + gh[:, : 2 * u])
            z, r = zr[:, :u], zr[:, u:]
            c = tf.tanh(gx[:, 2 * u :] + r * gh[:, 2 * u :])
            x = c + z * (h - c)
            new.append(x)
        if not head:
            return new, None
        w, b = wb["logits"]
        return new, tf.matmul(x, w) + b


def int8_softmax(q_logits: np.ndarray, logits: Quant) -> np.ndarray:
    """The int8 SOFTMAX of int8 logits ``(..., n)`` exactly as TFLM computes it."""
    return tflm_ref.softmax(np.asarray(q_logits, np.int64), logits.scale)


def window_weights(model: Any, cfg: ModelConfig) -> list[Any]:
    """The window model's variables in :class:`FakeQuantStep` order."""
    out: list[Any] = []
    if cfg.has_front_end:
        fe = model.get_layer("front_end")
        out += [fe.kernel, fe.bias]
    for layer in range(1, len(cfg.gru_units) + 1):
        cell = model.get_layer(f"gru_{layer}").cell
        out += [cell.kernel, cell.recurrent_kernel, cell.bias]
    head = model.get_layer("head")
    out += [head.kernel, head.bias]
    return out
