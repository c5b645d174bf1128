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

/* MultiplyByQuantizedMultiplier: acc * mult * 2^(shift - 31), double rounding. */
static inline int32_t tg_requantize(int32_t acc, int32_t mult, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return tg_rdbpot(tg_srdhm(tg_shl_wrap(acc, left), mult), right);
}

static inline int32_t tg_clamp(int32_t x, int32_t lo, int32_t hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

#endif /* TG_REQUANTIZE_H */
