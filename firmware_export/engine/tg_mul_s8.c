/* tinygru int8 engine: MUL (see tinygru_kernels.h).
 *
 * y = clamp(rdbpot(srdhm((in1 + off1) (in2 + off2), mult), -shift) + out_offset). The
 * product of two offset int8 values has |v| <= 2^16, so the fast loop requantizes it
 * with tg_rq_apply (tg_requantize.h) when the shift is in [-30, -1] and the clamp is the
 * whole int8 range (no fused activation); anything else, or a broadcast input (stride 0),
 * takes the general loop. */
#include "tinygru_kernels.h"

#include "tg_requantize.h"

void tg_mul_s8(const tg_mul_params *p, const int8_t *in1, int32_t in1_stride, const int8_t *in2,
               int32_t in2_stride, int8_t *out, int32_t size)
{
    const int32_t off1 = p->input1_offset;
    const int32_t off2 = p->input2_offset;
    const int32_t mult = p->output_multiplier;
    if (in1_stride == 1 && in2_stride == 1 && p->act_min == -128 && p->act_max == 127 &&
        mult >= 0 && tg_rq_fits(p->output_shift, p->output_offset)) {
        const int32_t off1x2 = off1 * 2;
        const int32_t add = tg_rq_add(p->output_shift, p->output_offset);
        const int32_t e = -p->output_shift;
        for (int32_t i = 0; i < size; ++i) {
            const int32_t v2 = (off1x2 + (int32_t)in1[i] * 2) * ((int32_t)in2[i] + off2);
            out[i] = (int8_t)tg_sat8(tg_rq_apply(v2, mult, add, e));
        }
        return;
    }
    for (int32_t i = 0; i < size; ++i) {
        const int32_t a = (int32_t)in1[i * in1_stride] + off1;
        const int32_t b = (int32_t)in2[i * in2_stride] + off2;
        const int32_t y = tg_requantize(a * b, mult, p->output_shift) + p->output_offset;
        out[i] = (int8_t)tg_clamp(y, p->act_min, p->act_max);
    }
}
