/* tinygru engine: one model step, front end -> GRU layers -> head (see tinygru.h). */
#include "tinygru.h"

static void fc(const tg_fc_layer *l, const int8_t *x, int8_t *y)
{
    tg_fc_layer_run(l, x, y);
}

void tg_model_step(const tg_model_params *m, const int8_t *x, int8_t *h, int8_t *out,
                   int8_t *scratch)
{
    const int8_t *t = x;
    int8_t *fe = scratch; /* [front end rows] */
    int8_t *gates = scratch + (m->has_front_end ? m->front_end.p.rows : 0);

    /* front end: relu(x W + b) over the last k samples */
    if (m->has_front_end) {
        fc(&m->front_end, x, fe);
        TG_TRACE(TG_OP_FRONT_END, fe, m->front_end.p.rows);
        t = fe;
    }
    /* GRU layers: layer l reads layer l-1's new state */
    for (int32_t l = 0; l < m->n_layers; ++l) {
        tg_gru_step(&m->gru[l], t, h, gates);
        t = h;
        h += m->gru[l].units;
    }
    /* head: logits then softmax (classifier), or the forecast itself */
    if (m->softmax_exp != 0) {
        int8_t *logits = gates; /* the gate scratch is free again */
        fc(&m->head, t, logits);
        TG_TRACE(TG_OP_HEAD, logits, m->n_outputs);
        tg_softmax_s8(m->softmax_exp, logits, out, 1, m->n_outputs);
        TG_TRACE(TG_OP_SOFTMAX, out, m->n_outputs);
    } else {
        fc(&m->head, t, out);
        TG_TRACE(TG_OP_HEAD, out, m->n_outputs);
    }
}
