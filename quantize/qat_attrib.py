"""Where the int8 step's disagreement with its float model comes from, tensor by tensor.

A float simulation of the int8 step (every tensor quantized to its scale and zero
point with round half away from zero, weights per channel, LOGISTIC / TANH as σ / tanh
of the dequantized input, then quantized) in which any tensor can be kept in float.
It is not TFLM's integer arithmetic (requantization rounds once, the activation
tables are the exact functions), so the figures are measured against the
simulation's own all-quantized row, which is printed beside the exact int8 step's.

For every tensor name of :mod:`quantize.qat_spec` (plus ``weights``, all kernels at
once): the argmax agreement with the float model when only that tensor is kept in
float (what quantizing it costs) and when only that tensor is quantized (what it
costs alone).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from quantize.qat_spec import Quant
from quantize.qat_step import FakeQuantStep, round_half_away

WEIGHTS = "weights"


def tensor_names(n_layers: int, front_end: bool) -> list[str]:
    names = ["x"] + (["fe"] if front_end else [])
    for layer in range(1, n_layers + 1):
        names += [f"{k}{layer}" for k in ("gx", "gh", "zrs", "zr", "rh", "hs", "c", "d", "zd", "h")]
    return [*names, "logits", WEIGHTS]


def simulate(
    fq: FakeQuantStep,
    spec: dict[str, Quant],
    xs: np.ndarray,
    keep_float: frozenset[str],
    every_step: bool = False,
    int16: frozenset[str] = frozenset(),
) -> np.ndarray:
    """Head output (float) of the last step over step inputs ``xs (N, S, k·C)``, or of
    every step ``(N, S, n_out)`` with ``every_step``.

    A tensor named in ``int16`` is quantized as TFLite's 16x8 mode would: symmetric,
    zero point 0, on the same range as its int8 quantization (scale = max(|lo|, |hi|)
    / 32767); the estimate of what widening that one tensor would buy."""
    cfg = fq.cfg
    values = [np.asarray(w.numpy(), np.float32) for w in fq.weights]
    fw = fq.float_weights(values)
    wq: dict[str, tuple[tf.Tensor, tf.Tensor]] = {}
    for name, (w, b) in fw.items():
        if WEIGHTS not in keep_float:
            s = np.abs(w).max(axis=0) / np.float32(127.0)
            s = np.where(s > 0, s, 1.0).astype(np.float32)
            w = (np.clip(np.sign(w / s) * np.floor(np.abs(w / s) + 0.5), -127, 127) * s).astype(
                np.float32
            )
        wq[name] = (tf.constant(w), tf.constant(np.asarray(b, np.float32)))

    def q(name: str, v: tf.Tensor) -> tf.Tensor:
        if name in keep_float:
            return v
        s, zp = spec[name].scale, spec[name].zero_point
        if name in int16:
            s16 = max(abs(-128 - zp), abs(127 - zp)) * s / 32767.0
            return s16 * tf.clip_by_value(round_half_away(v / s16), -32767.0, 32767.0)
        k = tf.clip_by_value(round_half_away(v / s) + zp, -128.0, 127.0)
        return s * (k - zp)

    def step(u: tf.Tensor, hs: list[tf.Tensor]) -> tuple[list[tf.Tensor], tf.Tensor]:
        t = q("x", u)
        if cfg.has_front_end:
            w, b = wq["fe"]
            t = q("fe", tf.nn.relu(tf.matmul(t, w) + b))
        new = []
        for layer, h in enumerate(hs, start=1):
            n = cfg.gru_units[layer - 1]
            L = str(layer)
            (wx, bx), (wh, bh) = wq[f"gx{L}"], wq[f"gh{L}"]
            gx = q(f"gx{L}", tf.matmul(t, wx) + bx)
            gh = q(f"gh{L}", tf.matmul(h, wh) + bh)
            zr = q(f"zr{L}", tf.sigmoid(q(f"zrs{L}", gx[:, : 2 * n] + gh[:, : 2 * n])))
            z, r = zr[:, :n], zr[:, n:]
            rh = q(f"rh{L}", r * gh[:, 2 * n :])
            c = q(f"c{L}", tf.tanh(q(f"hs{L}", gx[:, 2 * n :] + rh)))
            d = q(f"d{L}", h - c)
            t = q(f"h{L}", c + q(f"zd{L}", z * d))
            new.append(t)
        w, b = wq["logits"]
        return new, q("logits", tf.matmul(t, w) + b)

    @tf.function(jit_compile=True)
    def run(x: tf.Tensor) -> tf.Tensor:
        n = tf.shape(x)[0]
        hs = [tf.zeros((n, u), tf.float32) for u in cfg.gru_units]
        logits = tf.zeros((n, cfg.n_outputs), tf.float32)
        outs = tf.TensorArray(tf.float32, size=x.shape[1])
        for j in tf.range(x.shape[1]):
            hs, logits = step(x[:, j], hs)
            if every_step:
                outs = outs.write(j, logits)
        if every_step:
            return tf.transpose(outs.stack(), (1, 0, 2))
        return logits

    return run(tf.constant(xs)).numpy()


def attribute(
    fq: FakeQuantStep, spec: dict[str, Quant], xs: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
    """Agreement with the float model, per tensor kept in float / quantized alone."""
    names = tensor_names(len(fq.cfg.gru_units), fq.cfg.has_front_end)
    everything = frozenset(names)
    ref = simulate(fq, spec, xs, everything).argmax(-1)

    def agree(keep: frozenset[str]) -> tuple[float, float]:
        p = simulate(fq, spec, xs, keep).argmax(-1)
        return float(np.mean(p == ref)), float(np.mean(p == y))

    base_agree, base_acc = agree(frozenset())
    rows = []
    for n in names:
        kept_agree, kept_acc = agree(frozenset([n]))
        alone_agree, _ = agree(everything - {n})
        rows.append(
            {
                "tensor": n,
                "scale": spec[n].scale if n in spec else None,
                "agreement_kept_float": kept_agree,
                "gain_kept_float": kept_agree - base_agree,
                "agreement_only_this_quantized": alone_agree,
                "accuracy_kept_float": kept_acc,
            }
        )
    rows.sort(key=lambda r: -r["gain_kept_float"])
    # Cumulative: keep the k tensors of largest single gain in float, k = 1, 2, …
    kept: list[str] = []
    cumulative = []
    for r in rows:
        kept.append(r["tensor"])
        a, acc = agree(frozenset(kept))
        cumulative.append({"kept_float": list(kept), "agreement": a, "accuracy": acc})
    return {
        "windows": int(len(xs)),
        "float_accuracy": float(np.mean(ref == y)),
        "simulated_all_quantized": {"agreement": base_agree, "accuracy": base_acc},
        "tensors": rows,
        "cumulative": cumulative,
    }


def attribute_forecast(
    fq: FakeQuantStep,
    spec: dict[str, Quant],
    xs: np.ndarray,
    figures: Any,
) -> dict[str, Any]:
    """The forecaster's margin (``figures(forecast) -> dict`` with ``margin``) per tensor
    kept in float, over one series ``xs (1, S, k·C)``."""
    names = tensor_names(len(fq.cfg.gru_units), fq.cfg.has_front_end)
    everything = frozenset(names)

    def fig(keep: frozenset[str]) -> dict[str, Any]:
        return figures(simulate(fq, spec, xs, keep, every_step=True)[0])

    ref = fig(everything)
    base = fig(frozenset())
    rows = []
    for n in names:
        kept = fig(frozenset([n]))
        alone = fig(everything - {n})
        rows.append(
            {
                "tensor": n,
                "margin_kept_float": kept["margin"],
                "point_auc_kept_float": kept["point_auc"],
                "margin_only_this_quantized": alone["margin"],
            }
        )
    rows.sort(key=lambda r: -r["margin_kept_float"])
    kept_list: list[str] = []
    cumulative = []
    for r in rows:
        kept_list.append(r["tensor"])
        f = fig(frozenset(kept_list))
        cumulative.append({"kept_float": list(kept_list), "margin": f["margin"]})
    return {
        "float": {"margin": ref["margin"], "point_auc": ref["point_auc"]},
        "simulated_all_quantized": {"margin": base["margin"], "point_auc": base["point_auc"]},
        "tensors": rows,
        "cumulative": cumulative,
    }


def widening(
    fq: FakeQuantStep, spec: dict[str, Quant], xs: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
    """Agreement with the float model when tensors are widened to int16 (``simulate``'s
    16x8 estimate) instead of kept in float: each tensor alone, the pairs with the one
    whose float row gains most, every activation but the int8 input ``x`` (which the
    device contract fixes), and every activation."""
    names = tensor_names(len(fq.cfg.gru_units), fq.cfg.has_front_end)
    acts = [n for n in names if n != WEIGHTS]
    everything = frozenset(names)
    ref = simulate(fq, spec, xs, everything).argmax(-1)

    def row(label: str, int16: frozenset[str], keep: frozenset[str] = frozenset()) -> dict:
        p = simulate(fq, spec, xs, keep, int16=int16).argmax(-1)
        return {
            "int16": label,
            "agreement": float(np.mean(p == ref)),
            "accuracy": float(np.mean(p == y)),
        }

    rows = [row("none (int8)", frozenset())]
    rows += [row(n, frozenset([n])) for n in acts]
    best = max(rows[1:], key=lambda r: r["agreement"])["int16"]
    rows += [row(f"{best}+{n}", frozenset([best, n])) for n in acts if n != best]
    rows.append(row("every activation but x", frozenset(acts) - {"x"}))
    rows.append(row("every activation", frozenset(acts)))
    return {"windows": int(len(xs)), "float_accuracy": float(np.mean(ref == y)), "rows": rows}
