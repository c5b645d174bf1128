/* tinygru int8 engine: ADD and SUB, one element-wise body (see tinygru_kernels.h).
 *
 * TFLM's scheme: each input, offset and shifted left by 20, is requantized on its own,
 * s_i = rdbpot(srdhm((x_i + off_i) 2^20, mult_i), -shift_i); the sum or difference
 * S = s1 +- s2 is requantized to the output, offset and clamped. The input with the
 * larger scale always has multiplier 2^30 and shift 0 (real multiplier 1/2): its s is
 * exactly (x + off) 2^19. The fast loops below use that and tg_rq_apply (tg_requantize.h)
 * for the other input and for the output; they work on 2 S, which the output's
 * tg_rq_apply takes as is (|S| < 2^28). Any other parameters, a fused activation (a
 * clamp narrower than int8) or a broadcast input (stride 0) take the general loop, which
 * follows TFLM's arithmetic step by step. */
#include "tinygru_kernels.h"

#include "tg_requantize.h"

#define TG_HALF (1 << 30) /* the multiplier of a real 1/2 */

/* out[i] = in1[i * in1_stride] OP in2[i * in2_stride] in real values, OP being + or -,
 * TFLM's arithmetic step by step. A macro rather than a function with an add/subtract
 * flag: each kernel compiles to exactly the code of a body of its own. */
#define TG_ADDSUB_GENERAL(OP)                                                                      \
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

static inline int input_is_exact(int32_t mult, int32_t shift)
{
    return mult == TG_HALF && shift == 0;
}

static inline int input_is_general(int32_t mult, int32_t shift)
{
    return mult >= TG_HALF && tg_rq_fits(shift, 0);
}

/* Which fast loop applies: 1 input 1 exact, input 2 general; 2 the other way round; 3 both
 * exact; 0 none (the general loop). */
static inline int tg_addsub_kind(const tg_addsub_params *p)
{
    const int e1 = input_is_exact(p->input1_multiplier, p->input1_shift);
    const int e2 = input_is_exact(p->input2_multiplier, p->input2_shift);
    if (p->left_shift != 20 || p->output_multiplier < TG_HALF || p->act_min != -128 ||
        p->act_max != 127 || !tg_rq_fits(p->output_shift, p->output_offset)) {
        return 0;
    }
    if (e1 && e2) {
        return 3;
    }
    if (e1 && input_is_general(p->input2_multiplier, p->input2_shift)) {
        return 1;
    }
    if (e2 && input_is_general(p->input1_multiplier, p->input1_shift)) {
        return 2;
    }
    return 0;
}

/* The output's requantization parameters, as locals (a byte store to out may alias
 * anything: fields read through p would be reloaded every element). */
#define TG_ADDSUB_OUT_PARAMS                                                                       \
    const int32_t o_mult = p->output_multiplier;                                                   \
    const int32_t o_add = tg_rq_add(p->output_shift, p->output_offset);                            \
    const int32_t o_e = -p->output_shift

/* Every loop has tg_add_s8's signature (each is called once, and inlined). */
#define TG_ADDSUB_ARGS                                                                             \
    const tg_addsub_params *p, const int8_t *in1, int32_t in1_stride, const int8_t *in2,           \
        int32_t in2_stride, int8_t *out, int32_t size

/* One input exact, the other general (which one, p says): with e2 = (xe + off) 2^20 and
 * g2 = 2 s(xg), s = rdbpot(srdhm((xg + off) 2^20, mult), e), 2 S = EXPR. */
#define TG_ADDSUB_ONE_EXACT(NAME, EXPR)                                                            \
    static void NAME(TG_ADDSUB_ARGS)                                                               \
    {                                                                                              \
        const int g2_in = input_is_exact(p->input1_multiplier, p->input1_shift);                   \
        const int8_t *xe = g2_in ? in1 : in2;                                                      \
        const int8_t *xg = g2_in ? in2 : in1;                                                      \
        const int32_t e_off20 = (g2_in ? p->input1_offset : p->input2_offset) * (1 << 20);         \
        const int32_t g_off21 = (g2_in ? p->input2_offset : p->input1_offset) * (1 << 21);         \
        const int32_t g_mult = g2_in ? p->input2_multiplier : p->input1_multiplier;                \
        const int32_t g_shift = g2_in ? p->input2_shift : p->input1_shift;                         \
        const int32_t g_add = tg_rq_add(g_shift, 0);                                               \
        const int32_t g_e = -g_shift;                                                              \
        TG_ADDSUB_OUT_PARAMS;                                                                      \
        (void)in1_stride;                                                                          \
        (void)in2_stride;                                                                          \
        for (int32_t i = 0; i < size; ++i) {                                                       \
            const int32_t e2 = e_off20 + (int32_t)xe[i] * (1 << 20);                               \
            const int32_t g2 = tg_rq_apply(g_off21 + xg[i] * (1 << 21), g_mult, g_add, g_e) * 2;   \
            out[i] = (int8_t)tg_sat8(tg_rq_apply(EXPR, o_mult, o_add, o_e));                       \
        }                                                                                          \
    }

/* Both inputs exact: 2 S = ((x1 + off1) OP (x2 + off2)) 2^20. */
#define TG_ADDSUB_BOTH_EXACT(NAME, OP)                                                             \
    static void NAME(TG_ADDSUB_ARGS)                                                               \
    {                                                                                              \
        const int32_t off20 = (p->input1_offset OP p->input2_offset) * (1 << 20);                  \
        TG_ADDSUB_OUT_PARAMS;                                                                      \
        (void)in1_stride;                                                                          \
        (void)in2_stride;                                                                          \
        for (int32_t i = 0; i < size; ++i) {                                                       \
            const int32_t s2 = off20 + ((int32_t)in1[i] OP in2[i]) * (1 << 20);                    \
            out[i] = (int8_t)tg_sat8(tg_rq_apply(s2, o_mult, o_add, o_e));                         \
        }                                                                                          \
    }

/* TFLM's arithmetic step by step (any parameters and strides). */
#define TG_ADDSUB_GENERAL_FN(NAME, OP)                                                             \
    static void NAME(TG_ADDSUB_ARGS)                                                               \
    {                                                                                              \
        TG_ADDSUB_GENERAL(OP)                                                                      \
    }

TG_ADDSUB_ONE_EXACT(tg_add_one_exact, e2 + g2)

TG_ADDSUB_ONE_EXACT(tg_sub_exact_general, e2 - g2)

TG_ADDSUB_ONE_EXACT(tg_sub_general_exact, g2 - e2)

TG_ADDSUB_BOTH_EXACT(tg_add_both_exact, +)

TG_ADDSUB_BOTH_EXACT(tg_sub_both_exact, -)

TG_ADDSUB_GENERAL_FN(tg_add_general, +)

TG_ADDSUB_GENERAL_FN(tg_sub_general, -)

void tg_add_s8(const tg_addsub_params *p, const int8_t *in1, int32_t in1_stride, const int8_t *in2,
               int32_t in2_stride, int8_t *out, int32_t size)
{
    const int kind = in1_stride == 1 && in2_stride == 1 ? tg_addsub_kind(p) : 0;
    if (kind == 3) {
        tg_add_both_exact(p, in1, in1_stride, in2, in2_stride, out, size);
    } else if (kind != 0) {
        tg_add_one_exact(p, in1, in1_stride, in2, in2_stride, out, size);
    } else {
        tg_add_general(p, in1, in1_stride, in2, in2_stride, out, size);
    }
}

void tg_sub_s8(const tg_addsub_params *p, const int8_t *in1, int32_t in1_stride, const int8_t *in2,
               int32_t in2_stride, int8_t *out, int32_t size)
{
    const int kind = in1_stride == 1 && in2_stride == 1 ? tg_addsub_kind(p) : 0;
    if (kind == 3) {
        tg_sub_both_exact(p, in1, in1_stride, in2, in2_stride, out, size);
    } else if (kind == 1) {
        tg_sub_exact_general(p, in1, in1_stride, in2, in2_stride, out, size);
    } else if (kind == 2) {
        tg_sub_general_exact(p, in1, in1_stride, in2, in2_stride, out, size);
    } else {
        tg_sub_general(p, in1, in1_stride, in2, in2_stride, out, size);
    }
}
