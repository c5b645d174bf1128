/* tinygru int8 engine: FULLY_CONNECTED (see tinygru_kernels.h). */
#include "tinygru_kernels.h"

#include "tg_dsp.h"
#include "tg_requantize.h"

#if TG_USE_DSP
/* 16 MACs per iteration over 4 rows: rows 0/1 at *w0 and *w0 + cols, rows 2/3 at
 * *w2 and *w2 + cols; input offset 0. Per input word x: x13 = (x1, x3), x02 =
 * (x0, x2) sign-extended; per weight word w of a row: a += w13 . x13 + w02 . x02
 * (two SMLADs). Advances *xp to x_end and *w0, *w2 by as many bytes. */
static inline void tg_fc_dsp_4rows(const int8_t **xp, const int8_t *x_end, const int8_t **w0,
                                   const int8_t **w2, int32_t cols, int32_t *a0, int32_t *a1,
                                   int32_t *a2, int32_t *a3)
{
#if defined(__GNUC__)
    const int8_t *x = *xp;
    const int8_t *p0 = *w0;
    const int8_t *p2 = *w2;
    int32_t s0 = *a0, s1 = *a1, s2 = *a2, s3 = *a3;
    int32_t x02, x13, t0, t1;
    __asm__ volatile(
        "1:\n\t"
        "ldr %[x02], [%[x]], #4\n\t"
        "sxtb16 %[x13], %[x02], ror #8\n\t"
        "sxtb16 %[x02], %[x02]\n\t"
        "ldr %[t0], [%[p0], %[cols]]\n\t"
        "sxtb16 %[t1], %[t0], ror #8\n\t"
        "smlad %[s1], %[t1], %[x13], %[s1]\n\t"
        "sxtb16 %[t0], %[t0]\n\t"
        "smlad %[s1], %[t0], %[x02], %[s1]\n\t"
        "ldr %[t0], [%[p0]], #4\n\t"
        "sxtb16 %[t1], %[t0], ror #8\n\t"
        "smlad %[s0], %[t1], %[x13], %[s0]\n\t"
        "sxtb16 %[t0], %[t0]\n\t"
        "smlad %[s0], %[t0], %[x02], %[s0]\n\t"
        "ldr %[t0], [%[p2], %[cols]]\n\t"
        "sxtb16 %[t1], %[t0], ror #8\n\t"
        "smlad %[s3], %[t1], %[x13], %[s3]\n\t"
        "sxtb16 %[t0], %[t0]\n\t"
        "smlad %[s3], %[t0], %[x02], %[s3]\n\t"
        "ldr %[t0], [%[p2]], #4\n\t"
        "sxtb16 %[t1], %[t0], ror #8\n\t"
        "smlad %[s2], %[t1], %[x13], %[s2]\n\t"
        "sxtb16 %[t0], %[t0]\n\t"
        "smlad %[s2], %[t0], %[x02], %[s2]\n\t"
        "cmp %[x], %[end]\n\t"
        "bne 1b"
        : [x] "+r"(x), [p0] "+r"(p0), [p2] "+r"(p2), [s0] "+r"(s0), [s1] "+r"(s1), [s2] "+r"(s2),
          [s3] "+r"(s3), [x02] "=&r"(x02), [x13] "=&r"(x13), [t0] "=&r"(t0), [t1] "=&r"(t1)
        : [end] "r"(x_end), [cols] "r"(cols)
        : "cc", "memory");
    *xp = x;
    *w0 = p0;
    *w2 = p2;
    *a0 = s0;
    *a1 = s1;
    *a2 = s2;
    *a3 = s3;
#else
    const int8_t *x = *xp;
    const int8_t *p0 = *w0;
    const int8_t *p2 = *w2;
    while (x != x_end) {
        const int32_t xw = tg_load_s8x4(x);
        const int32_t x02 = __sxtb16(xw);
        const int32_t x13 = tg_sxtb16_ror8(xw);
        int32_t w = tg_load_s8x4(p0);
        *a0 = __smlad(__sxtb16(w), x02, __smlad(tg_sxtb16_ror8(w), x13, *a0));
        w = tg_load_s8x4(p0 + cols);
        *a1 = __smlad(__sxtb16(w), x02, __smlad(tg_sxtb16_ror8(w), x13, *a1));
        w = tg_load_s8x4(p2);
        *a2 = __smlad(__sxtb16(w), x02, __smlad(tg_sxtb16_ror8(w), x13, *a2));
        w = tg_load_s8x4(p2 + cols);
        *a3 = __smlad(__sxtb16(w), x02, __smlad(tg_sxtb16_ror8(w), x13, *a3));
        x += 4;
        p0 += 4;
        p2 += 4;
    }
    *xp = x;
    *w0 = p0;
    *w2 = p2;
#endif
}
#endif

void tg_fully_connected_s8(const tg_fc_params *p, const int8_t *input, const int8_t *weights,
                           const int32_t *bias, const int32_t *mult, const int32_t *shift,
                           int8_t *output)
{
    const int32_t rows = p->rows;
    const int32_t cols = p->cols;
    const int32_t off = p->input_offset;
    const int32_t out_off = p->output_offset;
    const int32_t lo = p->act_min;
    const int32_t hi = p->act_max;
    const int32_t batches = p->batches;
    for (int32_t b = 0; b < batches; ++b) {
        const int8_t *x = input + b * cols;
        int8_t *y = output + b * rows;
        int32_t r = 0;
        /* Four rows at a time share each input value. The int32 sums are those of the
         * one-row loop at the end, in another order. */
        for (; r + 4 <= rows; r += 4) {
            const int8_t *w0 = weights + r * cols;
            const int8_t *w1 = w0 + cols;
            const int8_t *w2 = w1 + cols;
            const int8_t *w3 = w2 + cols;
            int32_t a0 = bias != 0 ? bias[r] : 0;
            int32_t a1 = bias != 0 ? bias[r + 1] : 0;
            int32_t a2 = bias != 0 ? bias[r + 2] : 0;
            int32_t a3 = bias != 0 ? bias[r + 3] : 0;
            const int8_t *xp = x;
#if TG_USE_DSP
            /* Sign-extended once per 4 columns: x02 = (x0 + off, x2 + off), x13 =
             * (x1 + off, x3 + off) as int16 pairs (|x + off| <= 255); each weight word
             * gives two SMLADs. With the input zero point folded into the bias
             * (off = 0, the exported layers) the loop is tg_fc_dsp_4rows: plain
             * SXTB16, 25 instructions per 16 MACs. */
            const int8_t *x_end = x + (cols & ~(int32_t)3);
            if (off == 0 && xp != x_end) {
                tg_fc_dsp_4rows(&xp, x_end, &w0, &w2, cols, &a0, &a1, &a2, &a3);
                w1 = w0 + cols;
                w3 = w2 + cols;
            } else {
                const int32_t off2 = tg_pack_s16x2(off);
                while (xp != x_end) {
                    const int32_t xw = tg_load_s8x4(xp);
                    const int32_t x02 = __sxtab16(off2, xw);
                    const int32_t x13 = tg_sxtab16_ror8(off2, xw);
                    xp += 4;
                    int32_t w = tg_load_s8x4(w0);
                    w0 += 4;
                    a0 = __smlad(__sxtb16(w), x02, __smlad(tg_sxtb16_ror8(w), x13, a0));
                    w = tg_load_s8x4(w1);
                    w1 += 4;
                    a1 = __smlad(__sxtb16(w), x02, __smlad(tg_sxtb16_ror8(w), x13, a1));
                    w = tg_load_s8x4(w2);
                    w2 += 4;
                    a2 = __smlad(__sxtb16(w), x02, __smlad(tg_sxtb16_ror8(w), x13, a2));
                    w = tg_load_s8x4(w3);
                    w3 += 4;
                    a3 = __smlad(__sxtb16(w), x02, __smlad(tg_sxtb16_ror8(w), x13, a3));
                }
            }
#endif
            for (const int8_t *end = x + cols; xp != end; ++xp) {
                const int32_t xc = (int32_t)*xp + off;
                a0 += (int32_t)*w0++ * xc;
                a1 += (int32_t)*w1++ * xc;
                a2 += (int32_t)*w2++ * xc;
                a3 += (int32_t)*w3++ * xc;
            }
            y[r] = tg_fc_out(a0, mult[r], shift[r], out_off, lo, hi);
            y[r + 1] = tg_fc_out(a1, mult[r + 1], shift[r + 1], out_off, lo, hi);
            y[r + 2] = tg_fc_out(a2, mult[r + 2], shift[r + 2], out_off, lo, hi);
            y[r + 3] = tg_fc_out(a3, mult[r + 3], shift[r + 3], out_off, lo, hi);
        }
        for (; r < rows; ++r) {
            const int8_t *w = weights + r * cols;
            int32_t acc = bias != 0 ? bias[r] : 0;
            for (int32_t c = 0; c < cols; ++c) {
                acc += (int32_t)w[c] * ((int32_t)x[c] + off);
            }
            y[r] = tg_fc_out(acc, mult[r], shift[r], out_off, lo, hi);
        }
    }
}
