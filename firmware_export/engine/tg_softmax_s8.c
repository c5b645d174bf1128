/* tinygru int8 engine: SOFTMAX, int8 in, int8 out with scale 1/256 and zero point -128
 * (see tinygru_kernels.h). */
#include "tinygru_kernels.h"

#include "tg_requantize.h"

/* x * 2^exponent saturated to int32, exponent in [1, 30]. */
static int32_t sat_shl(int32_t x, int32_t exponent)
{
    const int32_t threshold = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return tg_shl_wrap(x, exponent);
}

static int32_t rounding_half_sum(int32_t a, int32_t b)
{
    const int64_t sum = (int64_t)a + (int64_t)b;
    return (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
}

/* 1 / (1 + a) for a in [0, 1), Q0.31: three Newton-Raphson steps in Q2.29. */
static int32_t one_over_one_plus_x(int32_t a)
{
    const int32_t half_den = rounding_half_sum(a, INT32_MAX);
    int32_t x = (int32_t)(1515870810u + (uint32_t)tg_srdhm(half_den, -1010580540));
    for (int i = 0; i < 3; ++i) {
        const int32_t one_minus = (int32_t)((1u << 29) - (uint32_t)tg_srdhm(half_den, x));
        x = (int32_t)((uint32_t)x + (uint32_t)sat_shl(tg_srdhm(x, one_minus), 2));
    }
    return sat_shl(x, 1);
}

static int32_t count_leading_zeros(uint32_t x)
{
    if (x == 0u) {
        return 32;
    }
#if defined(__GNUC__)
    return (int32_t)__builtin_clz(x); /* CLZ on Armv7-M; x != 0 here */
#else
    int32_t n = 0;
    while ((x & 0x80000000u) == 0u) {
        x <<= 1;
        ++n;
    }
    return n;
#endif
}

void tg_softmax_s8(const int32_t exp_table[256], const int8_t *input, int8_t *output, int32_t rows,
                   int32_t depth)
{
    for (int32_t r = 0; r < rows; ++r) {
        const int8_t *x = input + r * depth;
        int8_t *y = output + r * depth;
        int32_t max = -128;
        for (int32_t c = 0; c < depth; ++c) {
            max = x[c] > max ? x[c] : max;
        }
        uint32_t sum = 0u; /* Q12.19, wraps like TFLM's int32 sum */
        for (int32_t c = 0; c < depth; ++c) {
            sum += (uint32_t)tg_rdbpot(exp_table[max - x[c]], 12);
        }
        const int32_t headroom = count_leading_zeros(sum);
        const int32_t bits_over_unit = 12 - headroom;
        const uint32_t shifted = headroom < 32 ? sum << headroom : 0u;
        const int32_t recip = one_over_one_plus_x((int32_t)(shifted - 0x80000000u));
        const int32_t exponent = bits_over_unit + 31 - 8;
        for (int32_t c = 0; c < depth; ++c) {
            const int32_t e = exp_table[max - x[c]];
            const int32_t out = tg_rdbpot(tg_srdhm(recip, e), exponent) - 128;
            y[c] = (int8_t)tg_clamp(out, -128, 127);
        }
    }
}
