/* tinygru engine: one model step, front end -> GRU layers -> head (see tinygru.h). */
#include "tinygru.h"

#include "tg_scratch.h"

void tg_model_step(const tg_model_params *m, const int8_t *x, int8_t *h, int8_t *out,
                   int8_t *scratch)
{
    int32_t *work = tg_work(scratch);
    int8_t *gates = (int8_t *)(void *)(work + m->gru[0].work_words);
    const int8_t *t = x;

    /* front end: relu(x W + b) over the last k samples, at the start of the gates */
    if (m->has_front_end) {
        int8_t *fe = gates;
        tg_fc_layer_run(&m->front_end, x, fe, work);
        TG_TRACE(TG_OP_FRONT_END, fe, m->front_end.p.rows);
        t = fe;
    }
    /* GRU layers: layer l reads layer l-1's new state */
    for (int32_t l = 0; l < m->n_layers; ++l) {
        tg_gru_step(&m->gru[l], t, h, work);
        t = h;
        h += m->gru[l].units;
    }
    /* head: logits then softmax (classifier), or the forecast itself */
    if (m->softmax_exp != 0) {
        int8_t *logits = gates; /* free again */
        tg_fc_layer_run(&m->head, t, logits, work);
        TG_TRACE(TG_OP_HEAD, logits, m->n_outputs);
        tg_softmax_s8(m->softmax_exp, logits, out, 1, m->n_outputs);
        TG_TRACE(TG_OP_SOFTMAX, out, m->n_outputs);
    } else {
        tg_fc_layer_run(&m->head, t, out, work);
        TG_TRACE(TG_OP_HEAD, out, m->n_outputs);
    }
}
