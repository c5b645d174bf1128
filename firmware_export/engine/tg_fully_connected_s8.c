/* tinygru int8 engine: FULLY_CONNECTED over row-major weights (see tinygru_kernels.h).
 *
 * TFLM's arithmetic as it is: int32 accumulation, two-step requantization. The model
 * layers run the packed or block-sparse kernels; this one serves the layers outside
 * their ranges (tg_fc_rq) and callers of the kernel API. */
#include "tinygru.h"

#include "tg_requantize.h"

void tg_fully_connected_s8(const tg_fc_params *p, const int8_t *input, const int8_t *weights,
                           const int32_t *bias, const int32_t *mult, const int32_t *shift,
                           int8_t *output)
{
    const int32_t rows = p->rows;
    const int32_t cols = p->cols;
    const int32_t off = p->input_offset;
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * cols;
        int8_t *y = output + b * rows;
        const int8_t *w = weights;
        for (int32_t r = 0; r < rows; ++r, w += cols) {
            int32_t acc = bias != 0 ? bias[r] : 0;
            for (int32_t c = 0; c < cols; ++c) {
                acc += (int32_t)w[c] * ((int32_t)x[c] + off);
            }
            y[r] = tg_fc_out(acc, mult[r], shift[r], p->output_offset, p->act_min, p->act_max);
        }
    }
}

void tg_fc_rows_s8(const tg_fc_layer *l, const int8_t *x, int8_t *y, int32_t *work, tg_rows rows)
{
    const int32_t first = (int32_t)(rows & 0xFFFFu);
    const int32_t cols = l->p.cols;
    int8_t *in = (int8_t *)(void *)work; /* the input, kept for a later call (x = NULL) */
    if (x != 0) {
        for (int32_t c = 0; c < cols; ++c) {
            in[c] = x[c];
        }
    }
    const int8_t *w = l->weights + first * cols;
    for (int32_t r = first; r < (int32_t)(rows >> 16); ++r, w += cols) {
        int32_t acc = l->bias[r];
        for (int32_t c = 0; c < cols; ++c) {
            acc += (int32_t)w[c] * in[c];
        }
        *y++ =
            tg_fc_out(acc, l->mult[r], l->shift[r], l->p.output_offset, l->p.act_min, l->p.act_max);
    }
}
