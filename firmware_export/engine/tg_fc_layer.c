/* tinygru int8 engine: one FULLY_CONNECTED layer of a model, its weights stored row by
 * row, packed or block-sparse (see tinygru.h). Every kernel takes the same arguments,
 * so that tg_fc_layer_rows only passes them on (a tail call: no frame of its own). */
#include "tinygru.h"

void tg_fc_layer_rows(const tg_fc_layer *l, const int8_t *x, int8_t *y, int32_t *work, tg_rows rows)
{
    if (l->kind == TG_FC_PACKED) {
        tg_fc_packed_s8(l, x, y, work, rows);
    } else if (l->kind == TG_FC_SPARSE) {
        tg_fully_connected_sparse_s8(l, x, y, work, rows);
    } else {
        tg_fc_rows_s8(l, x, y, work, rows);
    }
}

void tg_fc_layer_run(const tg_fc_layer *l, const int8_t *x, int8_t *y, int32_t *work)
{
    tg_fc_layer_rows(l, x, y, work, TG_ROWS(0, l->p.rows));
}
