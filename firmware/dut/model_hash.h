/* The sha256 of the model data a firmware links: every const array a
 * tg_model_params points to, in the order of the structure, as stored in memory
 * (little endian). The same bytes, in the same order, as the export writes them
 * into <prefix>_model.c and counts in files.json's model_data.flash_bytes; the
 * export records their sha256 as model_data.sha256 (docs/device-protocol.md):
 *
 *   front end (when has_front_end), then per GRU layer: gx, gh, sigmoid[256],
 *   tanh[256]; then head, softmax_exp[256] (classifier only), input_multiplier[C]
 *   int32, input_bias[C] int64.
 *   An FC layer: weights[rows*cols] int8 (dense) or group_count[rows] uint8,
 *   group_index[kept] uint8, values[4*kept] int8 (block-sparse, kept = the sum of
 *   group_count); then bias, mult, shift, [rows] int32 each.
 *
 * The structure's own scalars (sizes, zero points, the element-wise ops'
 * multipliers) are not arrays and are not hashed. */
#ifndef DUT_MODEL_HASH_H
#define DUT_MODEL_HASH_H

#include <stdint.h>

#include "sha256.h"
#include "tinygru.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief Hash the model data of m.
 * @param[out] digest the sha256 of the bytes described above.
 * @return the number of bytes hashed, or 0 when m has a bad layer count.
 */
uint32_t model_data_sha256(const tg_model_params *m, uint8_t digest[SHA256_DIGEST_BYTES]);

#ifdef __cplusplus
}
#endif

#endif /* DUT_MODEL_HASH_H */
