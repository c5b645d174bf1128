/* tinygru int8 engine: ADD and SUB, one element-wise body (see tinygru_kernels.h). */
#include "tinygru_kernels.h"

#include "tg_requantize.h"

/* out[i] = in1[i * in1_stride] OP in2[i * in2_stride] in real values, OP being + or -:
 * each input offset, shifted left by left_shift and requantized on its own, then the sum
 * or difference requantized to the output, offset and clamped (TFLM's scheme). A macro
 * rather than a function with an add/subtract flag: each kernel compiles to exactly the
 * code of a body of its own, at every optimization level. */
#define TG_ADDSUB_S8(OP)                                                                           \
    for (int32_t i = 0; i < size; ++i) {                                                           \
        const int32_t a =                                                                          \
            tg_shl_wrap((int32_t)in1[i * in1_stride] + p->input1_offset, p->left_shift);           \
        const int32_t b =                                                                          \
            tg_shl_wrap((int32_t)in2[i * in2_stride] + p->input2_offset, p->left_shift);           \
        const int32_t sa = tg_requantize(a, p->input1_multiplier, p->input1_shift);                \
        const int32_t sb = tg_requantize(b, p->input2_multiplier, p->input2_shift);                \
        const int32_t y =                                                                          \
            tg_requantize(sa OP sb, p->output_multiplier, p->output_shift) + p->output_offset;     \
        out[i] = (int8_t)tg_clamp(y, p->act_min, p->act_max);                                      \
    }

void tg_add_s8(const tg_addsub_params *p, const int8_t *in1, int32_t in1_stride, const int8_t *in2,
               int32_t in2_stride, int8_t *out, int32_t size)
{
    TG_ADDSUB_S8(+)
}

void tg_sub_s8(const tg_addsub_params *p, const int8_t *in1, int32_t in1_stride, const int8_t *in2,
               int32_t in2_stride, int8_t *out, int32_t size)
{
    TG_ADDSUB_S8(-)
}
