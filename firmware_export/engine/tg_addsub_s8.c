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

/* The parameters of a fast loop, read once into locals (a byte store to out may alias
 * anything, so fields read through p would be reloaded every element). */
typedef struct {
    int32_t g_off21; /* (general input's offset) 2^21 */
    int32_t g_mult, g_add, g_e;
    int32_t e_off20; /* (exact input's offset) 2^20; both exact: (off1 OP off2) 2^20 */
    int32_t o_mult, o_add, o_e;
} tg_addsub_fast;

/* 2 s of the general input x: s = rdbpot(srdhm((x + off) 2^20, mult), e). */
static inline int32_t tg_general_2s(const tg_addsub_fast *f, int32_t x)
{
    const int32_t v2 = f->g_off21 + x * (1 << 21);
    return tg_rq_apply(v2, f->g_mult, f->g_add, f->g_e) * 2;
}

static inline int8_t tg_addsub_out(const tg_addsub_fast *f, int32_t s2)
{
    return (int8_t)tg_sat8(tg_rq_apply(s2, f->o_mult, f->o_add, f->o_e));
}

/* One input exact (xe), the other general (xg): 2 S = EXPR of e2 = (xe + off) 2^20 and
 * g2 = 2 s(xg). */
#define TG_ADDSUB_ONE_EXACT(EXPR)                                                                  \
    for (int32_t i = 0; i < size; ++i) {                                                           \
        const int32_t e2 = f.e_off20 + (int32_t)xe[i] * (1 << 20);                                 \
        const int32_t g2 = tg_general_2s(&f, xg[i]);                                               \
        out[i] = tg_addsub_out(&f, EXPR);                                                          \
    }

static int input_is_exact(int32_t mult, int32_t shift)
{
    return mult == TG_HALF && shift == 0;
}

static int input_is_general(int32_t mult, int32_t shift)
{
    return mult >= TG_HALF && tg_rq_fits(shift, 0);
}

/* 1 when the fast loops apply (the caller then runs one); sets f and which input is exact:
 * *exact = 1 or 2, 3 for both. */
static int tg_addsub_setup(const tg_addsub_params *p, int32_t sign, tg_addsub_fast *f, int *exact)
{
    const int e1 = input_is_exact(p->input1_multiplier, p->input1_shift);
    const int e2 = input_is_exact(p->input2_multiplier, p->input2_shift);
    if (p->left_shift != 20 || p->output_multiplier < TG_HALF || p->act_min != -128 ||
        p->act_max != 127 || !tg_rq_fits(p->output_shift, p->output_offset)) {
        return 0;
    }
    f->o_mult = p->output_multiplier;
    f->o_add = tg_rq_add(p->output_shift, p->output_offset);
    f->o_e = -p->output_shift;
    if (e1 && e2) {
        *exact = 3;
        f->e_off20 = (p->input1_offset + sign * p->input2_offset) * (1 << 20);
        return 1;
    }
    const int32_t g_mult = e1 ? p->input2_multiplier : p->input1_multiplier;
    const int32_t g_shift = e1 ? p->input2_shift : p->input1_shift;
    if (!(e1 || e2) || !input_is_general(g_mult, g_shift)) {
        return 0;
    }
    *exact = e1 ? 1 : 2;
    f->g_off21 = (e1 ? p->input2_offset : p->input1_offset) * (1 << 21);
    f->g_mult = g_mult;
    f->g_add = tg_rq_add(g_shift, 0);
    f->g_e = -g_shift;
    f->e_off20 = (e1 ? p->input1_offset : p->input2_offset) * (1 << 20);
    return 1;
}

void tg_add_s8(const tg_addsub_params *p, const int8_t *in1, int32_t in1_stride, const int8_t *in2,
               int32_t in2_stride, int8_t *out, int32_t size)
{
    tg_addsub_fast f;
    int exact;
    if (in1_stride != 1 || in2_stride != 1 || !tg_addsub_setup(p, 1, &f, &exact)) {
        TG_ADDSUB_GENERAL(+)
        return;
    }
    if (exact == 3) {
        for (int32_t i = 0; i < size; ++i) {
            out[i] = tg_addsub_out(&f, f.e_off20 + ((int32_t)in1[i] + in2[i]) * (1 << 20));
        }
        return;
    }
    const int8_t *xe = exact == 1 ? in1 : in2;
    const int8_t *xg = exact == 1 ? in2 : in1;
    TG_ADDSUB_ONE_EXACT(e2 + g2)
}

void tg_sub_s8(const tg_addsub_params *p, const int8_t *in1, int32_t in1_stride, const int8_t *in2,
               int32_t in2_stride, int8_t *out, int32_t size)
{
    tg_addsub_fast f;
    int exact;
    if (in1_stride != 1 || in2_stride != 1 || !tg_addsub_setup(p, -1, &f, &exact)) {
        TG_ADDSUB_GENERAL(-)
        return;
    }
    if (exact == 3) {
        for (int32_t i = 0; i < size; ++i) {
            out[i] = tg_addsub_out(&f, f.e_off20 + ((int32_t)in1[i] - in2[i]) * (1 << 20));
        }
        return;
    }
    const int8_t *xe = exact == 1 ? in1 : in2;
    const int8_t *xg = exact == 1 ? in2 : in1;
    if (exact == 1) {
        TG_ADDSUB_ONE_EXACT(e2 - g2)
    } else {
        TG_ADDSUB_ONE_EXACT(g2 - e2)
    }
}
