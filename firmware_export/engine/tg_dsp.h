/**
 * @file tg_dsp.h
 * @brief Helpers for the Arm DSP (SIMD32) branches of the int8 kernels.
 *
 * Only used under `#if TG_USE_DSP` (tinygru_kernels.h); the portable C path of every
 * kernel needs nothing from here.
 * A 32-bit word holds four int8 values b0..b3 (b0 in the low byte); "02" names the
 * int16 pair (b0, b2), "13" the pair (b1, b3).
 */
#ifndef TG_DSP_H
#define TG_DSP_H

#include "tinygru_kernels.h"

#if TG_USE_DSP

#include <arm_acle.h>
#include <stdint.h>
#include <string.h>

/** Four int8 values from any address (the core allows unaligned LDR). */
static inline int32_t tg_load_s8x4(const int8_t *p)
{
    int32_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

/** Bytes 1 and 3 sign-extended to halfwords: SXTB16 with the rotate folded in. */
static inline int32_t tg_sxtb16_ror8(int32_t w)
{
#if defined(__GNUC__)
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(w));
    return r;
#else
    const uint32_t u = (uint32_t)w;
    return __sxtb16((int32_t)((u >> 8) | (u << 24)));
#endif
}

/** Halfword pair a plus bytes 1 and 3 of w, sign-extended: SXTAB16 with ror #8. */
static inline int32_t tg_sxtab16_ror8(int32_t a, int32_t w)
{
#if defined(__GNUC__)
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(w));
    return r;
#else
    const uint32_t u = (uint32_t)w;
    return __sxtab16(a, (int32_t)((u >> 8) | (u << 24)));
#endif
}

/** The same int16 value in both halfwords. Range of v: {-32768, 32767}. */
static inline int32_t tg_pack_s16x2(int32_t v)
{
    const uint32_t h = (uint32_t)v & 0xFFFFu;
    return (int32_t)(h | (h << 16));
}

#endif /* TG_USE_DSP */

#endif /* TG_DSP_H */
