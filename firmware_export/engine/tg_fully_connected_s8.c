/* tinygru int8 engine: FULLY_CONNECTED (see tinygru_kernels.h). */
#include "tinygru_kernels.h"

#include "tg_dsp.h"
#include "tg_requantize.h"

static inline int8_t tg_fc_out(const tg_fc_params *p, int32_t acc, int32_t mult, int32_t shift)
{
    const int32_t out = tg_requantize(acc, mult, shift) + p->output_offset;
    return (int8_t)tg_clamp(out, p->act_min, p->act_max);
}

void tg_fully_connected_s8(const tg_fc_params *p, const int8_t *input, const int8_t *weights,
                           const int32_t *bias, const int32_t *mult, const int32_t *shift,
                           int8_t *output)
{
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * p->cols;
        int8_t *y = output + b * p->rows;
        int32_t r = 0;
#if defined(__ARM_FEATURE_DSP)
        /* Four rows at a time share the input, sign-extended once per 4 columns:
         * x02 = (x0 + off, x2 + off), x13 = (x1 + off, x3 + off) as int16 pairs
         * (|x + off| <= 255), and each weight word gives two SMLADs. The int32
         * sums are those of the C loop below, in another order. */
        const int32_t cols = p->cols;
        const int32_t off = p->input_offset;
        const int32_t off2 = tg_pack_s16x2(off);
        const int32_t cols4 = cols & ~(int32_t)3;
        for (; r + 4 <= p->rows; r += 4) {
            const int8_t *w0 = weights + r * cols;
            const int8_t *w1 = w0 + cols;
            const int8_t *w2 = w1 + cols;
            const int8_t *w3 = w2 + cols;
            int32_t a0 = bias != 0 ? bias[r] : 0;
            int32_t a1 = bias != 0 ? bias[r + 1] : 0;
            int32_t a2 = bias != 0 ? bias[r + 2] : 0;
            int32_t a3 = bias != 0 ? bias[r + 3] : 0;
            int32_t c = 0;
            for (; c < cols4; c += 4) {
                const int32_t xw = tg_load_s8x4(x + c);
                const int32_t x02 = __sxtab16(off2, xw);
                const int32_t x13 = tg_sxtab16_ror8(off2, xw);
                int32_t w = tg_load_s8x4(w0 + c);
                a0 = __smlad(__sxtb16(w), x02, __smlad(tg_sxtb16_ror8(w), x13, a0));
                w = tg_load_s8x4(w1 + c);
                a1 = __smlad(__sxtb16(w), x02, __smlad(tg_sxtb16_ror8(w), x13, a1));
                w = tg_load_s8x4(w2 + c);
                a2 = __smlad(__sxtb16(w), x02, __smlad(tg_sxtb16_ror8(w), x13, a2));
                w = tg_load_s8x4(w3 + c);
                a3 = __smlad(__sxtb16(w), x02, __smlad(tg_sxtb16_ror8(w), x13, a3));
            }
            for (; c < cols; ++c) {
                const int32_t xc = (int32_t)x[c] + off;
                a0 += (int32_t)w0[c] * xc;
                a1 += (int32_t)w1[c] * xc;
                a2 += (int32_t)w2[c] * xc;
                a3 += (int32_t)w3[c] * xc;
            }
            y[r] = tg_fc_out(p, a0, mult[r], shift[r]);
            y[r + 1] = tg_fc_out(p, a1, mult[r + 1], shift[r + 1]);
            y[r + 2] = tg_fc_out(p, a2, mult[r + 2], shift[r + 2]);
            y[r + 3] = tg_fc_out(p, a3, mult[r + 3], shift[r + 3]);
        }
#endif
        for (; r < p->rows; ++r) {
            const int8_t *w = weights + r * p->cols;
            int32_t acc = bias != 0 ? bias[r] : 0;
            for (int32_t c = 0; c < p->cols; ++c) {
                acc += (int32_t)w[c] * ((int32_t)x[c] + p->input_offset);
            }
            y[r] = tg_fc_out(p, acc, mult[r], shift[r]);
        }
    }
}
