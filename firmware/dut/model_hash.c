/* Hashes a model's const data through its data_parts list (model_hash.h). */
#include "model_hash.h"

uint32_t model_data_sha256(const tg_model_params *m, uint8_t digest[SHA256_DIGEST_BYTES])
{
    sha256_ctx c;
    sha256_init(&c);
    if (m->data_parts == 0 || m->n_data_parts < 1) {
        sha256_final(&c, digest);
        return 0u;
    }
    for (int32_t i = 0; i < m->n_data_parts; ++i) {
        sha256_update(&c, m->data_parts[i].data, m->data_parts[i].bytes);
    }
    const uint32_t bytes = (uint32_t)c.total_bytes;
    sha256_final(&c, digest);
    return bytes;
}
