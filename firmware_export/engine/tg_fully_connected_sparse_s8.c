/* tinygru int8 engine: FULLY_CONNECTED over block-sparse weights (see tinygru.h). */
#include "tinygru.h"

#include "tg_dsp.h"
#include "tg_requantize.h"

/* One output from the row's accumulator: one-step requantization (rq) when given, else
 * TFLM's two steps (mult, shift). */
static inline int8_t tg_sparse_out(int32_t acc, const tg_fc_rq *rq, const int32_t *mult,
                                   const int32_t *shift, int32_t r, int32_t out_off, int32_t lo,
                                   int32_t hi)
{
    if (rq != 0) {
        const int32_t v = tg_sat8(tg_rq_apply(acc * 2, rq[r].mult, rq[r].add, rq[r].shift));
        return (int8_t)tg_clamp(v, lo, hi);
    }
    return tg_fc_out(acc, mult[r], shift[r], out_off, lo, hi);
}

void tg_fully_connected_sparse_s8(const tg_fc_params *p, const int8_t *input, const tg_fc_sparse *w,
                                  const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                  const tg_fc_rq *rq, int8_t *output)
{
    const int32_t rows = p->rows;
    const int32_t cols = p->cols;
    const int32_t off = p->input_offset;
    const int32_t out_off = p->output_offset;
    const int32_t lo = p->act_min;
    const int32_t hi = p->act_max;
    const int32_t batches = p->batches;
    const uint8_t *const count = w->group_count;
    /* Group indices ascend within a row, so only a row's last group can run past the
     * last column (when cols % 4 != 0): it is the one with index cols / 4. */
    const int32_t short_group = (cols & 3) != 0 ? cols >> 2 : -1;
#if TG_USE_DSP
    const int32_t off2 = tg_pack_s16x2(off); /* (off, off): see tg_fully_connected_s8 */
#endif
    for (int32_t b = 0; b < batches; ++b) {
        const int8_t *x = input + b * cols;
        int8_t *y = output + b * rows;
        const uint8_t *idx = w->group_index;
        const int8_t *v = w->values;
        for (int32_t r = 0; r < rows; ++r) {
            int32_t acc = bias != 0 ? bias[r] : 0;
            const int32_t n = (int32_t)count[r];
            const int32_t full = n > 0 && (int32_t)idx[n - 1] == short_group ? n - 1 : n;
            const uint8_t *const idx_end = idx + full;
            for (; idx != idx_end; ++idx) {
                const int8_t *xc = x + 4 * (int32_t)*idx;
#if TG_USE_DSP
                const int32_t xw = tg_load_s8x4(xc);
                const int32_t vw = tg_load_s8x4(v);
                acc = __smlad(tg_sxtb16_ror8(vw), tg_sxtab16_ror8(off2, xw), acc);
                acc = __smlad(__sxtb16(vw), __sxtab16(off2, xw), acc);
#else
                acc += (int32_t)v[0] * ((int32_t)xc[0] + off);
                acc += (int32_t)v[1] * ((int32_t)xc[1] + off);
                acc += (int32_t)v[2] * ((int32_t)xc[2] + off);
                acc += (int32_t)v[3] * ((int32_t)xc[3] + off);
#endif
                v += 4;
            }
            if (full != n) { /* the short last group: entries past the last column are 0 */
                const int32_t c = 4 * (int32_t)*idx++;
                for (int32_t j = 0; c + j < cols; ++j) {
                    acc += (int32_t)v[j] * ((int32_t)x[c + j] + off);
                }
                v += 4;
            }
            y[r] = tg_sparse_out(acc, rq, mult, shift, r, out_off, lo, hi);
        }
    }
}
