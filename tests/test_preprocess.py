"""The preprocessing contract: windows, normalization and the integer input formula."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from edge_runtime.bundle import validate_manifest
from edge_runtime.preprocess import (
    InputQuant,
    fit_normalization,
    normalize,
    quantize_counts,
    quantize_float_reference,
    round_half_away,
    to_physical,
    windows,
)

G_SCALE = 16.0 / 65536  # accelerometer, +-8 g on 16 bits, g per count
RAD_SCALE = np.deg2rad(4000.0 / 65536)  # gyroscope, +-2000 dps on 16 bits, rad/s per count
IMU_SCALE = np.array([G_SCALE] * 3 + [RAD_SCALE] * 3)
ALL_COUNTS = np.repeat(np.arange(-32768, 32768, dtype=np.int16)[:, None], 6, axis=1)


# --------------------------------------------------------------------------- windows


def test_windows_starts_and_contents() -> None:
    counts = np.arange(20, dtype=np.int16).reshape(10, 2)
    starts, x, y = windows(counts, None, length=4, hop=3)
    np.testing.assert_array_equal(starts, [0, 3, 6])
    assert x.shape == (3, 4, 2) and x.dtype == np.int16
    np.testing.assert_array_equal(x[1], counts[3:7])
    np.testing.assert_array_equal(y, [-1, -1, -1])
    assert x.flags.c_contiguous


def test_windows_label_purity() -> None:
    counts = np.zeros((12, 1), dtype=np.int16)
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, -1, 2, 2, 2])
    starts, x, y = windows(counts, labels, length=4, hop=2)
    # candidates 0, 2, 4, 6, 8: [0000] keep, [0011] drop, [1111] keep, [11-12] drop, [-1222] drop
    np.testing.assert_array_equal(starts, [0, 4])
    np.testing.assert_array_equal(y, [0, 1])
    assert x.shape == (2, 4, 1)
    starts, _, y = windows(counts, labels, length=3, hop=1)
    np.testing.assert_array_equal(starts, [0, 1, 4, 5, 9])
    np.testing.assert_array_equal(y, [0, 0, 1, 1, 2])


def test_windows_short_and_invalid() -> None:
    counts = np.zeros((3, 2), dtype=np.int16)
    starts, x, y = windows(counts, np.zeros(3, dtype=int), length=4, hop=1)
    assert starts.shape == (0,) and x.shape == (0, 4, 2) and y.shape == (0,)
    with pytest.raises(ValueError):
        windows(counts, None, length=0, hop=1)
    with pytest.raises(ValueError):
        windows(counts, np.zeros(4, dtype=int), length=2, hop=1)


# --------------------------------------------------------------------------- float path


def test_physical_and_normalize() -> None:
    counts = np.array([[4096, -2048], [0, 1]], dtype=np.int16)
    scale = [G_SCALE, 0.5]
    phys = to_physical(counts, scale)
    assert phys.dtype == np.float32
    np.testing.assert_allclose(phys, [[1.0, -1024.0], [0.0, 0.5]])
    u = normalize(counts, scale, mean=[1.0, 0.0], std=[2.0, 512.0])
    assert u.dtype == np.float32
    np.testing.assert_allclose(u, [[0.0, -2.0], [-0.5, 0.5 / 512]])


def test_fit_normalization_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    recs = [rng.integers(-3000, 3000, size=(n, 6)).astype(np.int16) for n in (50, 120, 7)]
    mean, std = fit_normalization(recs, IMU_SCALE)
    phys = np.concatenate(recs).astype(np.float64) * IMU_SCALE
    np.testing.assert_allclose(mean, phys.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, phys.std(axis=0), rtol=1e-12)
    assert mean.dtype == np.float64 and std.dtype == np.float64
    mean2, std2 = fit_normalization(np.stack([recs[1][:50], recs[0]]), IMU_SCALE)
    m3, s3 = fit_normalization(np.concatenate([recs[1][:50], recs[0]]), IMU_SCALE)
    np.testing.assert_allclose(mean2, m3)
    np.testing.assert_allclose(std2, s3)


def test_fit_normalization_floors_constant_channel() -> None:
    counts = np.zeros((10, 2), dtype=np.int16)
    counts[:, 1] = np.arange(10)
    mean, std = fit_normalization(counts, [0.25, 1.0])
    assert std[0] == 0.25 and std[1] > 0
    _, std = fit_normalization(counts, [0.25, 1.0], min_std=1e-3)
    assert std[0] == 1e-3
    assert np.all(np.isfinite(normalize(counts, [0.25, 1.0], mean, std)))


def test_round_half_away() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999999999999994, -0.49999999999999994])
    np.testing.assert_array_equal(round_half_away(x), [1, 2, 3, -1, -2, -3, 0, -0])
    assert np.round(2.5) == 2.0  # numpy rounds half to even: the reason it is not used


# --------------------------------------------------------------------------- integer path


def realistic_channels(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Means and stds like real IMU data: gravity on the accelerometer, small gyro offsets."""
    acc_mean = rng.uniform(-1.0, 1.0, size=3)
    acc_std = rng.uniform(0.05, 0.6, size=3)
    gyro_mean = rng.uniform(-0.1, 0.1, size=3)
    gyro_std = rng.uniform(0.05, 1.5, size=3)
    s_in = float(rng.uniform(0.03, 0.06))
    zp = int(rng.integers(-20, 21))
    return np.r_[acc_mean, gyro_mean], np.r_[acc_std, gyro_std], s_in, zp


def exact_u(count: int, scale: float, mean: float, std: float, s_in: float) -> Fraction:
    """The real-number value of ``u / s_in`` for the float64 inputs, in rational arithmetic."""
    return (Fraction(count) * Fraction(scale) - Fraction(mean)) / Fraction(std) / Fraction(s_in)


def rhaz_q(u: Fraction, zp: int) -> int:
    r = int(abs(u) + Fraction(1, 2))
    return max(-128, min(127, zp + (r if u >= 0 else -r)))


def test_integer_formula_matches_float_on_every_int16_count() -> None:
    rng = np.random.default_rng(2024)
    configs = [
        (np.array([0.02, -0.98, 0.15, 0.001, -0.004, 0.002]),
         np.array([0.31, 0.42, 0.27, 0.55, 0.61, 0.38]), 0.03, -20),
        (np.zeros(6), np.ones(6), 0.06, 20),
    ] + [realistic_channels(rng) for _ in range(30)]  # fmt: skip
    total = off_by_one = float_wrong = int_wrong = 0
    farthest = Fraction(0)
    for mean, std, s_in, zp in configs:
        iq = InputQuant.derive(IMU_SCALE, mean, std, s_in, zp)
        q_int = quantize_counts(ALL_COUNTS, iq)
        q_ref = quantize_float_reference(ALL_COUNTS, IMU_SCALE, mean, std, s_in, zp)
        assert q_int.dtype == np.int8 and q_int.shape == ALL_COUNTS.shape
        diff = q_int.astype(np.int64) - q_ref
        assert np.abs(diff).max() <= 1
        total += diff.size
        # the integer form is within this distance of the exact value (module docstring)
        bound = Fraction(2**15 + 1, 2 ** (iq.shift + 1))
        for i, c in zip(*np.nonzero(diff), strict=True):
            off_by_one += 1
            u = exact_u(int(ALL_COUNTS[i, c]), IMU_SCALE[c], mean[c], std[c], s_in)
            to_half = abs(abs(u) - int(abs(u)) - Fraction(1, 2))
            assert to_half <= bound, "a disagreement not explained by rounding near a half"
            farthest = max(farthest, to_half)
            float_wrong += int(q_ref[i, c]) != rhaz_q(u, zp)
            int_wrong += int(q_int[i, c]) != rhaz_q(u, zp)
    print(
        f"\ninput quantization: {off_by_one} off-by-one of {total} values "
        f"({len(configs)} channel sets x 65536 counts x 6 channels); "
        f"against exact rational arithmetic: integer form wrong {int_wrong}, "
        f"float64 reference wrong {float_wrong}"
        + (f"; all within {float(farthest):.1e} of a half" if off_by_one else "")
    )
    assert off_by_one <= total * 1e-5


def test_exact_halves_round_away_from_zero() -> None:
    # scale / (std * s_in) = 1/8 exactly: counts that are 4 mod 8 land on k + 0.5
    scale, std, s_in = 2.0**-6, 1.0, 2.0**-3
    counts = np.array([[4], [12], [20], [-4], [-12], [-20], [3], [5]], dtype=np.int16)
    want = np.array([[1], [2], [3], [-1], [-2], [-3], [0], [1]], dtype=np.int8)
    iq = InputQuant.derive(scale, 0.0, std, s_in, 0)
    np.testing.assert_array_equal(quantize_counts(counts, iq), want)
    np.testing.assert_array_equal(quantize_float_reference(counts, scale, 0.0, std, s_in, 0), want)
    # the mean adds an exact half too: (0 - 1/16) / (1/8) = -0.5 -> -1, zero point after rounding
    iq = InputQuant.derive(scale, 2.0**-4, std, s_in, 5)
    counts = np.array([[0], [8], [-8], [4]], dtype=np.int16)  # -0.5, 0.5, -1.5, 0
    want = np.array([[4], [6], [3], [5]], dtype=np.int8)
    np.testing.assert_array_equal(quantize_counts(counts, iq), want)
    np.testing.assert_array_equal(
        quantize_float_reference(counts, scale, 2.0**-4, std, s_in, 5), want
    )


def test_clamping_and_extremes() -> None:
    iq = InputQuant.derive(1.0, 0.0, 1.0, 1.0, 10)
    counts = np.array([[-32768], [-139], [-138], [0], [117], [118], [32767]], dtype=np.int16)
    np.testing.assert_array_equal(
        quantize_counts(counts, iq), [[-128], [-128], [-128], [10], [127], [127], [127]]
    )
    with pytest.raises(ValueError, match="int16 range"):
        quantize_counts(np.array([[40000]], dtype=np.int32), iq)
    with pytest.raises(ValueError, match="integers"):
        quantize_counts(np.array([[1.0]]), iq)
    with pytest.raises(ValueError, match="channels"):
        quantize_counts(np.zeros((2, 3), dtype=np.int16), iq)


def test_derive_uses_the_largest_shift() -> None:
    mean = np.array([0.02, -0.98, 0.15, 0.001, -0.004, 0.002])
    std = np.array([0.31, 0.42, 0.27, 0.55, 0.61, 0.38])
    iq = InputQuant.derive(IMU_SCALE, mean, std, 0.04, 0)
    assert iq.multiplier.dtype == np.int32 and iq.bias.dtype == np.int64
    assert 2**30 <= np.abs(iq.multiplier.astype(np.int64)).max() <= 2**31 - 1
    ratio = IMU_SCALE / (std * 0.04)
    np.testing.assert_allclose(iq.multiplier / 2.0**iq.shift, ratio, rtol=1e-8)
    np.testing.assert_allclose(iq.bias / 2.0**iq.shift, -mean / (std * 0.04), rtol=1e-8)
    # a huge offset forces a smaller shift to keep the int64 sum safe
    big = InputQuant.derive(1e-3, 1e12, 1.0, 1e-3, 0)
    assert big.shift < 62
    assert 2**15 * abs(int(big.multiplier[0])) + abs(int(big.bias[0])) + 2**big.shift < 2**63
    with pytest.raises(ValueError, match="no shift"):
        InputQuant.derive(1e12, 0.0, 1.0, 1e-3, 0)
    with pytest.raises(ValueError):
        InputQuant.derive(IMU_SCALE, mean, np.r_[std[:5], 0.0], 0.04, 0)


def test_input_quant_dict_round_trip_and_schema() -> None:
    iq = InputQuant.derive(IMU_SCALE, np.zeros(6), np.ones(6), 0.05, -3)
    d = iq.to_dict()
    assert set(d) == {"scale", "zero_point", "multiplier", "bias", "shift"}
    assert all(type(v) is int for v in d["multiplier"] + d["bias"])
    back = InputQuant.from_dict(d)
    assert back == iq
    assert back.multiplier.dtype == np.int32 and back.bias.dtype == np.int64
    validate_manifest(
        {
            "schema_version": 1,
            "name": "t",
            "task": "classification",
            "created": "2026-01-01T00:00:00+00:00",
            "artifacts": {},
            "stages": {},
            "preprocess": {"window": 128, "hop": 64, "mean": [0.0] * 6, "std": [1.0] * 6,
                           "input_quant": d},
        }
    )  # fmt: skip
    with pytest.raises(ValueError, match="missing field 'shift'"):
        InputQuant.from_dict({k: v for k, v in d.items() if k != "shift"})
    with pytest.raises(ValueError, match="int32"):
        InputQuant(np.array([2**31]), np.array([0]), 10, 0, 0.1)
    with pytest.raises(ValueError, match="zero_point"):
        InputQuant(np.array([1]), np.array([0]), 10, 200, 0.1)
