/* tinygru int8 engine: FULLY_CONNECTED over block-sparse weights (see tinygru.h). */
#include "tinygru.h"

#include "tg_dsp.h"
#include "tg_requantize.h"

void tg_fully_connected_sparse_s8(const tg_fc_params *p, const int8_t *input,
                                  const tg_fc_sparse *w, const int32_t *bias,
                                  const int32_t *mult, const int32_t *shift, int8_t *output)
{
    const int32_t off = p->input_offset;
#if defined(__ARM_FEATURE_DSP)
    const int32_t off2 = tg_pack_s16x2(off); /* (off, off): see tg_fully_connected_s8 */
#endif
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * p->cols;
        int8_t *y = output + b * p->rows;
        const uint8_t *idx = w->group_index;
        const int8_t *v = w->values;
        for (int32_t r = 0; r < p->rows; ++r) {
            int32_t acc = bias != 0 ? bias[r] : 0;
            const int32_t n = (int32_t)w->group_count[r];
            for (int32_t g = 0; g < n; ++g) {
                const int32_t c = 4 * (int32_t)idx[g];
                if (c + 4 <= p->cols) {
#if defined(__ARM_FEATURE_DSP)
                    const int32_t xw = tg_load_s8x4(x + c);
                    const int32_t vw = tg_load_s8x4(v);
                    acc = __smlad(tg_sxtb16_ror8(vw), tg_sxtab16_ror8(off2, xw), acc);
                    acc = __smlad(__sxtb16(vw), __sxtab16(off2, xw), acc);
#else
                    acc += (int32_t)v[0] * ((int32_t)x[c] + off);
                    acc += (int32_t)v[1] * ((int32_t)x[c + 1] + off);
                    acc += (int32_t)v[2] * ((int32_t)x[c + 2] + off);
                    acc += (int32_t)v[3] * ((int32_t)x[c + 3] + off);
#endif
                } else {
                    for (int32_t j = 0; c + j < p->cols; ++j) {
                        acc += (int32_t)v[j] * ((int32_t)x[c + j] + off);
                    }
                }
                v += 4;
            }
            idx += n;
            const int32_t out = tg_requantize(acc, mult[r], shift[r]) + p->output_offset;
            y[r] = (int8_t)tg_clamp(out, p->act_min, p->act_max);
        }
    }
}

void tg_fc_layer_run(const tg_fc_layer *l, const int8_t *x, int8_t *y)
{
    if (l->sparse != 0) {
        tg_fully_connected_sparse_s8(&l->p, x, l->sparse, l->bias, l->mult, l->shift, y);
    } else {
        tg_fully_connected_s8(&l->p, x, l->weights, l->bias, l->mult, l->shift, y);
    }
}
