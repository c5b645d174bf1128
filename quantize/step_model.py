"""The trained window model rewritten as ONE streaming step.

Inputs (batch fixed to 1):

- ``x``: ``(1, k·C)`` the last k normalized samples, oldest first, flattened
  sample-major / channel-minor (``x[i·C + c]`` = channel c of the i-th oldest
  sample). With no front end k = 1 and ``x`` is the current sample.
- ``h1_in`` (and ``h2_in``): ``(1, U)`` the GRU states after the previous step.

Outputs: ``h1_out`` (and ``h2_out``) the new states, and ``y`` the head output
(softmax probabilities or the forecast of the next sample).

The front end (a causal ``Conv1D`` with kernel ``(k, C, F)``) becomes a ``Dense``
with kernel ``(k·C, F)`` and ReLU: on a device it runs every s samples over a
ring buffer of the last k samples, zero-filled before the first sample, which is
what the causal padding of the window model does.

Each GRU layer (Keras 3, ``reset_after=True``, gate order z, r, h̃; kernel
columns z | r | h, bias ``(2, 3U)`` = input and recurrent biases) is written as
(``form="split"``, the default)

    gx = x · W + b_in,   gh = h · U + b_rec                  two products, 3U outputs each
    z, r = split(σ(gx[:2U] + gh[:2U]))
    h̃  = tanh(gx[2U:] + r ⊙ gh[2U:])
    h'  = h̃ + z ⊙ (h − h̃)                                    (``update="lerp"``)

which converts to FULLY_CONNECTED, SPLIT_V, FULLY_CONNECTED, SPLIT_V, ADD,
LOGISTIC, SPLIT, MUL, ADD, TANH, SUB, MUL, ADD per layer. ``update="convex"``
writes the last line as ``z ⊙ h + (1 − z) ⊙ h̃`` (one op more). ``form="concat"``
computes z and r with one product over ``[x; h]``; the int8 CONCATENATION that
needs forces x (or the front end's output) and h onto one scale, so h loses
resolution and ``h_in`` can no longer share ``h_out``'s quantization: kept for
comparison only.
"""

from __future__ import annotations

from typing import Literal

import keras
import numpy as np

from edge_runtime import contract
from train.model import ModelConfig

Form = Literal["concat", "split"]
Update = Literal["lerp", "convex"]

FORMS: tuple[str, ...] = ("concat", "split")
UPDATES: tuple[str, ...] = ("lerp", "convex")


def state_names(cfg: ModelConfig) -> tuple[list[str], list[str]]:
    """Names of the state inputs and outputs, layer order: ``(["h1_in", …], ["h1_out", …])``."""
    return contract.state_names(len(cfg.gru_units))


def input_names(cfg: ModelConfig) -> list[str]:
    return contract.input_names(len(cfg.gru_units))


def output_names(cfg: ModelConfig) -> list[str]:
    return contract.output_names(len(cfg.gru_units))


def _gru_weights(layer: keras.layers.Layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kernel, recurrent, bias = (np.asarray(w.numpy(), np.float32) for w in layer.weights)
    units = recurrent.shape[0]
    if recurrent.shape != (units, 3 * units) or bias.shape != (2, 3 * units):
        raise ValueError(
            f"{layer.name}: expected a Keras 3 GRU with reset_after=True "
            f"(recurrent (U, 3U), bias (2, 3U)), found {recurrent.shape} / {bias.shape}"
        )
    return kernel, recurrent, bias


def _gru_step(
    x: keras.KerasTensor,
    h: keras.KerasTensor,
    layer: keras.layers.Layer,
    name: str,
    form: Form,
    update: Update,
) -> tuple[keras.KerasTensor, list[tuple[keras.layers.Layer, list[np.ndarray]]]]:
    """One GRU step in Keras ops; returns the new state and the (layer, weights) to set."""
    kernel, recurrent, bias = _gru_weights(layer)
    units = recurrent.shape[0]
    u2 = 2 * units
    ops = keras.ops
    assign: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    if form == "concat":
        zr_layer = keras.layers.Dense(u2, activation="sigmoid", name=f"{name}_zr")
        xh_layer = keras.layers.Dense(units, name=f"{name}_hx")
        hh_layer = keras.layers.Dense(units, name=f"{name}_hh")
        zr = zr_layer(ops.concatenate([x, h], axis=-1))
        z, r = ops.split(zr, 2, axis=-1)
        hx = xh_layer(x)
        hh = hh_layer(h)
        zr_kernel = np.concatenate([kernel[:, :u2], recurrent[:, :u2]], axis=0)
        assign += [
            (zr_layer, [zr_kernel, bias[0, :u2] + bias[1, :u2]]),
            (xh_layer, [kernel[:, u2:], bias[0, u2:]]),
            (hh_layer, [recurrent[:, u2:], bias[1, u2:]]),
        ]
    elif form == "split":
        gx_layer = keras.layers.Dense(3 * units, name=f"{name}_gx")
        gh_layer = keras.layers.Dense(3 * units, name=f"{name}_gh")
        gx_zr, hx = ops.split(gx_layer(x), [u2], axis=-1)
        gh_zr, hh = ops.split(gh_layer(h), [u2], axis=-1)
        z, r = ops.split(ops.sigmoid(gx_zr + gh_zr), 2, axis=-1)
        assign += [(gx_layer, [kernel, bias[0]]), (gh_layer, [recurrent, bias[1]])]
    else:
        raise ValueError(f"form: expected one of {FORMS}, found {form!r}")
    candidate = ops.tanh(hx + r * hh)
    if update == "lerp":
        h_new = candidate + z * (h - candidate)
    elif update == "convex":
        h_new = z * h + (1.0 - z) * candidate
    else:
        raise ValueError(f"update: expected one of {UPDATES}, found {update!r}")
    return h_new, assign


def build_step_model(
    float_model: keras.Model,
    cfg: ModelConfig,
    *,
    form: Form = "split",
    update: Update = "lerp",
    batch_size: int | None = 1,
) -> keras.Model:
    """The single-step model of ``float_model`` (weights copied by layer name).

    Inputs and outputs are dicts keyed by the logical names ``x``, ``h1_in``
    [, ``h2_in``] and ``h1_out`` [, ``h2_out``], ``y``.
    """
    by_name = {layer.name: layer for layer in float_model.layers}
    needed = [f"gru_{i}" for i in range(1, len(cfg.gru_units) + 1)] + ["head"]
    if cfg.has_front_end:
        needed.insert(0, "front_end")
    missing = [n for n in needed if n not in by_name]
    if missing:
        raise ValueError(f"float model lacks layer(s) {missing}; has {sorted(by_name)}")

    h_in_names, h_out_names = state_names(cfg)
    x_in = keras.Input((cfg.step_inputs,), batch_size=batch_size, name=contract.X)
    h_ins = [
        keras.Input((u,), batch_size=batch_size, name=n)
        for u, n in zip(cfg.gru_units, h_in_names, strict=True)
    ]
    assign: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []

    t = x_in
    if cfg.has_front_end:
        conv = by_name["front_end"]
        k_w, k_b = (np.asarray(w.numpy(), np.float32) for w in conv.weights)
        if k_w.shape != (cfg.front_end_kernel, cfg.n_channels, cfg.front_end_filters):
            raise ValueError(f"front_end kernel shape {k_w.shape} does not match {cfg}")
        fe = keras.layers.Dense(cfg.front_end_filters, activation="relu", name="front_end")
        t = fe(t)
        assign.append((fe, [k_w.reshape(cfg.step_inputs, cfg.front_end_filters), k_b]))

    h_outs = []
    for i, h in enumerate(h_ins, start=1):
        t, a = _gru_step(t, h, by_name[f"gru_{i}"], f"gru_{i}", form, update)
        assign += a
        h_outs.append(t)

    head_src = by_name["head"]
    activation = "softmax" if cfg.head == "softmax" else None
    head = keras.layers.Dense(cfg.n_outputs, activation=activation, name="head")
    y = head(t)
    assign.append((head, [np.asarray(w.numpy(), np.float32) for w in head_src.weights]))

    inputs = {contract.X: x_in, **dict(zip(h_in_names, h_ins, strict=True))}
    outputs = {**dict(zip(h_out_names, h_outs, strict=True)), contract.Y: y}
    model = keras.Model(inputs, outputs, name="tinygru_step")
    for layer, weights in assign:
        layer.set_weights(weights)
    return model


def step_inputs(cfg: ModelConfig, windows: np.ndarray) -> np.ndarray:
    """The float ``x`` of every step over series ``(N, T, C)``: ``(N, n_steps, k·C)``,
    zeros (a normalized 0.0) before sample 0 (:func:`edge_runtime.contract.step_inputs`)."""
    w = np.asarray(windows, np.float32)
    return contract.step_inputs(w, cfg.front_end_kernel, cfg.front_end_stride, 0.0)


def run_float_chain(
    step_model: keras.Model, cfg: ModelConfig, windows: np.ndarray
) -> dict[str, np.ndarray]:
    """Run the float step model over series ``(N, T, C)`` (or one ``(T, C)``) from zero states.

    Returns every step's inputs and outputs in step order:
    ``{"x": (N, n, k·C), "h1_in": (N, n, U), …, "h1_out": (N, n, U), …, "y": (N, n, n_outputs)}``
    (without the N axis for a single series). A step model built with
    ``batch_size=None`` runs all series at once, one with batch 1 runs them in turn.
    """
    windows = np.asarray(windows, np.float32)
    single = windows.ndim == 2
    if single:
        windows = windows[None]
    batch = step_model.inputs[0].shape[0]
    if batch is not None and len(windows) != batch:
        parts = [run_float_chain(step_model, cfg, w) for w in windows]
        result = {k: np.stack([p[k] for p in parts]) for k in parts[0]}
        return {k: v[0] for k, v in result.items()} if single else result
    xs = step_inputs(cfg, windows)
    h_in_names, h_out_names = state_names(cfg)
    n = len(windows)
    states = {
        name: np.zeros((n, u), np.float32)
        for name, u in zip(h_in_names, cfg.gru_units, strict=True)
    }
    rec: dict[str, list[np.ndarray]] = {k: [] for k in ["x", *h_in_names, *h_out_names, "y"]}
    for j in range(xs.shape[1]):
        feed = {"x": xs[:, j], **states}
        out = {k: np.asarray(v) for k, v in step_model(feed, training=False).items()}
        for k in ["x", *h_in_names]:
            rec[k].append(feed[k])
        for k in [*h_out_names, "y"]:
            rec[k].append(out[k])
        states = {i: out[o] for i, o in zip(h_in_names, h_out_names, strict=True)}
    result = {k: np.stack(v, axis=1) for k, v in rec.items()}
    return {k: v[0] for k, v in result.items()} if single else result
