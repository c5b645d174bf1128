"""Bit-exact numpy reference of the int8 ops of the GRU step graph, with TFLM's semantics.

Pinned interpreter: ``tflite-micro==0.dev20261023182759`` (git 8f6596d). Every function
here is tested equal, value for value, to that wheel's kernels in ``tests/test_kernels.py``.

Rounding variant (the one fact everything else hangs on)
---------------------------------------------------------
TFLM can be built with ``TFLITE_SINGLE_ROUNDING`` (one ``(x*m + 2^(30-s)) >> (31-s)``)
or without it (double rounding: ``SaturatingRoundingDoublingHighMul`` then
``RoundingDivideByPOT``). The pinned wheel uses **double rounding**. Evidence:

* The two differ on negative ties of the final shift: with multiplier ``2^30`` and
  shift ``-1`` (real scale 0.25) an accumulator of ``-2`` gives ``-1`` with double
  rounding and ``0`` with single rounding. A FULLY_CONNECTED model whose scales were
  set to make the effective scale exactly 0.25 returns the double-rounding values on
  every such tie (``test_wheel_uses_double_rounding``), and on 20,480 random
  accumulators with shifts -1..-12 the wheel agrees with double rounding everywhere
  and disagrees with single rounding on the 954 where the two differ.
* The wheel's ``tflite::micro::MultiplyByQuantizedMultiplier(int, int, int)``
  disassembles to the saturation test ``a == b == INT32_MIN``, the nudge
  ``1 - 2^30`` / ``2^30`` and a mask/threshold rounding shift: the double variant.
* Double rounding can round twice in the same direction: acc 1 at scale 0.25 becomes
  1 (0.25 -> 0.5 -> 1), not 0. LiteRT 2.3 rounds FULLY_CONNECTED once (reference
  kernels: ties away from zero; default XNNPACK kernels: float requantization, ties to
  even), which is why LiteRT and TFLM differ by one step on some FC outputs.

The wheel is newer than the TFLM sources one can read (Aug 2026): its SUB prepare and
its per-tensor FULLY_CONNECTED multiplier are computed in double, where those sources
use float32; both are pinned by tests with scales on which the two disagree.

Consequences of the double-rounding build that the exporter must copy:
``quantize_multiplier`` does not saturate shifts above 30, and SOFTMAX caps
``beta * scale * 2^26`` at ``2^31 - 1`` (not ``2^30 - 1``).

Integer overflow: TFLM computes in int32 and relies on two's-complement wrap (for
example ``x * (1 << left_shift)``); the helpers below wrap the same way.
"""

from __future__ import annotations

import math

import numpy as np

from edge_runtime.contract import round_half_away_int

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

# activation codes of the flatbuffer schema (ActivationFunctionType)
ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6 = 0, 1, 2, 3


# ----------------------------------------------------------------------------------
# integer primitives (int64 numpy arrays holding int32 values)


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def wrap32(x) -> np.ndarray:
    """Two's-complement wrap of int64 values to the int32 range."""
    return ((_i64(x) + 2**31) & 0xFFFFFFFF) - 2**31


def _trunc_div_pow2(v: np.ndarray, bits: int) -> np.ndarray:
    """C division of int64 by 2^bits (rounds toward zero)."""
    return np.where(v >= 0, v >> bits, -((-v) >> bits))


def srdhm(a, b) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul: round(a*b / 2^31), ties away from zero on the
    positive side and toward zero on the negative side; INT32_MIN*INT32_MIN saturates."""
    a, b = _i64(a), _i64(b)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    out = _trunc_div_pow2(ab + nudge, 31)
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, out)


def rdbpot(x, exponent) -> np.ndarray:
    """RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero.
    exponent in [0, 31], may be an array."""
    x, e = _i64(x), _i64(exponent)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def saturating_shift_left(x, exponent: int) -> np.ndarray:
    """SaturatingRoundingMultiplyByPOT with a positive exponent (int32 saturation)."""
    x = _i64(x)
    threshold = (1 << (31 - exponent)) - 1
    out = x << exponent
    out = np.where(x > threshold, INT32_MAX, out)
    return np.where(x < -threshold, INT32_MIN, out)


def requantize(acc, mult, shift) -> np.ndarray:
    """MultiplyByQuantizedMultiplier(int32 acc, mult, shift), double rounding.

    ``acc * 2^max(shift, 0)`` (int32, wrapping), then SaturatingRoundingDoublingHighMul
    by ``mult``, then RoundingDivideByPOT by ``max(-shift, 0)``. ``mult`` in
    [0, 2^31 - 1], ``shift`` in [-31, 30]; both may be arrays broadcast against acc.
    Returns int64 values in the int32 range.
    """
    shift = _i64(shift)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = wrap32(wrap32(acc) << left)
    return rdbpot(srdhm(x, mult), right)


def requantize_single_rounding(acc, mult, shift) -> np.ndarray:
    """The TFLITE_SINGLE_ROUNDING variant, kept only to show the wheel does not use it."""
    total = 31 - _i64(shift)
    return (_i64(acc) * _i64(mult) + (np.int64(1) << (total - 1))) >> total


# ----------------------------------------------------------------------------------
# prepare-time parameter derivation (float scales -> integer multipliers)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier: real = mult * 2^(shift - 31), mult in [2^30, 2^31).

    frexp gives q in [0.5, 1) and the exponent; mult = round(q * 2^31) with std::round
    (half away from zero); mult == 2^31 becomes 2^30 with shift + 1; shift < -31 is
    flushed to (0, 0); 0.0 gives (0, 0). No saturation of shift > 30 (that belongs to
    the single-rounding build only).
    """
    real = float(real)
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = round_half_away_int(q * 2.0**31)
    if q_fixed > 2**31:
        raise ValueError(f"bad multiplier {real}")
    if q_fixed == 2**31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def quantize_multiplier_smaller_than_one(real: float) -> tuple[int, int]:
    """QuantizeMultiplierSmallerThanOneExp: 0 < real < 1, so shift <= 0."""
    if not 0.0 < real < 1.0:
        raise ValueError(f"multiplier {real} not in (0, 1)")
    mult, shift = quantize_multiplier(real)
    if shift > 0:
        raise ValueError(f"multiplier {real} rounds to >= 1")
    return mult, shift


def quantize_multiplier_greater_than_one(real: float) -> tuple[int, int]:
    """QuantizeMultiplierGreaterThanOne: real > 1, so shift >= 0."""
    if not real > 1.0:
        raise ValueError(f"multiplier {real} not > 1")
    return quantize_multiplier(real)


def activation_range(act: int, out_scale: float, out_zp: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8: the fused-activation clamp.

    Bounds are ``zp + round(f / scale)`` computed in float32 (TfLiteRound)."""

    def q(f: float) -> int:
        return int(out_zp) + round_half_away_int(float(np.float32(f) / np.float32(out_scale)))

    if act == ACT_NONE:
        return -128, 127
    if act == ACT_RELU:
        return max(-128, q(0.0)), 127
    if act == ACT_RELU6:
        return max(-128, q(0.0)), min(127, q(6.0))
    if act == ACT_RELU_N1_TO_1:
        return max(-128, q(-1.0)), min(127, q(1.0))
    raise ValueError(f"unsupported fused activation {act}")


# ----------------------------------------------------------------------------------
# FULLY_CONNECTED


def fc_multipliers(in_scale: float, w_scales, out_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (mult, shift) as TFLM's CalculateOpDataFullyConnected derives them.

    ``QuantizeMultiplier(double(in) * double(w) / double(out))`` for each weight scale:
    per-channel weights (more than one scale, what the converter emits for Dense) give
    one pair per row; per-tensor weights give one pair, returned once (broadcast it).
    Older TFLM sources formed the per-tensor product in float32; the pinned wheel
    multiplies in double (``mulsd`` in GetQuantizedConvolutionMultipler), and a test
    case where the two differ by one output step confirms it.
    """
    ws = np.atleast_1d(np.asarray(w_scales, dtype=np.float32))
    pairs = [quantize_multiplier(float(in_scale) * float(s) / float(out_scale)) for s in ws]
    mult = np.array([p[0] for p in pairs], dtype=np.int32)
    shift = np.array([p[1] for p in pairs], dtype=np.int32)
    return mult, shift


def fully_connected(
    x,
    w,
    bias,
    in_zp: int,
    mult,
    shift,
    out_zp: int,
    act_min: int = -128,
    act_max: int = 127,
) -> np.ndarray:
    """int8 FULLY_CONNECTED (reference_integer_ops::FullyConnectedPerChannel / FullyConnected).

    x: (B, K) int8, w: (N, K) int8 row-major (symmetric, zero point 0), bias: (N,) int32
    or None. acc = sum_k w[n,k] * (x[b,k] - in_zp) + bias[n] in int32, then
    ``requantize(acc, mult[n], shift[n]) + out_zp`` clamped to [act_min, act_max].
    """
    x = _i64(x).reshape(-1, np.shape(w)[-1])
    w = _i64(w)
    acc = (x - int(in_zp)) @ w.T  # (B, N)
    if bias is not None:
        acc = acc + _i64(bias)
    acc = wrap32(acc)
    out = requantize(acc, _i64(mult), _i64(shift)) + int(out_zp)
    return np.clip(out, act_min, act_max).astype(np.int8)


def fold_input_zero_point(w, bias, in_zp: int) -> np.ndarray:
    """bias - in_zp * rowsum(w) (int32, wrapping): lets the kernel run with input offset 0.

    Identical to TFLM's per-element ``w * (x - zp)`` because int32 addition is
    associative modulo 2^32."""
    b = np.zeros(np.shape(w)[0], np.int64) if bias is None else _i64(bias)
    return wrap32(b - int(in_zp) * _i64(w).sum(axis=1)).astype(np.int32)


# ----------------------------------------------------------------------------------
# ADD / SUB / MUL / QUANTIZE


def add_params(s1: float, zp1: int, s2: float, zp2: int, so: float, zpo: int) -> dict:
    """ADD int8 prepare (CalculateOpDataAdd): left_shift 20, scales in double.

    twice_max = 2 * max(s1, s2); in_i multiplier = s_i / twice_max; output multiplier =
    twice_max / (2^20 * so); all three via QuantizeMultiplierSmallerThanOneExp.
    """
    twice_max = 2.0 * float(max(np.float32(s1), np.float32(s2)))
    m1 = quantize_multiplier_smaller_than_one(float(s1) / twice_max)
    m2 = quantize_multiplier_smaller_than_one(float(s2) / twice_max)
    mo = quantize_multiplier_smaller_than_one(twice_max / ((1 << 20) * float(so)))
    return _addsub_dict(zp1, zp2, zpo, m1, m2, mo)


def sub_params(s1: float, zp1: int, s2: float, zp2: int, so: float, zpo: int) -> dict:
    """SUB int8 prepare: the same double-precision derivation as ADD in the pinned wheel.

    Older TFLM sources computed SUB's ratios in float32; the wheel divides in double
    (its CalculateOpDataSub disassembles to ``divsd``), and the float32 variant gives a
    different output on one of the 65,536 input pairs of a case kept in the tests.
    """
    return add_params(s1, zp1, s2, zp2, so, zpo)


def _addsub_dict(zp1, zp2, zpo, m1, m2, mo) -> dict:
    return {
        "input1_offset": -int(zp1),
        "input1_multiplier": m1[0],
        "input1_shift": m1[1],
        "input2_offset": -int(zp2),
        "input2_multiplier": m2[0],
        "input2_shift": m2[1],
        "left_shift": 20,
        "output_offset": int(zpo),
        "output_multiplier": mo[0],
        "output_shift": mo[1],
        "act_min": -128,
        "act_max": 127,
    }


def _addsub_scaled(x1, x2, p: dict) -> tuple[np.ndarray, np.ndarray]:
    v1 = wrap32((_i64(x1) + p["input1_offset"]) << p["left_shift"])
    v2 = wrap32((_i64(x2) + p["input2_offset"]) << p["left_shift"])
    s1 = requantize(v1, p["input1_multiplier"], p["input1_shift"])
    s2 = requantize(v2, p["input2_multiplier"], p["input2_shift"])
    return s1, s2


def _addsub_out(raw, p: dict) -> np.ndarray:
    out = requantize(wrap32(raw), p["output_multiplier"], p["output_shift"]) + p["output_offset"]
    return np.clip(out, p["act_min"], p["act_max"]).astype(np.int8)


def add(x1, x2, p: dict) -> np.ndarray:
    """int8 ADD (numpy broadcasting stands in for TFLM's broadcast loops)."""
    s1, s2 = _addsub_scaled(x1, x2, p)
    return _addsub_out(s1 + s2, p)


def sub(x1, x2, p: dict) -> np.ndarray:
    """int8 SUB: as ADD with the scaled second input subtracted."""
    s1, s2 = _addsub_scaled(x1, x2, p)
    return _addsub_out(s1 - s2, p)


def mul_params(s1: float, zp1: int, s2: float, zp2: int, so: float, zpo: int) -> dict:
    """MUL int8 prepare: QuantizeMultiplier(double(s1) * double(s2) / double(so))."""
    mult, shift = quantize_multiplier(float(s1) * float(s2) / float(so))
    return {
        "input1_offset": -int(zp1),
        "input2_offset": -int(zp2),
        "output_offset": int(zpo),
        "output_multiplier": mult,
        "output_shift": shift,
        "act_min": -128,
        "act_max": 127,
    }


def mul(x1, x2, p: dict) -> np.ndarray:
    """int8 MUL: requantize((x1 - zp1) * (x2 - zp2)) + zpo, clamped."""
    prod = (_i64(x1) + p["input1_offset"]) * (_i64(x2) + p["input2_offset"])
    out = requantize(prod, p["output_multiplier"], p["output_shift"]) + p["output_offset"]
    return np.clip(out, p["act_min"], p["act_max"]).astype(np.int8)


def quantize_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """QUANTIZE int8 -> int8 (reference_ops::Requantize) as a 256-entry table.

    mult, shift = QuantizeMultiplier(double(in) / double(out));
    out = clamp(requantize(q - in_zp, mult, shift) + out_zp). Entry i is for q = i - 128.
    """
    mult, shift = quantize_multiplier(float(in_scale) / float(out_scale))
    q = np.arange(-128, 128, dtype=np.int64)
    out = requantize(q - int(in_zp), mult, shift) + int(out_zp)
    return np.clip(out, -128, 127).astype(np.int8)


# ----------------------------------------------------------------------------------
# gemmlowp fixed point (int32 raw values with a given number of integer bits)


def _rounding_half_sum(a, b) -> np.ndarray:
    s = _i64(a) + _i64(b)
    return _trunc_div_pow2(s + np.where(s >= 0, 1, -1), 1)


def _exp_on_interval_between_neg_quarter_and_0(a) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: Taylor series around -1/8."""
    c_exp_m1_8, c_1_3 = 1895147668, 715827883  # exp(-1/8), 1/3 in Q0.31
    x = wrap32(_i64(a) + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(wrap32(srdhm(wrap32(x4_over_4 + x3), c_1_3) + x2), 1)
    return wrap32(c_exp_m1_8 + srdhm(c_exp_m1_8, wrap32(x + poly)))


# (exponent, Q0.31 of exp(-2^exponent)) for the barrel shifter of exp_on_negative_values
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))  # fmt: skip


def exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """exp(a) for a <= 0 given in Q(integer_bits).(31-integer_bits); result Q0.31."""
    a = _i64(a)
    frac = 31 - integer_bits
    quarter = 1 << (frac - 2)
    a_mod = wrap32((a & (quarter - 1)) - quarter)
    result = _exp_on_interval_between_neg_quarter_and_0(saturating_shift_left(a_mod, integer_bits))
    remainder = wrap32(a_mod - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = np.int64(1) << (frac + exponent)
            result = np.where((remainder & bit) != 0, srdhm(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def _newton_reciprocal_f2(half_denominator) -> np.ndarray:
    """Three Newton-Raphson steps for 1 / half_denominator, Q2.29 (constants 48/17, -32/17)."""
    one_f2 = 1 << 29
    x = wrap32(1515870810 + srdhm(half_denominator, -1010580540))
    for _ in range(3):
        one_minus = wrap32(one_f2 - srdhm(half_denominator, x))
        x = wrap32(x + saturating_shift_left(srdhm(x, one_minus), 2))
    return x


def one_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """1 / (1 + a) for a in [0, 1), Q0.31 in and out."""
    x = _newton_reciprocal_f2(_rounding_half_sum(a, INT32_MAX))
    return saturating_shift_left(x, 1)


def one_minus_x_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """(1 - a) / (1 + a) for a in [0, 1), Q0.31 in and out."""
    x = _newton_reciprocal_f2(_rounding_half_sum(a, INT32_MAX))
    return saturating_shift_left(wrap32(x - (1 << 29)), 2)


def fixed_logistic(a, integer_bits: int) -> np.ndarray:
    """gemmlowp::logistic: input Q(integer_bits), output Q0.31."""
    a = _i64(a)
    positive = a > 0
    abs_a = np.where(positive, a, -a)
    r_pos = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-abs_a, integer_bits))
    r_neg = wrap32(INT32_MAX - r_pos)
    return np.where(a == 0, 1 << 30, np.where(positive, r_pos, r_neg))


def fixed_tanh(a, integer_bits: int) -> np.ndarray:
    """gemmlowp::tanh: input Q(integer_bits), output Q0.31."""
    a = _i64(a)
    negative = a < 0
    n = np.where(negative, a, -a)  # -|a|
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1))
    return np.where(a == 0, 0, np.where(negative, -t, t))


# ----------------------------------------------------------------------------------
# LOGISTIC / TANH (int8 -> int8, tabulated)


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_bits: int = 31):
    """CalculateInputRadius: floor((2^ib - 1) * 2^(tb - ib) / 2^left_shift), in double."""
    v = (
        1.0
        * ((1 << input_integer_bits) - 1)
        * float(1 << (total_bits - input_integer_bits))
        / 2.0**input_left_shift
    )
    return int(math.floor(v))


def unary_fixed_params(in_scale: float) -> tuple[int, int, int]:
    """LOGISTIC/TANH int8 prepare: (input_multiplier, input_left_shift, input_range_radius).

    real = double(in_scale) * 2^27 (4 integer bits); q, left_shift = frexp(real);
    multiplier = (int32)round(q * 2^31) - no 2^31 fix-up here, unlike QuantizeMultiplier:
    the cast wraps 2^31 to INT32_MIN on x86, reproduced. radius = CalculateInputRadius(4,
    left_shift, 31).
    """
    q, left_shift = math.frexp(float(in_scale) * float(1 << 27))
    mult = int(wrap32(round_half_away_int(q * 2.0**31)))
    return mult, left_shift, calculate_input_radius(4, left_shift, 31)


def _unary_inputs(in_zp: int) -> np.ndarray:
    return np.arange(-128, 128, dtype=np.int64) - int(in_zp)


def logistic_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """int8 LOGISTIC as a table; entry i is the output for input q = i - 128.

    TFLM (reference_integer_ops::Logistic): d = q - zp; d <= -radius -> -128,
    d >= radius -> 127; else x = requantize(d, mult, left_shift) as Q4.27,
    y = gemmlowp::logistic(x) as Q0.31, out = clamp(RoundingDivideByPOT(y, 23) - 128).
    TFLM requires out_zp == -128 and assumes out_scale == 1/256 (not checked by TFLM,
    enforced here).
    """
    if out_zp != -128 or np.float32(out_scale) != np.float32(1.0 / 256):
        raise ValueError("int8 LOGISTIC output must have scale 1/256 and zero point -128")
    mult, left_shift, radius = unary_fixed_params(in_scale)
    d = _unary_inputs(in_zp)
    x = requantize(d, mult, left_shift)
    y = rdbpot(fixed_logistic(x, 4), 23) - 128
    y = np.where(d <= -radius, -128, np.where(d >= radius, 127, y))
    return np.clip(y, -128, 127).astype(np.int8)


def tanh_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """int8 TANH as a table; entry i is the output for input q = i - 128.

    As LOGISTIC with gemmlowp::tanh and out = clamp(RoundingDivideByPOT(y, 24)): the
    output is implicitly scale 1/128, zero point 0 (what the converter emits; enforced).
    """
    if out_zp != 0 or np.float32(out_scale) != np.float32(1.0 / 128):
        raise ValueError("int8 TANH output must have scale 1/128 and zero point 0")
    mult, left_shift, radius = unary_fixed_params(in_scale)
    d = _unary_inputs(in_zp)
    x = requantize(d, mult, left_shift)
    y = rdbpot(fixed_tanh(x, 4), 24)
    y = np.where(d <= -radius, -128, np.where(d >= radius, 127, y))
    return np.clip(y, -128, 127).astype(np.int8)


# ----------------------------------------------------------------------------------
# SOFTMAX (int8 -> int8, output scale 1/256, zero point -128)

SOFTMAX_DIFF_INTEGER_BITS = 5
SOFTMAX_ACCUM_INTEGER_BITS = 12


def softmax_params(in_scale: float, beta: float = 1.0) -> tuple[int, int, int]:
    """SOFTMAX int8 prepare: (input_multiplier, input_left_shift, diff_min).

    PreprocessSoftmaxScaling: real = min(double(beta) * double(in_scale) * 2^26,
    2^31 - 1) (the double-rounding cap), QuantizeMultiplierGreaterThanOne;
    diff_min = -CalculateInputRadius(5, left_shift, 31).
    """
    real = min(float(np.float32(beta)) * float(in_scale) * float(1 << 26), float(2**31 - 1))
    mult, left_shift = quantize_multiplier_greater_than_one(real)
    return mult, left_shift, -calculate_input_radius(5, left_shift, 31)


def softmax_exp_table(in_scale: float, beta: float = 1.0) -> np.ndarray:
    """exp(beta * scale * diff) as Q0.31 for diff = -d, d = 0..255 (int32[256]).

    Entries with diff < diff_min are 0: TFLM skips them (no share of the sum, output
    -128), which a zero entry reproduces exactly.
    """
    mult, left_shift, diff_min = softmax_params(in_scale, beta)
    diff = -np.arange(256, dtype=np.int64)
    scaled = srdhm(wrap32(diff << left_shift), mult)  # MultiplyByQuantizedMultiplierGreaterThanOne
    e = exp_on_negative_values(scaled, SOFTMAX_DIFF_INTEGER_BITS)
    return np.where(diff >= diff_min, e, 0).astype(np.int32)


def _clz32(x: int) -> int:
    return 32 - int(x).bit_length() if x else 32


def softmax(x, in_scale: float, beta: float = 1.0) -> np.ndarray:
    """int8 SOFTMAX over the last axis (reference_ops::Softmax, int8 in and out).

    Per row: d = x - max(x); e = exp_table[-d]; sum = sum(RoundingDivideByPOT(e, 12)) as
    Q12.19; reciprocal via GetReciprocal (count leading zeros, then
    one_over_one_plus_x_for_x_in_0_1); out = clamp(RoundingDivideByPOT(srdhm(recip, e),
    bits_over_unit + 23) - 128).
    """
    table = softmax_exp_table(in_scale, beta).astype(np.int64)
    x = _i64(x)
    rows = x.reshape(-1, x.shape[-1])
    out = np.empty(rows.shape, np.int8)
    for r, row in enumerate(rows):
        e = table[row.max() - row]
        total = int(wrap32(rdbpot(e, 12).sum()))
        headroom = _clz32(total & 0xFFFFFFFF)
        bits_over_unit = SOFTMAX_ACCUM_INTEGER_BITS - headroom
        shifted = int(wrap32((((total & 0xFFFFFFFF) << headroom) & 0xFFFFFFFF) - 2**31))
        recip = one_over_one_plus_x_for_x_in_0_1(shifted)
        exponent = bits_over_unit + 31 - 8
        y = rdbpot(srdhm(recip, e), exponent) - 128
        out[r] = np.clip(y, -128, 127)
    return out.reshape(x.shape)
