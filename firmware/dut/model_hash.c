/* Walks a tg_model_params in the export's array order (model_hash.h). */
#include "model_hash.h"

#define LUT_ENTRIES 256u

static void fc_layer(sha256_ctx *c, const tg_fc_layer *l)
{
    const uint32_t rows = (uint32_t)l->p.rows;
    if (l->sparse != 0) {
        uint32_t kept = 0u;
        for (uint32_t r = 0u; r < rows; ++r) {
            kept += l->sparse->group_count[r];
        }
        sha256_update(c, l->sparse->group_count, rows);
        sha256_update(c, l->sparse->group_index, kept);
        sha256_update(c, l->sparse->values, 4u * kept);
    } else {
        sha256_update(c, l->weights, rows * (uint32_t)l->p.cols);
    }
    sha256_update(c, l->bias, 4u * rows);
    sha256_update(c, l->mult, 4u * rows);
    sha256_update(c, l->shift, 4u * rows);
}

uint32_t model_data_sha256(const tg_model_params *m, uint8_t digest[SHA256_DIGEST_BYTES])
{
    sha256_ctx c;
    sha256_init(&c);
    if (m->n_layers < 1 || m->n_layers > TG_MAX_LAYERS || m->channels < 1) {
        sha256_final(&c, digest);
        return 0u;
    }
    if (m->has_front_end) {
        fc_layer(&c, &m->front_end);
    }
    for (int32_t i = 0; i < m->n_layers; ++i) {
        const tg_gru_params *g = &m->gru[i];
        fc_layer(&c, &g->gx);
        fc_layer(&c, &g->gh);
        sha256_update(&c, g->sigmoid, LUT_ENTRIES);
        sha256_update(&c, g->tanh, LUT_ENTRIES);
    }
    fc_layer(&c, &m->head);
    if (m->softmax_exp != 0) {
        sha256_update(&c, m->softmax_exp, 4u * LUT_ENTRIES);
    }
    const uint32_t channels = (uint32_t)m->channels;
    sha256_update(&c, m->input_multiplier, 4u * channels);
    sha256_update(&c, m->input_bias, 8u * channels);
    const uint32_t bytes = (uint32_t)c.total_bytes;
    sha256_final(&c, digest);
    return bytes;
}
