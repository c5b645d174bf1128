/* Host driver for the DUT's hashing (firmware/dut/sha256.c, model_hash.c):
 *
 *   hash_main sha256 < FILE     the sha256 of stdin, in hex
 *   hash_main model             (built with -DHASH_MODEL=<prefix>_model and the export's
 *                               <prefix>_model.c): "<sha256 hex> <bytes>" of its model data
 */
#include <stdio.h>
#include <string.h>

#include "sha256.h"

#ifdef HASH_MODEL
#include HASH_MODEL_H
#include "model_hash.h"
#endif

static int hash_stdin(void)
{
    sha256_ctx c;
    uint8_t buf[4096];
    uint8_t digest[SHA256_DIGEST_BYTES];
    char hex[SHA256_HEX_CHARS + 1];
    size_t n;
    sha256_init(&c);
    /* odd read sizes: blocks are filled across update calls */
    while ((n = fread(buf, 1u, 1000u, stdin)) > 0u) {
        sha256_update(&c, buf, (uint32_t)n);
    }
    sha256_final(&c, digest);
    sha256_hex(digest, hex);
    printf("%s\n", hex);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "sha256") == 0) {
        return hash_stdin();
    }
#ifdef HASH_MODEL
    if (argc == 2 && strcmp(argv[1], "model") == 0) {
        uint8_t digest[SHA256_DIGEST_BYTES];
        char hex[SHA256_HEX_CHARS + 1];
        const uint32_t bytes = model_data_sha256(&HASH_MODEL, digest);
        sha256_hex(digest, hex);
        printf("%s %lu\n", hex, (unsigned long)bytes);
        return 0;
    }
#endif
    fprintf(stderr, "usage: %s sha256|model\n", argv[0]);
    return 2;
}
