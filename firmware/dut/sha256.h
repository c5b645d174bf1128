/* SHA-256 (FIPS 180-4) in C99 for the device under test: no heap, no tables
 * beyond the 64 round constants, byte-oriented input of any length. The DUT
 * hashes its linked model data with it at boot (model_hash.h). */
#ifndef DUT_SHA256_H
#define DUT_SHA256_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Bytes of a digest. */
#define SHA256_DIGEST_BYTES 32
/** Characters of a digest in lowercase hex, without the terminating NUL. */
#define SHA256_HEX_CHARS 64

/** Running hash state. */
typedef struct {
    uint32_t h[8];        /**< Chaining value. */
    uint8_t block[64];    /**< Bytes of the unfinished block. */
    uint32_t block_len;   /**< Bytes in block. Range: {0, 63}. */
    uint64_t total_bytes; /**< Bytes hashed so far. */
} sha256_ctx;

/** @brief Start a new hash. */
void sha256_init(sha256_ctx *c);

/** @brief Hash n more bytes (n may be 0; data may then be NULL). */
void sha256_update(sha256_ctx *c, const void *data, uint32_t n);

/** @brief Pad, finish and write the 32-byte digest; c must be re-initialised to be reused. */
void sha256_final(sha256_ctx *c, uint8_t digest[SHA256_DIGEST_BYTES]);

/** @brief The digest as 64 lowercase hex characters and a NUL. */
void sha256_hex(const uint8_t digest[SHA256_DIGEST_BYTES], char hex[SHA256_HEX_CHARS + 1]);

#ifdef __cplusplus
}
#endif

#endif /* DUT_SHA256_H */
