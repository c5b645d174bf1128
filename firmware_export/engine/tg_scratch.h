/* tinygru engine: the layout of a step's scratch (see tg_scratch_buffer_size in tinygru.h).
 *
 *   aligned up to 4 bytes the FC layers' work words (TG_FC_WORK_WORDS of the widest input)
 *   then                  the gates of the layer running (4U, tg_gru_step.c); the front end
 *                         output at their start (then layer 1 needs max(2U, its rows) + 2U);
 *                         the head's logits there too
 */
#ifndef TG_SCRATCH_H
#define TG_SCRATCH_H

#include <stdint.h>

#include "tinygru.h"

static inline int32_t tg_max32(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

/* Bytes of the gates. */
static inline int32_t tg_gate_bytes(const tg_model_params *m)
{
    int32_t n = m->n_outputs;
    for (int32_t l = 0; l < m->n_layers; ++l) {
        n = tg_max32(n, 4 * m->gru[l].units);
    }
    if (m->has_front_end) {
        const int32_t u = m->gru[0].units;
        n = tg_max32(n, tg_max32(2 * u, m->front_end.p.rows) + 2 * u);
    }
    return n;
}

/* Work words of the widest FC input. */
static inline int32_t tg_work_words(const tg_model_params *m)
{
    int32_t cols = m->head.p.cols;
    if (m->has_front_end) {
        cols = tg_max32(cols, m->front_end.p.cols);
    }
    for (int32_t l = 0; l < m->n_layers; ++l) {
        cols = tg_max32(cols, tg_max32(m->gru[l].gx.p.cols, m->gru[l].gh.p.cols));
    }
    return TG_FC_WORK_WORDS(cols);
}

/* The work words at the start of a scratch buffer, 4-byte aligned whatever its alignment. */
static inline int32_t *tg_work(int8_t *scratch)
{
    const uintptr_t at = ((uintptr_t)scratch + 3u) & ~(uintptr_t)3u;
    return (int32_t *)(void *)at;
}

#endif /* TG_SCRATCH_H */
