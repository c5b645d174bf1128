/* The sha256 of the model data a firmware links: every const array of the generated
 * model data, in the export's order, as stored in memory (little endian), walked
 * through the model's data_parts list (tinygru.h). The export writes the same bytes
 * into <prefix>_model.c, counts them in files.json's model_data.flash_bytes and
 * records their sha256 there: model_data.sha256 for a portable build,
 * model_data.sha256_dsp for a TG_USE_DSP build, whose packed and block-sparse weight
 * words are in another order (docs/device-protocol.md). The structure's own scalars
 * (sizes, zero points, the element-wise ops' multipliers) are not arrays and are not
 * hashed; the bit-identity check of the device's outputs covers them. */
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
 * @return the number of bytes hashed, or 0 when m lists no data parts.
 */
uint32_t model_data_sha256(const tg_model_params *m, uint8_t digest[SHA256_DIGEST_BYTES]);

#ifdef __cplusplus
}
#endif

#endif /* DUT_MODEL_HASH_H */
