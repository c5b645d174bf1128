/* tinygru int8 engine: FULLY_CONNECTED (see tinygru_kernels.h). */
#include "tinygru_kernels.h"

#include "tg_requantize.h"

void tg_fully_connected_s8(const tg_fc_params *p, const int8_t *input, const int8_t *weights,
                           const int32_t *bias, const int32_t *mult, const int32_t *shift,
                           int8_t *output)
{
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * p->cols;
        int8_t *y = output + b * p->rows;
        for (int32_t r = 0; r < p->rows; ++r) {
            const int8_t *w = weights + r * p->cols;
            int32_t acc = bias != 0 ? bias[r] : 0;
            for (int32_t c = 0; c < p->cols; ++c) {
                acc += (int32_t)w[c] * ((int32_t)x[c] + p->input_offset);
            }
            const int32_t out = tg_requantize(acc, mult[r], shift[r]) + p->output_offset;
            y[r] = (int8_t)tg_clamp(out, p->act_min, p->act_max);
        }
    }
}
