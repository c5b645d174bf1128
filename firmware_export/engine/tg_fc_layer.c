/* tinygru int8 engine: one FULLY_CONNECTED layer of a model, its weights stored dense or
 * block-sparse (see tinygru.h). */
#include "tinygru.h"

void tg_fc_layer_run(const tg_fc_layer *l, const int8_t *x, int8_t *y)
{
    if (l->sparse != 0) {
        tg_fully_connected_sparse_s8(&l->p, x, l->sparse, l->bias, l->mult, l->shift, y);
    } else {
        tg_fully_connected_s8(&l->p, x, l->weights, l->bias, l->mult, l->shift, y);
    }
}
