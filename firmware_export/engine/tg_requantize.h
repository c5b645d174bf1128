/* tinygru int8 engine: fixed-point helpers shared by the kernels.
 * Semantics are those of the pinned TFLM build (double rounding); the API is
 * documented in tinygru_kernels.h. */
#ifndef TG_REQUANTIZE_H
#define TG_REQUANTIZE_H

#include <stdint.h>

/* round(a * b / 2^31); the only overflow, INT32_MIN * INT32_MIN, saturates. */
static inline int32_t tg_srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31)); /* C99: truncates toward zero */
}

/* tg_srdhm for b >= 0 (b is never INT32_MIN, so nothing overflows): floor((a b + 2^30) / 2^31).
 * The same value as tg_srdhm: for a b >= 0 both are floor((a b + 2^30) / 2^31); for a b < 0,
 * truncating (a b + 1 - 2^30) / 2^31 toward zero equals flooring it after adding 2^31 - 1,
 * which is floor((a b + 2^30) / 2^31) again. No branch: SMULL (or SMLAL), add, shift. */
static inline int32_t tg_srdhm_nonneg(int32_t a, int32_t b)
{
    return (int32_t)(((int64_t)a * (int64_t)b + ((int64_t)1 << 30)) >> 31);
}

/* x / 2^exponent rounded to nearest, ties away from zero; exponent in [0, 31]. */
static inline int32_t tg_rdbpot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* x * 2^exponent with int32 wrap-around, as TFLM's `x * (1 << left_shift)`. */
static inline int32_t tg_shl_wrap(int32_t x, int32_t exponent)
{
    return (int32_t)((uint32_t)x << exponent);
}

/* tg_rdbpot for exponent in [1, 31] and x > INT32_MIN, without a mask: TFLM's rounding
 * is floor((x + 2^(e-1)) / 2^e) for x >= 0 and floor((x - 1 + 2^(e-1)) / 2^e) for x < 0;
 * with x' = x - (x < 0) and q = floor(x' / 2^(e-1)) that is floor((q + 1) / 2), computed
 * as (q >> 1) + (q & 1) so that nothing overflows. */
static inline int32_t tg_rdbpot_pos(int32_t x, int32_t exponent)
{
    const int32_t q = (x + (x >> 31)) >> (exponent - 1);
    return (q >> 1) + (q & 1);
}

/* MultiplyByQuantizedMultiplier: acc * mult * 2^(shift - 31), double rounding.
 * mult >= 0 (range [2^30, 2^31 - 1] or 0). shift >= 0: TFLM shifts left and its
 * rounding divide by 2^0 is the identity; shift < 0: the product is never INT32_MIN
 * (|srdhm(a, b)| <= 2^31 - 1 for b < 2^31), as tg_rdbpot_pos needs. */
static inline int32_t tg_requantize(int32_t acc, int32_t mult, int32_t shift)
{
    if (shift >= 0) {
        return tg_srdhm_nonneg(tg_shl_wrap(acc, shift), mult);
    }
    return tg_rdbpot_pos(tg_srdhm_nonneg(acc, mult), -shift);
}

static inline int32_t tg_clamp(int32_t x, int32_t lo, int32_t hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

/* One FC output: clamp(requantize(acc) + out_offset, lo, hi). The kernels pass their
 * parameters as locals, so that byte stores to the output (which may alias anything)
 * do not force them to be reloaded. */
static inline int8_t tg_fc_out(int32_t acc, int32_t mult, int32_t shift, int32_t out_offset,
                               int32_t lo, int32_t hi)
{
    return (int8_t)tg_clamp(tg_requantize(acc, mult, shift) + out_offset, lo, hi);
}

#endif /* TG_REQUANTIZE_H */
