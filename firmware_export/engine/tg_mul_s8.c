/* tinygru int8 engine: MUL (see tinygru_kernels.h). */
#include "tinygru_kernels.h"

#include "tg_requantize.h"

void tg_mul_s8(const tg_mul_params *p, const int8_t *in1, int32_t in1_stride, const int8_t *in2,
               int32_t in2_stride, int8_t *out, int32_t size)
{
    for (int32_t i = 0; i < size; ++i) {
        const int32_t a = (int32_t)in1[i * in1_stride] + p->input1_offset;
        const int32_t b = (int32_t)in2[i * in2_stride] + p->input2_offset;
        const int32_t y =
            tg_requantize(a * b, p->output_multiplier, p->output_shift) + p->output_offset;
        out[i] = (int8_t)tg_clamp(y, p->act_min, p->act_max);
    }
}
