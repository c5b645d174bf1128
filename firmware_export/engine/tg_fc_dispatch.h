/* tinygru engine: the choice of an FC layer's kernel by its kind, inlined where a step calls
 * it (no frame of its own on the step's call path); tg_fc_layer_rows is the same as a
 * function. */
#ifndef TG_FC_DISPATCH_H
#define TG_FC_DISPATCH_H

#include "tg_requantize.h"
#include "tinygru.h"

static TG_INLINE void tg_fc_dispatch(const tg_fc_layer *l, const int8_t *x, int8_t *y,
                                     int32_t *work, tg_rows rows)
{
    if (l->kind == TG_FC_PACKED) {
        tg_fc_packed_s8(l, x, y, work, rows);
    } else if (l->kind == TG_FC_SPARSE) {
        tg_fully_connected_sparse_s8(l, x, y, work, rows);
    } else {
        tg_fc_rows_s8(l, x, y, work, rows);
    }
}

#endif /* TG_FC_DISPATCH_H */
