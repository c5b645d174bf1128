/* tinygru int8 engine: one FULLY_CONNECTED layer of a model, its weights stored row by
 * row, packed or block-sparse (see tinygru.h). */
#include "tinygru.h"

void tg_fc_layer_run(const tg_fc_layer *l, const int8_t *x, int8_t *y, int32_t *work)
{
    if (l->kind == TG_FC_PACKED) {
        tg_fc_packed_s8(l, x, y, work);
    } else if (l->kind == TG_FC_SPARSE) {
        tg_fully_connected_sparse_s8(l, x, y, work);
    } else {
        tg_fully_connected_s8(&l->p, x, l->weights, l->bias, l->mult, l->shift, y);
    }
}
