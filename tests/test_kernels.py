"""The int8 kernels against the pinned TFLM wheel, op by op, with tolerance 0.

For each op of the GRU step graph a tiny Keras model is converted to full int8 (fixed
seeds), its quantization is read from the .tflite (and sometimes overwritten, to reach
chosen scales), and the TFLM interpreter's outputs on many inputs (random, extremes,
all 256 values for unary ops, all 65,536 pairs for binary ops) are the expected values.
Both ``edge_runtime.tflm_ref`` (numpy) and the C engine kernels must reproduce them
exactly: a single rounding difference would grow through the GRU recurrence, so the
allowed error is 0 everywhere.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
flatbuffers = pytest.importorskip("flatbuffers")
runtime = pytest.importorskip("tflite_micro").runtime

from tensorflow.lite.python import schema_py_generated as fb  # noqa: E402

from edge_runtime import tflm_ref as ref  # noqa: E402
from firmware_export import cbuild, lower  # noqa: E402

TOLERANCE = 0  # bit-exact: any difference grows through the recurrence
OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
TYPE_DTYPES = {fb.TensorType.INT8: np.int8, fb.TensorType.INT32: np.int32}
ALL_INT8 = np.arange(-128, 128, dtype=np.int8)


# ----------------------------------------------------------------------------------
# helpers: convert, read, patch and run .tflite models


def convert(model, sample, n: int = 32, per_channel: bool = True) -> bytes:
    """Full-int8 conversion with a seeded representative dataset; sample(rng) -> inputs."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(1234)
    conv.representative_dataset = lambda: (sample(rng) for _ in range(n))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    if not per_channel:
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    return conv.convert()


class Model:
    """A .tflite as a mutable flatbuffer object tree, with readers for quantization."""

    def __init__(self, blob: bytes) -> None:
        self.m = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(blob, 0))
        self.sg = self.m.subgraphs[0]

    def op_name(self, op) -> str:
        code = self.m.operatorCodes[op.opcodeIndex]
        return OP_NAMES[max(code.builtinCode, code.deprecatedBuiltinCode)]

    def ops(self, name: str) -> list:
        return [op for op in self.sg.operators if self.op_name(op) == name]

    def op_names(self) -> list[str]:
        return [self.op_name(op) for op in self.sg.operators]

    def tensor(self, i: int):
        return self.sg.tensors[i]

    def qparams(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        q = self.tensor(i).quantization
        return np.asarray(q.scale, np.float32), np.asarray(q.zeroPoint, np.int64)

    def scale_zp(self, i: int) -> tuple[np.float32, int]:
        s, z = self.qparams(i)
        assert s.size == 1, "expected per-tensor quantization"
        return s[0], int(z[0])

    def set_qparams(self, i: int, scale, zp) -> None:
        q = self.tensor(i).quantization
        q.scale = np.atleast_1d(np.asarray(scale, np.float32))
        q.zeroPoint = np.atleast_1d(np.asarray(zp, np.int64))

    def data(self, i: int) -> np.ndarray:
        t = self.tensor(i)
        raw = np.asarray(self.m.buffers[t.buffer].data, np.uint8)
        return raw.view(TYPE_DTYPES[t.type]).reshape(self.shape(i))

    def shape(self, i: int) -> list[int]:
        s = self.tensor(i).shape
        return [] if s is None else [int(v) for v in s]

    def set_data(self, i: int, values: np.ndarray) -> None:
        t = self.tensor(i)
        arr = np.ascontiguousarray(values, TYPE_DTYPES[t.type]).reshape(self.shape(i))
        self.m.buffers[t.buffer].data = arr.view(np.uint8).ravel()

    def model_input_of(self, tensor: int) -> int | None:
        """The model input a tensor equals, following RESHAPEs (pure data movement)."""
        if tensor in self.sg.inputs:
            return tensor
        for op in self.sg.operators:
            if tensor in op.outputs and self.op_name(op) == "RESHAPE":
                return self.model_input_of(int(op.inputs[0]))
        return None

    def set_input_qparams(self, k: int, scale, zp) -> None:
        """Overwrite the quantization of model input k and of its reshaped copies."""
        for i in range(len(self.sg.tensors)):
            if self.model_input_of(i) == int(self.sg.inputs[k]):
                self.set_qparams(i, scale, zp)

    def output_position(self, tensor: int) -> int:
        return list(self.sg.outputs).index(tensor)

    def blob(self) -> bytes:
        b = flatbuffers.Builder(0)
        b.Finish(self.m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def run_tflm(blob: bytes, *inputs: np.ndarray) -> list[np.ndarray]:
    it = runtime.Interpreter.from_bytes(blob, arena_size=1 << 20)
    for i, x in enumerate(inputs):
        it.set_input(x, i)
    it.invoke()
    n_out = len(Model(blob).sg.outputs)
    return [it.get_output(i).copy() for i in range(n_out)]


def run_litert(blob: bytes, *inputs: np.ndarray, reference: bool = True) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    it = Interpreter(model_content=blob, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    sg = Model(blob).sg
    for tensor, x in zip(sg.inputs, inputs, strict=True):
        it.set_tensor(int(tensor), x)
    it.invoke()
    return [it.get_tensor(int(t)).copy() for t in sg.outputs]


def assert_exact(actual, expected, what: str) -> None:
    """Tolerance 0; on mismatch print every differing position with actual and expected."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
    bad = np.argwhere(diff > TOLERANCE)
    for pos in bad[:20]:
        p = tuple(int(v) for v in pos)
        print(f"{what}: position {p} actual {actual[p]} expected {expected[p]}")
    assert bad.size == 0, f"{what}: {len(bad)} of {actual.size} values differ (tolerance 0)"


@pytest.fixture(scope="module")
def engine() -> cbuild.EngineKernels:
    return cbuild.engine_kernels()


def random_int8(rng, shape) -> np.ndarray:
    return rng.integers(-128, 128, size=shape, dtype=np.int8)


def with_extremes(x: np.ndarray) -> np.ndarray:
    """Random rows plus rows of -128, 127, 0 and alternating -128/127."""
    x = x.copy()
    x[0], x[1], x[2] = -128, 127, 0
    x[3, ::2], x[3, 1::2] = -128, 127
    return x


# ----------------------------------------------------------------------------------
# requantization: which rounding variant the wheel uses


def test_quantize_multiplier_matches_tflm_prepare_arithmetic() -> None:
    assert ref.quantize_multiplier(0.0) == (0, 0)
    assert ref.quantize_multiplier(0.5) == (1 << 30, 0)
    assert ref.quantize_multiplier(0.25) == (1 << 30, -1)
    assert ref.quantize_multiplier(1.0) == (1 << 30, 1)
    assert ref.quantize_multiplier(0.75) == (3 << 29, 0)
    # q * 2^31 rounds up to 2^31: halved, shift + 1
    assert ref.quantize_multiplier(1.0 - 2.0**-40) == (1 << 30, 1)
    # below 2^-32 the multiplier is flushed to zero
    assert ref.quantize_multiplier(2.0**-33) == (0, 0)
    assert ref.quantize_multiplier(2.0**-32) == (1 << 30, -31)
    # the double-rounding build does not saturate large shifts
    assert ref.quantize_multiplier(2.0**40) == (1 << 30, 41)


def _fc_identity_model(rows: int) -> Model:
    """A rows x rows FULLY_CONNECTED whose weights are the identity, no bias."""
    x = keras.Input((rows,), batch_size=1)
    model = keras.Model(x, keras.layers.Dense(rows, use_bias=False)(x))
    model.layers[1].set_weights([np.eye(rows, dtype=np.float32)])
    m = Model(convert(model, lambda r: [r.normal(size=(1, rows)).astype(np.float32)], n=4))
    assert m.op_names() == ["FULLY_CONNECTED"]
    return m


def test_wheel_uses_double_rounding() -> None:
    """Scales chosen so single and double rounding disagree; the wheel is double."""
    m = _fc_identity_model(256)
    fc = m.ops("FULLY_CONNECTED")[0]
    inp, w, out = int(fc.inputs[0]), int(fc.inputs[1]), int(fc.outputs[0])
    m.set_data(w, np.eye(256, dtype=np.int8))
    m.set_qparams(inp, 0.5, 0)
    m.set_qparams(out, 1.0, 0)
    rng = np.random.default_rng(7)
    # (a) real scale 0.25 = (2^30, -1): acc -2 is a negative tie, -1 (double) vs 0 (single)
    m.set_qparams(w, np.full(256, 0.5), np.zeros(256))
    acc = ALL_INT8.reshape(1, 256)
    got = run_tflm(m.blob(), acc)[0].ravel()
    mult, shift = ref.fc_multipliers(0.5, np.full(256, 0.5), 1.0)
    assert (int(mult[0]), int(shift[0])) == (1 << 30, -1)
    double = ref.requantize(acc.ravel(), mult, shift)
    single = ref.requantize_single_rounding(acc.ravel(), mult, shift)
    assert_exact(got, double, "TFLM vs double rounding, scale 0.25")
    assert got[128 - 2] == -1 and single[128 - 2] == 0
    # (b) per-channel scales 2^-1 .. 2^-12 with random mantissas, random accumulators
    w_scales = (rng.uniform(1.0, 2.0, 256) * 2.0 ** -rng.integers(1, 13, 256)).astype(np.float32)
    m.set_qparams(w, w_scales * 2, np.zeros(256))
    mult, shift = ref.fc_multipliers(0.5, w_scales * 2, 1.0)
    n_single_differs = 0
    for _ in range(80):
        acc = random_int8(rng, (1, 256))
        got = run_tflm(m.blob(), acc)[0].ravel()
        a = acc.ravel().astype(np.int64)
        assert_exact(got, np.clip(ref.requantize(a, mult, shift), -128, 127), "double rounding")
        single = np.clip(ref.requantize_single_rounding(a, mult, shift), -128, 127)
        n_single_differs += int((single != got).sum())
    print(f"single rounding would differ on {n_single_differs} of {80 * 256} values")
    assert n_single_differs > 0


# ----------------------------------------------------------------------------------
# FULLY_CONNECTED


def test_per_tensor_fc_multiplier_is_formed_in_double(engine) -> None:
    """Scales where a float32 product in*w (older TFLM sources) changes an output step."""
    m = _fc_identity_model(256)
    fc = m.ops("FULLY_CONNECTED")[0]
    inp, w, out = int(fc.inputs[0]), int(fc.inputs[1]), int(fc.outputs[0])
    s_in, s_w, s_out = 0.13810454308986664, 0.10423874109983444, 1.944608449935913
    m.set_data(w, 127 * np.eye(256, dtype=np.int8))
    m.set_qparams(inp, s_in, 0)
    m.set_qparams(w, s_w, 0)
    m.set_qparams(out, s_out, 0)
    x = ALL_INT8.reshape(1, 256)
    expected = run_tflm(m.blob(), x)[0]
    mult, shift = ref.fc_multipliers(np.float32(s_in), [s_w], np.float32(s_out))
    w_int = 127 * np.eye(256, dtype=np.int8)
    assert_exact(ref.fully_connected(x, w_int, None, 0, mult, shift, 0), expected, "numpy FC")
    assert_exact(engine.fully_connected(x, w_int, None, 0, mult, shift, 0), expected, "C FC")
    f32 = ref.quantize_multiplier(float(np.float32(s_in) * np.float32(s_w)) / s_out)
    assert (ref.fully_connected(x, w_int, None, 0, *f32, 0) != expected).any()


def _fc_model(per_channel: bool, activation: str | None) -> Model:
    keras.utils.set_random_seed(3)
    x = keras.Input((10,), batch_size=64)
    y = keras.layers.Dense(24, activation=activation, bias_initializer="glorot_uniform")(x)
    model = keras.Model(x, y)
    blob = convert(
        model,
        lambda r: [(r.normal(size=(64, 10)) * 2 + 0.5).astype(np.float32)],
        n=8,
        per_channel=per_channel,
    )
    m = Model(blob)
    assert m.op_names() == ["FULLY_CONNECTED"]
    return m


@pytest.mark.parametrize(
    "per_channel, activation", [(True, None), (True, "relu"), (False, None), (False, "relu")]
)
def test_fully_connected_matches_tflm(engine, per_channel, activation) -> None:
    m = _fc_model(per_channel, activation)
    fc = m.ops("FULLY_CONNECTED")[0]
    inp, wt, bt, out = (int(i) for i in (*fc.inputs, fc.outputs[0]))
    s_in, zp_in = m.scale_zp(inp)
    s_out, zp_out = m.scale_zp(out)
    w_scales, _ = m.qparams(wt)
    assert (w_scales.size > 1) == per_channel, "converter emits per-channel FC by default"
    w, bias = m.data(wt), m.data(bt)
    mult, shift = ref.fc_multipliers(s_in, w_scales, s_out)
    act = fc.builtinOptions.fusedActivationFunction
    lo, hi = ref.activation_range(act, s_out, zp_out)
    folded = ref.fold_input_zero_point(w, bias, zp_in)
    rng = np.random.default_rng(11)
    for trial in range(4):
        x = random_int8(rng, (64, 10))
        if trial == 0:
            x = with_extremes(x)
        expected = run_tflm(m.blob(), x)[0]
        assert_exact(ref.fully_connected(x, w, bias, zp_in, mult, shift, zp_out, lo, hi),
                     expected, "numpy FC")  # fmt: skip
        assert_exact(ref.fully_connected(x, w, folded, 0, mult, shift, zp_out, lo, hi),
                     expected, "numpy FC, zero point folded into bias")  # fmt: skip
        assert_exact(engine.fully_connected(x, w, bias, -zp_in, mult, shift, zp_out, lo, hi),
                     expected, "C FC")  # fmt: skip
        assert_exact(engine.fully_connected(x, w, folded, 0, mult, shift, zp_out, lo, hi),
                     expected, "C FC, zero point folded into bias")  # fmt: skip


def test_fully_connected_with_extreme_weights_and_scales(engine) -> None:
    """Saturated weights, large bias, small and large effective scales (shifts > 0 too)."""
    m = _fc_model(True, None)
    fc = m.ops("FULLY_CONNECTED")[0]
    inp, wt, bt, out = (int(i) for i in (*fc.inputs, fc.outputs[0]))
    rng = np.random.default_rng(5)
    w = random_int8(rng, (24, 10))
    w[0], w[1] = 127, -127
    bias = rng.integers(-20000, 20000, 24).astype(np.int32)
    w_scales = (2.0 ** rng.uniform(-16, 4, 24)).astype(np.float32)
    w_scales[:2] = 2.0**-16, 8.0
    m.set_data(wt, w)
    m.set_data(bt, bias)
    m.set_qparams(wt, w_scales, np.zeros(24))
    m.set_qparams(inp, 0.031, -17)
    m.set_qparams(out, 0.05, 33)
    mult, shift = ref.fc_multipliers(np.float32(0.031), w_scales, np.float32(0.05))
    assert shift.max() > 0 and shift.min() < -10
    x = with_extremes(random_int8(rng, (64, 10)))
    expected = run_tflm(m.blob(), x)[0]
    assert_exact(ref.fully_connected(x, w, bias, -17, mult, shift, 33), expected, "numpy FC")
    assert_exact(engine.fully_connected(x, w, bias, 17, mult, shift, 33), expected, "C FC")


# ----------------------------------------------------------------------------------
# ADD, SUB, MUL (all 65,536 input pairs), including a scalar-constant operand


@pytest.fixture(scope="module")
def binary_model() -> Model:
    a = keras.Input((1024,), batch_size=1, name="a")
    b = keras.Input((1024,), batch_size=1, name="b")
    outs = [
        keras.layers.Add()([a, b]),
        keras.layers.Subtract()([a, b]),
        keras.layers.Multiply()([a, b]),
        1.0 - keras.activations.sigmoid(a),  # SUB with a scalar constant: the GRU's 1 - z
    ]
    model = keras.Model([a, b], outs)

    def sample(r):
        return {
            "a": r.uniform(-3, 2, (1, 1024)).astype(np.float32),
            "b": r.uniform(-1, 4, (1, 1024)).astype(np.float32),
        }

    m = Model(convert(model, sample))
    assert {"ADD", "LOGISTIC", "MUL", "SUB"} <= set(m.op_names())
    return m


ALL_PAIRS = np.stack(np.meshgrid(ALL_INT8, ALL_INT8, indexing="ij")).reshape(2, -1)

# (s1, zp1, s2, zp2, s_out, zp_out) written over the converter's values; None keeps them
BINARY_QUANT = [
    None,
    (0.0125, -3, 0.0125, 7, 0.02, 0),  # equal input scales
    (0.3, 120, 0.0007, -128, 0.051, -90),  # very different scales, extreme zero points
    (0.0039, -128, 0.031, 5, 0.0011, 44),  # output finer than both inputs
    # SUB's prepare in double, as ADD's: a float32 prepare would change one SUB output
    (0.046891260892152786, -115, 0.04730052500963211, -91, 0.21423585712909698, 11),
]


def _binary_op_params(name: str, s1, z1, s2, z2, so, zo) -> dict:
    fn = {"ADD": ref.add_params, "SUB": ref.sub_params, "MUL": ref.mul_params}[name]
    return fn(s1, z1, s2, z2, so, zo)


@pytest.mark.parametrize("quant", BINARY_QUANT)
def test_add_sub_mul_match_tflm_on_all_pairs(engine, binary_model, quant) -> None:
    m = Model(binary_model.blob())
    ops = [op for op in m.sg.operators if m.op_name(op) in ("ADD", "SUB", "MUL")]
    ops = [op for op in ops if all(m.model_input_of(int(i)) is not None for i in op.inputs)]
    assert len(ops) == 3
    if quant is not None:
        s1, z1, s2, z2, so, zo = quant
        m.set_input_qparams(0, s1, z1)
        m.set_input_qparams(1, s2, z2)
        for op in ops:
            m.set_qparams(int(op.outputs[0]), so, zo)
    blob = m.blob()
    results = [run_tflm(blob, *pair.reshape(2, 1, 1024)) for pair in ALL_PAIRS.reshape(2, -1, 1024).transpose(1, 0, 2)]  # fmt: skip
    for op in ops:
        name = m.op_name(op)
        i1, i2, o = int(op.inputs[0]), int(op.inputs[1]), int(op.outputs[0])
        x1 = ALL_PAIRS[list(m.sg.inputs).index(m.model_input_of(i1))]
        x2 = ALL_PAIRS[list(m.sg.inputs).index(m.model_input_of(i2))]
        expected = np.concatenate([r[m.output_position(o)].ravel() for r in results])
        p = _binary_op_params(name, *m.scale_zp(i1), *m.scale_zp(i2), *m.scale_zp(o))
        p["act_min"], p["act_max"] = ref.activation_range(
            op.builtinOptions.fusedActivationFunction, *m.scale_zp(o)
        )
        numpy_fn = {"ADD": ref.add, "SUB": ref.sub, "MUL": ref.mul}[name]
        c_fn = {"ADD": engine.add, "SUB": engine.sub, "MUL": engine.mul}[name]
        assert_exact(numpy_fn(x1, x2, p), expected, f"numpy {name} {quant}")
        assert_exact(c_fn(x1, x2, p), expected, f"C {name} {quant}")


def test_sub_from_scalar_constant_matches_tflm(engine, binary_model) -> None:
    """1 - sigmoid(a): SUB(constant scalar, vector), broadcast with stride 0 in C."""
    m = binary_model
    sub = next(op for op in m.ops("SUB") if int(op.inputs[0]) not in m.sg.inputs)
    c, z, o = int(sub.inputs[0]), int(sub.inputs[1]), int(sub.outputs[0])
    sig = next(op for op in m.ops("LOGISTIC") if int(op.outputs[0]) == z)
    a_in = int(sig.inputs[0])
    const = m.data(c).reshape(1)
    p = ref.sub_params(*m.scale_zp(c), *m.scale_zp(z), *m.scale_zp(o))
    table = ref.logistic_table(*m.scale_zp(a_in), *m.scale_zp(z))
    a = ALL_INT8.repeat(4).reshape(1, 1024)
    inputs = [a if int(t) == a_in else np.zeros_like(a) for t in m.sg.inputs]
    expected = run_tflm(m.blob(), *inputs)[m.output_position(o)].ravel()
    zq = table[a.ravel().astype(np.int64) + 128]
    assert_exact(ref.sub(const, zq, p), expected, "numpy 1 - z")
    assert_exact(engine.sub(const, engine.lut(table, a), p), expected, "C 1 - z")


# ----------------------------------------------------------------------------------
# LOGISTIC, TANH, QUANTIZE: 256-entry tables on every input value


@pytest.fixture(scope="module")
def unary_models() -> dict[str, Model]:
    x = keras.Input((256,), batch_size=1)
    out = {}
    for name, fn in (("LOGISTIC", keras.activations.sigmoid), ("TANH", keras.activations.tanh)):
        blob = convert(keras.Model(x, fn(x)), lambda r: [r.uniform(-6, 6, (1, 256)).astype(np.float32)], n=8)  # fmt: skip
        out[name] = Model(blob)
        assert out[name].op_names() == [name]
    return out


UNARY_SCALES = [0.001, 0.0123, 0.02, 0.047, 0.0625, 0.1, 0.25, 0.5, 3.0]
UNARY_ZPS = [-128, -37, 0, 5, 127]


@pytest.mark.parametrize("name", ["LOGISTIC", "TANH"])
def test_logistic_tanh_tables_match_tflm_on_all_inputs(engine, unary_models, name) -> None:
    m = Model(unary_models[name].blob())
    i, o = int(m.sg.inputs[0]), int(m.sg.outputs[0])
    table_fn = ref.logistic_table if name == "LOGISTIC" else ref.tanh_table
    x = ALL_INT8.reshape(1, 256)
    for s in UNARY_SCALES:
        for zp in UNARY_ZPS:
            m.set_qparams(i, s, zp)
            expected = run_tflm(m.blob(), x)[0].ravel()
            table = table_fn(np.float32(s), zp, *m.scale_zp(o))
            assert_exact(table, expected, f"numpy {name} table, scale {s}, zp {zp}")
            assert_exact(engine.lut(table, x), expected, f"C {name} lut, scale {s}, zp {zp}")


def test_quantize_int8_requantize_table_matches_tflm(engine, unary_models) -> None:
    """QUANTIZE int8 -> int8: the LOGISTIC model with its opcode changed to QUANTIZE."""
    m = Model(unary_models["LOGISTIC"].blob())
    m.m.operatorCodes[m.sg.operators[0].opcodeIndex].builtinCode = fb.BuiltinOperator.QUANTIZE
    m.m.operatorCodes[
        m.sg.operators[0].opcodeIndex
    ].deprecatedBuiltinCode = fb.BuiltinOperator.QUANTIZE
    m.sg.operators[0].builtinOptionsType = fb.BuiltinOptions.NONE
    m.sg.operators[0].builtinOptions = None
    assert m.op_names() == ["QUANTIZE"]
    i, o = int(m.sg.inputs[0]), int(m.sg.outputs[0])
    x = ALL_INT8.reshape(1, 256)
    for s_in, z_in, s_out, z_out in [
        (0.02, 3, 0.02, 3),
        (0.02, 3, 0.017, -9),
        (0.0039, -128, 0.05, 10),
        (0.3, 100, 0.011, -128),
    ]:
        m.set_qparams(i, s_in, z_in)
        m.set_qparams(o, s_out, z_out)
        expected = run_tflm(m.blob(), x)[0].ravel()
        table = ref.quantize_table(np.float32(s_in), z_in, np.float32(s_out), z_out)
        assert_exact(table, expected, f"numpy QUANTIZE {s_in},{z_in} -> {s_out},{z_out}")
        assert_exact(engine.lut(table, x), expected, "C QUANTIZE lut")


# ----------------------------------------------------------------------------------
# SOFTMAX


@pytest.fixture(scope="module")
def softmax_model() -> Model:
    x = keras.Input((6,), batch_size=512)
    blob = convert(keras.Model(x, keras.layers.Softmax()(x)), lambda r: [(r.normal(size=(512, 6)) * 3).astype(np.float32)], n=8)  # fmt: skip
    m = Model(blob)
    assert m.op_names() == ["SOFTMAX"]
    assert m.scale_zp(int(m.sg.outputs[0])) == (np.float32(1 / 256), -128)
    return m


@pytest.mark.parametrize("in_scale", [None, 0.004, 0.03, 0.12, 0.5, 2.0, 40.0])
def test_softmax_matches_tflm(engine, softmax_model, in_scale) -> None:
    m = Model(softmax_model.blob())
    i = int(m.sg.inputs[0])
    if in_scale is not None:
        m.set_qparams(i, in_scale, 0)
    s_in, _ = m.scale_zp(i)
    beta = m.sg.operators[0].builtinOptions.beta
    rng = np.random.default_rng(int((in_scale or 1) * 1000))
    x = with_extremes(random_int8(rng, (512, 6)))
    x[4] = 50  # all equal
    x[5], x[5, 2] = -128, 127  # one dominant
    x[6:100] = (x[6:100] // 16) - 100  # narrow ranges
    expected = run_tflm(m.blob(), x)[0]
    table = ref.softmax_exp_table(s_in, beta)
    assert_exact(ref.softmax(x, s_in, beta), expected, f"numpy SOFTMAX scale {s_in}")
    assert_exact(engine.softmax(table, x), expected, f"C SOFTMAX scale {s_in}")


# ----------------------------------------------------------------------------------
# sanitizers, and LiteRT for the record


def test_c_kernels_clean_under_address_and_undefined_sanitizers() -> None:
    """The C kernels against the numpy reference (itself equal to TFLM above), built with
    -fsanitize=address,undefined, in a child Python that preloads libasan."""
    child = textwrap.dedent(
        """
        import numpy as np
        from edge_runtime import tflm_ref as ref
        from firmware_export import cbuild
        k = cbuild.engine_kernels(sanitize=True)
        rng = np.random.default_rng(0)
        for rows, cols in [(1, 1), (7, 3), (96, 38)]:
            x = rng.integers(-128, 128, (3, cols), dtype=np.int8)
            w = rng.integers(-127, 128, (rows, cols), dtype=np.int8)
            b = rng.integers(-9999, 9999, rows).astype(np.int32)
            mult, shift = ref.fc_multipliers(0.02, 2.0 ** rng.uniform(-12, 3, rows), 0.1)
            exp = ref.fully_connected(x, w, b, -5, mult, shift, 7)
            assert (k.fully_connected(x, w, b, 5, mult, shift, 7) == exp).all()
        a, b = rng.integers(-128, 128, (2, 999), dtype=np.int8)
        for s in [(0.3, 120, 0.0007, -128, 0.051, -90), (0.01, 0, 0.02, 0, 0.03, 0)]:
            p = ref.add_params(*s)
            assert (k.add(a, b, p) == ref.add(a, b, p)).all()
            assert (k.sub(a, b[:1], p) == ref.sub(a, b[:1], p)).all()
            p = ref.mul_params(*s)
            assert (k.mul(a[:1], b, p) == ref.mul(a[:1], b, p)).all()
        t = ref.tanh_table(0.05, 3, 1 / 128, 0)
        assert (k.lut(t, a) == t[a.astype(int) + 128]).all()
        x = rng.integers(-128, 128, (5, 33), dtype=np.int8)
        assert (k.softmax(ref.softmax_exp_table(0.2), x) == ref.softmax(x, 0.2)).all()
        print("sanitized kernels ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", child],
        env=cbuild.sanitizer_env(),
        cwd=str(cbuild.ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "sanitized kernels ok" in proc.stdout


def test_litert_against_tflm_for_the_record(binary_model, unary_models, softmax_model) -> None:
    """Not a requirement on LiteRT: counts where LiteRT (reference and default kernels)
    differs from TFLM on the same op models, printed for the report."""
    pytest.importorskip("ai_edge_litert")
    rng = np.random.default_rng(2)
    cases = {
        "FC per-channel": (_fc_model(True, None), [random_int8(rng, (64, 10))]),
        "FC per-tensor": (_fc_model(False, None), [random_int8(rng, (64, 10))]),
        "ADD/SUB/MUL": (binary_model, list(random_int8(rng, (2, 1, 1024)))),
        "LOGISTIC": (unary_models["LOGISTIC"], [ALL_INT8.reshape(1, 256)]),
        "TANH": (unary_models["TANH"], [ALL_INT8.reshape(1, 256)]),
        "SOFTMAX": (softmax_model, [random_int8(rng, (512, 6))]),
    }
    for name, (m, xs) in cases.items():
        blob = m.blob()
        want = run_tflm(blob, *xs)
        producers = {int(t): m.op_name(op) for op in m.sg.operators for t in op.outputs}
        for label, reference in (("ref", True), ("default", False)):
            got = run_litert(blob, *xs, reference=reference)
            for tensor, g, w in zip(m.sg.outputs, got, want, strict=True):
                n, d = int((g != w).sum()), int(np.abs(g.astype(int) - w).max())
                print(f"LiteRT {label:7s} vs TFLM, {name} / {producers[int(tensor)]}: "
                      f"{n} of {g.size} differ, max |diff| {d}")  # fmt: skip


def _round_once_half_away(acc, mult, shift) -> np.ndarray:
    a, total = np.asarray(acc, np.int64), 31 - np.asarray(shift, np.int64)
    return np.sign(a) * ((np.abs(a) * np.asarray(mult, np.int64) + (1 << (total - 1))) >> total)


def test_litert_fc_rounds_once_where_tflm_rounds_twice() -> None:
    """Why LiteRT and TFLM disagree by one step on FULLY_CONNECTED. On the scale-0.25
    identity layer TFLM double-rounds (acc 1 -> 1), LiteRT rounds acc * scale once
    (acc 1 -> 0): its reference kernels with ties away from zero, its default kernels
    (XNNPACK, float requantization) with ties to even (acc 2 -> 0, acc 6 -> 2)."""
    pytest.importorskip("ai_edge_litert")
    m = _fc_identity_model(256)
    fc = m.ops("FULLY_CONNECTED")[0]
    inp, w, out = int(fc.inputs[0]), int(fc.inputs[1]), int(fc.outputs[0])
    m.set_data(w, np.eye(256, dtype=np.int8))
    m.set_qparams(inp, 0.5, 0)
    m.set_qparams(w, np.full(256, 0.5), np.zeros(256))
    m.set_qparams(out, 1.0, 0)
    x = ALL_INT8.reshape(1, 256)
    acc = x.ravel().astype(np.int64)
    tflm_rounding = ref.requantize(acc, 1 << 30, -1)
    ref_rounding = _round_once_half_away(acc, 1 << 30, -1)
    default_rounding = np.rint(acc * 0.25).astype(np.int64)  # exact product, ties to even
    assert tflm_rounding[128 + 1] == 1 and ref_rounding[128 + 1] == 0
    assert ref_rounding[128 + 2] == 1 and default_rounding[128 + 2] == 0
    assert_exact(run_tflm(m.blob(), x)[0].ravel(), tflm_rounding, "TFLM")
    got = run_litert(m.blob(), x, reference=True)[0].ravel()
    assert_exact(got, ref_rounding, "LiteRT reference kernels")
    got = run_litert(m.blob(), x, reference=False)[0].ravel()
    assert_exact(got, default_rounding, "LiteRT default kernels")


# ----------------------------------------------------------------------------------
# the model's FC kernels: packed 4-row blocks and block-sparse groups (tinygru.h), in the
# layouts firmware_export.lower writes, with the one-step requantization (tg_fc_rq)


class _FcParamsC(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in
                ("batches", "rows", "cols", "input_offset", "output_offset", "act_min", "act_max")]  # fmt: skip


class _SparseC(ctypes.Structure):
    _fields_ = [("groups", ctypes.c_void_p), ("values", ctypes.c_void_p), ("rows", ctypes.c_void_p),
                ("split_row", ctypes.c_int32), ("split_groups", ctypes.c_int32),
                ("split_values", ctypes.c_int32)]  # fmt: skip


class _LayerC(ctypes.Structure):
    _fields_ = [("p", _FcParamsC), ("kind", ctypes.c_int32)] + [
        (n, ctypes.c_void_p) for n in ("weights", "packed", "bias", "mult", "shift", "rq", "sparse")
    ]


def _fc_of(w, bias, mult, shift, zp_out, lo=-128, hi=127) -> lower.Fc:
    rows, cols = w.shape
    return lower.Fc(rows, cols, np.asarray(w, np.int8), np.asarray(bias, np.int32),
                    np.broadcast_to(mult, (rows,)).astype(np.int32),
                    np.broadcast_to(shift, (rows,)).astype(np.int32), int(zp_out), lo, hi)  # fmt: skip


class _Layer:
    """A tg_fc_layer over numpy arrays (kept alive here), host build: portable word order."""

    def __init__(self, f: lower.Fc, sparse: bool) -> None:
        rq = lower.one_step_rq(f)
        assert rq is not None, "the layer is outside the one-step ranges"
        self.keep: list = []
        c = _LayerC()
        c.p = _FcParamsC(1, f.rows, f.cols, 0, f.output_offset, f.act_min, f.act_max)
        if sparse:
            a = lower.sparse_arrays(f, lower.pack_blocks(f.weights), rq)
            split = f.rows // 2
            g_at, v_at = a.offsets(split)
            s = _SparseC(self._p(a.stream), self._p(a.values_portable), self._p(a.rows),
                         split, g_at, v_at)  # fmt: skip
            self.keep.append(s)
            c.kind, c.sparse = 2, ctypes.addressof(s)
        else:
            pk = lower.pack_dense(f, rq)
            rqa = np.stack([pk.rq.mult, pk.rq.add, pk.rq.shift], axis=1).astype(np.int32)
            c.kind, c.packed = 1, self._p(pk.words_portable)
            c.bias, c.rq = self._p(pk.bias_portable), self._p(rqa)
        self.c = c
        self.work = np.zeros(1 + ((f.cols + 3) & ~3) // 2, np.int32)

    def _p(self, a: np.ndarray) -> int:
        a = np.ascontiguousarray(a)
        self.keep.append(a)
        return a.ctypes.data

    def rows(self, lib, x, first: int, end: int, reuse: bool = False) -> np.ndarray:
        y = np.zeros(end - first, np.int8)
        xp = None if reuse else np.ascontiguousarray(x, np.int8).ctypes.data
        lib.tg_fc_layer_rows(ctypes.byref(self.c), ctypes.c_void_p(xp), ctypes.c_void_p(y.ctypes.data),
                             ctypes.c_void_p(self.work.ctypes.data),
                             ctypes.c_uint32(first | (end << 16)))  # fmt: skip
        return y


@pytest.mark.parametrize("sparse", [False, True], ids=["packed", "block_sparse"])
@pytest.mark.parametrize(
    "per_channel, activation", [(True, None), (True, "relu"), (False, None), (False, "relu")]
)
def test_packed_and_sparse_fc_match_tflm(engine, per_channel, activation, sparse) -> None:
    m = _fc_model(per_channel, activation)
    fc = m.ops("FULLY_CONNECTED")[0]
    inp, wt, bt, out = (int(i) for i in (*fc.inputs, fc.outputs[0]))
    s_in, zp_in = m.scale_zp(inp)
    s_out, zp_out = m.scale_zp(out)
    w = m.data(wt)
    mult, shift = ref.fc_multipliers(s_in, m.qparams(wt)[0], s_out)
    lo, hi = ref.activation_range(fc.builtinOptions.fusedActivationFunction, s_out, zp_out)
    f = _fc_of(w, ref.fold_input_zero_point(w, m.data(bt), zp_in), mult, shift, zp_out, lo, hi)
    layer = _Layer(f, sparse)
    rng = np.random.default_rng(13)
    x = with_extremes(random_int8(rng, (64, 10)))
    expected = run_tflm(m.blob(), x)[0]
    got = np.stack([layer.rows(engine.lib, row, 0, f.rows) for row in x])
    assert_exact(got, expected, f"C {'block-sparse' if sparse else 'packed'} FC")


@pytest.mark.parametrize("sparse", [False, True], ids=["packed", "block_sparse"])
def test_row_ranges_with_a_reused_input_equal_the_whole_layer(engine, sparse) -> None:
    """Rows [first, end) of a layer, any cut (blocks of 4 cut or not), the second call
    reusing the work the first prepared (x = NULL), equal the reference on random layers
    with pruned groups, short last groups and constant rows. Tolerance 0."""
    rng = np.random.default_rng(17)
    for rows, cols in ((1, 1), (6, 32), (13, 30), (96, 32), (9, 7), (24, 256)):
        w = rng.integers(-127, 128, (rows, cols)).astype(np.int8)
        g = -(-cols // 4)
        drop = np.repeat(rng.random((rows, g)) < 0.6, 4, axis=1)[:, :cols]
        w[drop] = 0
        w[rows // 2] = 0  # a pruned row: its output is a constant
        bias = rng.integers(-20000, 20000, rows).astype(np.int32)
        mult, shift = ref.fc_multipliers(0.02, 2.0 ** rng.uniform(-14, -8, rows), 0.1)
        f = _fc_of(w, bias, mult, shift, int(rng.integers(-128, 128)))
        layer = _Layer(f, sparse)
        x = random_int8(rng, (cols,))
        want = f.run(x)
        for cut in sorted({0, 1, rows // 2, (2 * rows) // 3, rows - 1}):
            if not 0 < cut < rows:
                continue
            a = layer.rows(engine.lib, x, 0, cut)
            b = layer.rows(engine.lib, None, cut, rows, reuse=True)
            assert_exact(np.concatenate([a, b]), want, f"rows cut at {cut} of {rows}x{cols}")


def _smlad(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SMLAD's sum of products of the signed halfwords of two uint32 words (int64)."""
    lo = lambda v: (v & 0xFFFF).astype(np.int64) - ((v & 0x8000) << 1).astype(np.int64)  # noqa: E731
    hi = lambda v: lo(v >> 16)  # noqa: E731
    return lo(a) * lo(b) + hi(a) * hi(b)


def _sxtb16(v: np.ndarray) -> np.ndarray:
    """SXTB16: bytes 0 and 2 sign-extended into the two halfwords."""
    b0, b2 = (v & 0xFF).astype(np.int64), ((v >> 16) & 0xFF).astype(np.int64)
    b0, b2 = np.where(b0 > 127, b0 - 256, b0), np.where(b2 > 127, b2 - 256, b2)
    return ((b0 & 0xFFFF) | ((b2 & 0xFFFF) << 16)).astype(np.uint64)


def test_dsp_word_orders_sum_to_256_times_the_accumulator() -> None:
    """The DSP word orders (tinygru.h: tg_fc_packed_s8, tg_fully_connected_sparse_s8) do
    the arithmetic the asm does, emulated in int64: SMLAD(w, P) + SMLAD(w & 0x00FF00FF, Q)
    over a packed row, from the row's start value less the per-call input term, gives
    256 (bias + dot), and SMLAD((x0, x2), p) + SMLAD((x1, x3), q) over a row's kept groups
    (long rows with their count in the stream too), from its start, 2 (bias + dot), exactly,
    on every row of random layers and inputs with extreme values."""
    rng = np.random.default_rng(19)
    for rows, cols in ((8, 32), (5, 30), (12, 1), (4, 256)):
        w = rng.integers(-127, 128, (rows, cols)).astype(np.int8)
        w[:, 4:8] = 0
        bias = rng.integers(-4000, 4000, rows).astype(np.int32)
        f = _fc_of(w, bias, 1 << 30, -10, 0)
        rq = lower.one_step_rq(f)
        pk = lower.pack_dense(f, rq)
        sp = lower.sparse_arrays(f, lower.pack_blocks(w), rq)
        for x in (
            random_int8(rng, (cols,)),
            np.full(cols, -128, np.int8),
            np.full(cols, 127, np.int8),
        ):
            want = 256 * (bias.astype(np.int64) + w.astype(np.int64) @ x.astype(np.int64))
            x4 = np.zeros(pk.cols4, np.int64)
            x4[:cols] = x
            xw = (x4.reshape(-1, 4) & 0xFF) @ (1 << np.arange(0, 32, 8))  # uint32 words
            xw = xw.astype(np.uint64)
            p = _sxtb16(xw >> 8)  # (x1, x3)
            a = (xw << 8) & 0xFF00FF00  # (256 x0, 256 x2)
            q = (((a & 0xFFFF) - (p & 0xFFFF) + 127) & 0xFFFF) | (
                (((a >> 16) - (p >> 16) + 127) & 0xFFFF) << 16)  # fmt: skip
            s = 32768 * int(x4[0::2].sum())
            words = pk.words_dsp.astype(np.uint64).reshape(pk.rows4 // 4, -1, 4)  # (b, g, i)
            for r in range(rows):
                wr = words[r // 4, :, r % 4]
                acc = (
                    int(pk.bias_dsp[r])
                    - s
                    + int(_smlad(wr, p).sum() + _smlad(wr & 0x00FF00FF, q).sum())
                )
                assert acc == want[r], ("packed", rows, cols, r)
            x02, x13 = _sxtb16(xw), _sxtb16(xw >> 8)  # (x0, x2), (x1, x3)
            at = 0
            for r in range(rows):
                k = int(sp.rows[r, 0])
                if k > lower.SPARSE_SHORT:  # a long row's count leads its groups
                    k, at = int(sp.stream[at]), at + 1
                gi = sp.stream[at : at + k].astype(np.int64)
                v0 = int(sp.counts[:r].sum())  # groups before this row
                pq = sp.values[2 * v0 : 2 * (v0 + k)].astype(np.uint64).reshape(-1, 2)
                at += k
                acc = 128 * (
                    int(sp.rows[r, 1])
                    + int(_smlad(x02[gi], pq[:, 0]).sum() + _smlad(x13[gi], pq[:, 1]).sum())
                )
                assert acc == want[r], ("block-sparse", rows, cols, r)


def test_one_step_rq_keeps_pruned_rows_constant_and_refuses_what_it_cannot_hold() -> None:
    rng = np.random.default_rng(23)
    w = rng.integers(-127, 128, (8, 16)).astype(np.int8)
    w[3] = 0
    bias = rng.integers(-9000, 9000, 8).astype(np.int32)
    bias[3] = 1 << 30  # a pruned row's bias, its weight scale tiny
    mult, shift = ref.fc_multipliers(0.02, 2.0 ** rng.uniform(-14, -8, 8), 0.1)
    f = _fc_of(w, bias, mult, shift, 5)
    rq = lower.one_step_rq(f)
    assert rq is not None and rq.constant.tolist() == [i == 3 for i in range(8)]
    assert (rq.mult[3], rq.shift[3]) == (0, 1)
    assert (rq.add[3] - 1) // 2 == f.run(np.zeros(16, np.int8))[3]  # add = 2 y + 1
    # a shift >= 0 (real multiplier >= 1/2) is outside tg_fc_rq's ranges: the layer keeps
    # TFLM's two steps and row-major weights
    assert (
        lower.one_step_rq(_fc_of(w, bias, mult, np.where(np.arange(8) == 0, 1, shift), 5)) is None
    )
