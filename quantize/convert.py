"""Full-int8 conversion of the single-step model (and, optionally, the unrolled window model).

The GRU state is carried in int8 from step to step. ``convert_step`` makes the
quantization of every ``hN_in`` identical to that of ``hN_out`` by construction:
it calibrates, then sets the recorded range of both tensors to one range before
the quantizer runs. ``state="unit"`` (default) uses [−1, 127/128], i.e. scale
1/128 and zero point 0 exactly, since a GRU state lies in (−1, 1);
``state="union"`` uses the union of the two calibrated ranges. A device copies
``h_out`` bytes into ``h_in`` unchanged. With ``state="calibrated"`` the ranges
are left as the calibrator found them (they differ, often by one float ulp);
``step_info`` then records the integer requantization a device would have to
apply between steps.

The inputs of LOGISTIC and TANH get ranges no wider than where the int8 output
saturates (``saturated="cap"``, default; see ``_cap_saturated_ranges``): σ
rounds to its extreme int8 value beyond ``|x| = ln 511`` and tanh beyond
``|x| = atanh(1 − 1/256)``, so a wider range only coarsens the scale. A trained
GRU has a few gate pre-activations far into saturation (|x| > 100) that would
otherwise set the scale of the whole ``x · W + b`` product, which every gate of
every unit shares: a step of ~0.7, larger than the whole pre-activation range
of units whose input weights pruning has mostly removed.

Every conversion is checked by ``check_purity``: no FLOAT32 tensor, ops only
from an allowed list.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import convert as _tfl_convert
from tensorflow.lite.tools import flatbuffer_utils

from edge_runtime import tflm_ref
from quantize.step_model import (
    build_step_model,
    input_names,
    output_names,
    run_float_chain,
    state_names,
)
from quantize.tflite_graph import GraphInfo, io_tensors, read_graph
from train.model import ModelConfig

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
_STATE_MODES = ("unit", "union", "calibrated")
_SATURATED_MODES = ("cap", "calibrated")
# |x| beyond which the int8 output of the activation is its extreme value:
# σ (output scale 1/256, zero point −128) rounds to 0 or 255/256 beyond ln(511);
# tanh (scale 1/128, zero point 0) rounds to −1 or 127/128 beyond atanh(1 − 1/256).
_SATURATION = {"LOGISTIC": math.log(511.0), "TANH": math.atanh(1.0 - 1.0 / 256.0)}
# "unit": h ∈ (−1, 1), so [−1, 127/128] gives scale 1/128, zero point 0 exactly.
_UNIT_RANGE = (-1.0, 127.0 / 128.0)


class PurityError(ValueError):
    """A converted model is not pure int8: names the offending op or tensor."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow what the exporter and converter print to stdout ("Saved artifact at …")."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _converter(model: keras.Model, workdir: str) -> tf.lite.TFLiteConverter:
    path = os.path.join(workdir, "saved_model")
    with _quiet():
        model.export(path, format="tf_saved_model", verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(path)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv


def _dataset(calibration: dict[str, np.ndarray]) -> Any:
    lengths = {k: len(v) for k, v in calibration.items()}
    if len(set(lengths.values())) != 1 or not lengths:
        raise ValueError(f"calibration arrays must have one common length, found {lengths}")
    n = next(iter(lengths.values()))
    arrays = {k: np.asarray(v, np.float32) for k, v in sorted(calibration.items())}

    def gen() -> Iterable[dict[str, np.ndarray]]:
        for i in range(n):
            yield {k: v[i : i + 1] for k, v in arrays.items()}

    return gen


def _set_state_ranges(
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


def _cap_saturated_ranges(calibrated: bytes) -> tuple[bytes, dict[int, dict]]:
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
    from tensorflow.lite.python import schema_py_generated as schema

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    sg = model.subgraphs[0]
    tensors = sg.tensors
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def op_name(op: Any) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")

    producer: dict[int, Any] = {}
    users: dict[int, list[Any]] = {}
    for op in sg.operators:
        for t in op.outputs:
            producer[int(t)] = op
        for t in op.inputs:
            if t >= 0:
                users.setdefault(int(t), []).append(op)

    def recorded(t: int) -> tuple[float, float] | None:
        q = tensors[t].quantization
        if q is None or q.min is None or q.max is None or len(q.min) != 1:
            return None
        return float(q.min[0]), float(q.max[0])

    def split_data(op: Any) -> int | None:
        kind = op_name(op)
        if kind == "SPLIT":
            return int(op.inputs[1])
        if kind == "SPLIT_V":
            return int(op.inputs[0])
        return None

    def plain_add(op: Any) -> bool:
        opts = op.builtinOptions
        return op_name(op) == "ADD" and (opts is None or opts.fusedActivationFunction == 0)

    bounds: dict[int, float] = {}  # activation input → S
    addend_bounds: dict[tuple[int, int], float] = {}  # (addend tensor, ADD output) → bound
    for op in sg.operators:
        sat = _SATURATION.get(op_name(op))
        if sat is None:
            continue
        t_in = int(op.inputs[0])
        if len(users.get(t_in, [])) != 1 or recorded(t_in) is None:
            continue
        bounds[t_in] = min(bounds.get(t_in, math.inf), sat)
        add = producer.get(t_in)
        if add is None or not plain_add(add) or len(add.inputs) != 2:
            continue
        a, b = (int(v) for v in add.inputs)
        ra, rb = recorded(a), recorded(b)
        if ra is None or rb is None:
            continue
        addend_bounds[(a, t_in)] = sat + max(abs(rb[0]), abs(rb[1]))
        addend_bounds[(b, t_in)] = sat + max(abs(ra[0]), abs(ra[1]))

    def root_and_outputs(t: int) -> tuple[int, list[int]]:
        """The tensor a split chain starts from, and the split outputs on the way to t."""
        chain = [t]
        while t in producer and split_data(producer[t]) is not None:
            t = split_data(producer[t])
            chain.append(t)
        return t, chain[:-1]

    def leaves(t: int) -> list[tuple[int, Any]] | None:
        """Every (tensor, non-split user) below t through splits; None if t is a graph output."""
        out: list[tuple[int, Any]] = []
        for op in users.get(t, []):
            if split_data(op) is not None and split_data(op) == t:
                for o in op.outputs:
                    sub = leaves(int(o))
                    if sub is None:
                        return None
                    out += sub
            else:
                out.append((t, op))
        if t in sg.outputs:
            return None
        return out

    caps: dict[int, float] = dict(bounds)
    groups: dict[int, dict[str, Any]] = {}
    for (a, _), bound in addend_bounds.items():
        root, outs = root_and_outputs(a)
        g = groups.setdefault(root, {"tensors": {root}, "bound": 0.0})
        g["tensors"].update(outs)
        g["bound"] = max(g["bound"], bound)
    for root, g in groups.items():
        uses = leaves(root)
        if not uses or root in sg.inputs or recorded(root) is None:
            continue
        if not all(plain_add(op) and (t, int(op.outputs[0])) in addend_bounds for t, op in uses):
            continue
        for t in {root, *(t for t, _ in uses)} | g["tensors"]:
            caps[t] = min(caps.get(t, math.inf), g["bound"])

    changed: dict[int, dict] = {}
    for t, cap in sorted(caps.items()):
        r = recorded(t)
        if r is None:
            continue
        lo, hi = max(r[0], -cap), min(r[1], cap)
        if (lo, hi) == r:
            continue
        q = tensors[t].quantization
        q.min = np.array([lo], np.float32)
        q.max = np.array([hi], np.float32)
        changed[t] = {"calibrated": [r[0], r[1]], "set": [lo, hi]}
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), changed


def convert_step(
    step_model: keras.Model,
    calibration: dict[str, np.ndarray],
    *,
    state: str = "unit",
    saturated: str = "cap",
) -> bytes:
    """Convert the single-step model to full int8 and return the .tflite bytes.

    ``calibration`` maps every input name (``x``, ``h1_in``, …) to an array
    ``(n, width)`` of float (x, h_{t−1}) pairs, e.g. from ``calibration_pairs``.
    ``state="equal"`` (default) makes each ``hN_in`` and ``hN_out`` share one
    quantization (see the module doc); ``"calibrated"`` keeps the calibrator's.
    """
    if state not in _STATE_MODES:
        raise ValueError(f"state: expected one of {_STATE_MODES}, found {state!r}")
    names = sorted(step_model.input.keys()) if isinstance(step_model.input, dict) else None
    if names is not None and sorted(calibration) != names:
        raise ValueError(f"calibration keys {sorted(calibration)} != model inputs {names}")
    with tempfile.TemporaryDirectory(prefix="tinygru-convert-") as tmp:
        conv = _converter(step_model, tmp)
        conv.representative_dataset = _dataset(calibration)
        if state == "calibrated" and saturated == "calibrated":
            with _quiet():
                return bytes(conv.convert())
        conv._experimental_calibrate_only = True
        with _quiet():
            calibrated = bytes(conv.convert())
    if saturated == "cap":
        calibrated, _ = _cap_saturated_ranges(calibrated)
    if state != "calibrated":
        outs = [n for n in step_model.output] if isinstance(step_model.output, dict) else []
        pairs = [(n, n.replace("_in", "_out")) for n in (names or []) if n.endswith("_in")]
        missing = [b for _, b in pairs if b not in outs]
        if missing:
            raise ValueError(f"step model lacks state output(s) {missing}")
        calibrated, _ = _set_state_ranges(calibrated, pairs, state)
    with _quiet():
        quantized = _tfl_convert.mlir_quantize(
            calibrated,
            disable_per_channel=False,
            input_data_type=tf.int8,
            output_data_type=tf.int8,
        )
    return bytes(_tfl_convert.deduplicate_readonly_buffers(quantized))


def check_purity(tflite_bytes: bytes, allowed_ops: Iterable[str] = STEP_OPS) -> dict[str, Any]:
    """Raise ``PurityError`` if any tensor is FLOAT32 or any op is not in ``allowed_ops``.

    Returns the graph summary (op list in execution order, counts, sizes).
    """
    graph = read_graph(tflite_bytes)
    allowed = set(allowed_ops)
    if graph.n_subgraphs != 1:
        raise PurityError(f"expected one subgraph, found {graph.n_subgraphs} (a WHILE loop?)")
    for op in graph.ops:
        if op.op not in allowed:
            outs = [graph.tensors[i].name for i in op.outputs]
            raise PurityError(
                f"op #{op.index} {op.op} (outputs {outs}) is not in the allowed ops "
                f"{sorted(allowed)}"
            )
    for t in graph.tensors:
        if t.dtype == "FLOAT32":
            users = [o.op for o in graph.ops if t.index in o.inputs or t.index in o.outputs]
            raise PurityError(f"tensor #{t.index} {t.name!r} is FLOAT32 (used by {users})")
        if t.dtype in ("INT8", "INT16") and not t.scale:
            raise PurityError(f"tensor #{t.index} {t.name!r} is {t.dtype} without quantization")
    return graph.summary()


def step_info(tflite_bytes: bytes, cfg: ModelConfig) -> dict[str, Any]:
    """What a device needs to know about a converted step model.

    ``ops`` (execution order), ``n_ops``, ``n_tensors``, ``size_bytes``,
    ``inputs`` / ``outputs`` (logical name → tensor index, position, scale,
    zero point), and per state ``state[hN]``: whether ``hN_in`` and ``hN_out``
    share one quantization and, if not, the integer requantization from
    ``hN_out`` to ``hN_in`` (``multiplier``, ``shift``, rounding as
    :func:`edge_runtime.tflm_ref.requantize`).
    """
    graph = read_graph(tflite_bytes)
    io_ = io_tensors(graph, input_names(cfg), output_names(cfg))
    info: dict[str, Any] = graph.summary()
    info.update(io_)
    states: dict[str, Any] = {}
    for a, b in zip(*state_names(cfg), strict=True):
        qi, qo = io_["inputs"][a], io_["outputs"][b]
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
        states[a[: -len("_in")]] = entry
    info["state"] = states
    info["state_equal"] = all(e["equal"] for e in states.values())
    return info


def calibration_pairs(
    float_model: keras.Model,
    cfg: ModelConfig,
    windows: np.ndarray,
    n_samples: int = 1000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """(x, h_{t−1}) pairs for calibration, from the float model's own state sequences.

    Whole windows are drawn at random (training windows come ordered by subject),
    each is run as a float step chain from a zero state, and ``n_samples`` of the
    resulting steps are drawn at random. Returns ``{"x": (n, k·C), "h1_in": (n, U), …}``.
    """
    windows = np.asarray(windows, np.float32)
    if windows.ndim != 3 or windows.shape[2] != cfg.n_channels:
        raise ValueError(f"windows: expected (N, T, {cfg.n_channels}), found {windows.shape}")
    rng = np.random.default_rng(seed)
    n_steps = len(range(0, windows.shape[1], cfg.front_end_stride))
    n_win = min(len(windows), max(1, math.ceil(n_samples / n_steps)))
    chosen = np.sort(rng.choice(len(windows), n_win, replace=False))
    step = build_step_model(float_model, cfg, batch_size=None)
    chain = run_float_chain(step, cfg, windows[chosen])
    names = input_names(cfg)
    flat = {n: chain[n].reshape(-1, chain[n].shape[-1]) for n in names}
    total = len(flat["x"])
    if total > n_samples:
        keep = np.sort(rng.choice(total, n_samples, replace=False))
        flat = {n: v[keep] for n, v in flat.items()}
    return {n: np.ascontiguousarray(v, np.float32) for n, v in flat.items()}


def convert_window(
    float_model: keras.Model,
    cfg: ModelConfig,
    T: int,
    windows: np.ndarray,
    n_samples: int = 200,
    seed: int = 0,
) -> bytes:
    """The whole-window model, unrolled over T steps, batch 1, full int8."""
    from train.model import build_model

    unrolled = build_model(cfg, unroll=True)
    unrolled.set_weights(float_model.get_weights())
    inp = keras.Input((T, cfg.n_channels), batch_size=1, name="x")
    t = inp
    for layer in unrolled.layers:  # the family is a chain: front end, GRU layers, head
        if isinstance(layer, keras.layers.GRU):
            # a constant zero state: a state derived from the input's shape adds SHAPE/FILL
            t = layer(t, initial_state=[keras.ops.zeros((1, layer.units))])
        elif isinstance(layer, keras.layers.Dense) and len(t.shape) == 3:
            # a head over every step (a forecaster): a Dense on (1, T', U) becomes a
            # Tensordot whose SHAPE op is not int8; on (T', U) it is one FULLY_CONNECTED
            steps, width = int(t.shape[1]), int(t.shape[2])
            t = keras.ops.reshape(layer(keras.ops.reshape(t, (steps, width))), (1, steps, -1))
        elif not isinstance(layer, keras.layers.InputLayer | keras.layers.Dropout):
            t = layer(t)
    model = keras.Model(inp, {"y": t}, name="tinygru_window")
    windows = np.asarray(windows, np.float32)[:, :T]
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(windows), min(n_samples, len(windows)), replace=False))
    with tempfile.TemporaryDirectory(prefix="tinygru-convert-") as tmp:
        conv = _converter(model, tmp)
        conv.representative_dataset = _dataset({"x": windows[chosen]})
        with _quiet():
            return bytes(conv.convert())


def describe(graph: GraphInfo) -> str:
    """One line per op: index, op, output tensor names and quantization."""
    lines = []
    for op in graph.ops:
        outs = ", ".join(
            f"{graph.tensors[i].name}[{graph.tensors[i].dtype} "
            f"s={graph.tensors[i].scale[:1]} zp={graph.tensors[i].zero_point[:1]}]"
            for i in op.outputs
        )
        lines.append(f"{op.index:3d} {op.op:16s} -> {outs}")
    return "\n".join(lines)


def _main(argv: list[str]) -> int:
    """``python -m quantize.convert step MODEL.keras CONFIG.json CALIB.npz OUT.tflite``."""
    if len(argv) != 5 or argv[0] != "step":
        print(_main.__doc__, file=sys.stderr)
        return 2
    _, model_path, cfg_path, calib_path, out_path = argv
    with open(cfg_path) as f:
        cfg = ModelConfig.from_dict(json.load(f))
    float_model = keras.models.load_model(model_path, safe_mode=True, compile=False)
    with np.load(calib_path, allow_pickle=False) as z:
        calibration = {k: z[k] for k in z.files}
    tflite = convert_step(build_step_model(float_model, cfg), calibration)
    check_purity(tflite)
    with open(out_path, "wb") as f:
        f.write(tflite)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
