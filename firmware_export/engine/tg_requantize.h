/* tinygru int8 engine: fixed-point helpers shared by the kernels.
 * Semantics are those of the pinned TFLM build (double rounding); the API is
 * documented in tinygru_kernels.h. */
#ifndef TG_REQUANTIZE_H
#define TG_REQUANTIZE_H

#include <stdint.h>

#include "tg_dsp.h"

/* A function kept out of line, so that its frame is not added to its caller's (the stack
 * of a step is the sum of the frames along its deepest call path). */
#if defined(__GNUC__) && !defined(__clang__)
#define TG_NOINLINE __attribute__((noinline, noclone))
#elif defined(__GNUC__)
#define TG_NOINLINE __attribute__((noinline))
#else
#define TG_NOINLINE
#endif

/* A function inlined even at -Os (one frame for the caller and it). */
#if defined(__GNUC__)
#define TG_INLINE inline __attribute__((always_inline))
#else
#define TG_INLINE inline
#endif

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

/* acc + floor((a b + 2^31) / 2^32): the rounded high word of a product, added to acc
 * (SMMLAR on cores with the DSP extension, SMLAL from a preset low word elsewhere).
 * With a = 2 x, |x| < 2^30, m >= 0: tg_srdhm_nonneg(x, m) + acc, since
 * floor((2 x m + 2^31) / 2^32) = floor((x m + 2^30) / 2^31). */
static inline int32_t tg_smmlar(int32_t a, int32_t b, int32_t acc)
{
#if TG_USE_DSP && defined(__GNUC__)
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
#else
    const int64_t preset = (int64_t)(((uint64_t)(uint32_t)acc << 32) | 0x80000000u);
    return (int32_t)(((int64_t)a * b + preset) >> 32);
#endif
}

/* The requantization of the element-wise kernels, one rounding step per line:
 *   q = tg_srdhm_nonneg(v, mult) + add    (tg_smmlar(2 v, mult, add); |v| < 2^30)
 *   y = (q + (v < 0 ? -1 : 0)) >> e       (arithmetic shift, e = -shift)
 * with add = 2^(e-1) + zero_point 2^e equals tg_rdbpot_pos(tg_srdhm_nonneg(v, mult), e) +
 * zero_point. Why: for e >= 1, tg_rdbpot_pos(p, e) = floor((p + 2^(e-1) - [p < 0]) / 2^e),
 * and a multiple of 2^e (zero_point 2^e) moves out of the floor. The kernels test v < 0
 * rather than p < 0, which differ only when p = 0 and v < 0 (v = -1, mult = 2^30); then
 * floor((2^(e-1) - 1) / 2^e) = 0 = floor(2^(e-1) / 2^e) and the result is the same.
 * mult = 0 gives p = 0 and y = zero_point likewise. tg_rq_fits(): the form applies to
 * shift in [-22, -1] and zero_point in [-128, 127]; then |add| < 2^30 and |q| < 2^31.
 * tg_rq_add(): the add of such a pair. */
static inline int tg_rq_fits(int32_t shift, int32_t zero_point)
{
    return shift <= -1 && shift >= -22 && zero_point >= -128 && zero_point <= 127;
}

static inline int32_t tg_rq_add(int32_t shift, int32_t zero_point)
{
    return (1 << (-shift - 1)) + zero_point * (1 << -shift);
}

static inline int32_t tg_rq_apply(int32_t v2, int32_t mult, int32_t add, int32_t e)
{
    return (tg_smmlar(v2, mult, add) + (v2 >> 31)) >> e;
}

static inline int32_t tg_clamp(int32_t x, int32_t lo, int32_t hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

/* clamp(x, -128, 127): one SSAT where the core has it. */
static inline int32_t tg_sat8(int32_t x)
{
#if defined(__ARM_FEATURE_SAT) && defined(__GNUC__)
    int32_t r;
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(x));
    return r;
#else
    return tg_clamp(x, -128, 127);
#endif
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
