/* SHA-256 as FIPS 180-4 section 6.2 defines it: a 64-round compression of
 * 512-bit blocks, message padded with 1, zeros and the 64-bit bit length. */
#include "sha256.h"

/* First 32 bits of the fractional parts of the cube roots of the first 64 primes. */
static const uint32_t K[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u,
    0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu,
    0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu,
    0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau, 0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,
    0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu,
    0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
    0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u, 0x19a4c116u,
    0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u,
    0xc67178f2u
};

static uint32_t rotr(uint32_t x, uint32_t n)
{
    return (x >> n) | (x << (32u - n));
}

/* One 64-byte block into the chaining value (FIPS 180-4, 6.2.2). */
static void compress(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (uint32_t t = 0u; t < 16u; ++t) {
        w[t] = ((uint32_t)p[4u * t] << 24) | ((uint32_t)p[4u * t + 1u] << 16) |
               ((uint32_t)p[4u * t + 2u] << 8) | (uint32_t)p[4u * t + 3u];
    }
    for (uint32_t t = 16u; t < 64u; ++t) {
        const uint32_t s0 = rotr(w[t - 15u], 7u) ^ rotr(w[t - 15u], 18u) ^ (w[t - 15u] >> 3);
        const uint32_t s1 = rotr(w[t - 2u], 17u) ^ rotr(w[t - 2u], 19u) ^ (w[t - 2u] >> 10);
        w[t] = w[t - 16u] + s0 + w[t - 7u] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (uint32_t t = 0u; t < 64u; ++t) {
        const uint32_t S1 = rotr(e, 6u) ^ rotr(e, 11u) ^ rotr(e, 25u);
        const uint32_t ch = (e & f) ^ (~e & g);
        const uint32_t t1 = k + S1 + ch + K[t] + w[t];
        const uint32_t S0 = rotr(a, 2u) ^ rotr(a, 13u) ^ rotr(a, 22u);
        const uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        const uint32_t t2 = S0 + maj;
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

void sha256_init(sha256_ctx *c)
{
    /* First 32 bits of the fractional parts of the square roots of the first 8 primes. */
    static const uint32_t h0[8] = { 0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                    0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u };
    for (uint32_t i = 0u; i < 8u; ++i) {
        c->h[i] = h0[i];
    }
    c->block_len = 0u;
    c->total_bytes = 0u;
}

void sha256_update(sha256_ctx *c, const void *data, uint32_t n)
{
    const uint8_t *p = (const uint8_t *)data;
    c->total_bytes += n;
    while (n > 0u) {
        if (c->block_len == 0u && n >= 64u) {
            compress(c->h, p);
            p += 64;
            n -= 64u;
            continue;
        }
        const uint32_t room = 64u - c->block_len;
        const uint32_t take = n < room ? n : room;
        for (uint32_t i = 0u; i < take; ++i) {
            c->block[c->block_len + i] = p[i];
        }
        c->block_len += take;
        p += take;
        n -= take;
        if (c->block_len == 64u) {
            compress(c->h, c->block);
            c->block_len = 0u;
        }
    }
}

void sha256_final(sha256_ctx *c, uint8_t digest[SHA256_DIGEST_BYTES])
{
    const uint64_t bits = c->total_bytes * 8u;
    c->block[c->block_len++] = 0x80u;
    if (c->block_len > 56u) {
        while (c->block_len < 64u) {
            c->block[c->block_len++] = 0u;
        }
        compress(c->h, c->block);
        c->block_len = 0u;
    }
    while (c->block_len < 56u) {
        c->block[c->block_len++] = 0u;
    }
    for (uint32_t i = 0u; i < 8u; ++i) {
        c->block[56u + i] = (uint8_t)(bits >> (56u - 8u * i));
    }
    compress(c->h, c->block);
    c->block_len = 0u;
    for (uint32_t i = 0u; i < 8u; ++i) {
        digest[4u * i] = (uint8_t)(c->h[i] >> 24);
        digest[4u * i + 1u] = (uint8_t)(c->h[i] >> 16);
        digest[4u * i + 2u] = (uint8_t)(c->h[i] >> 8);
        digest[4u * i + 3u] = (uint8_t)c->h[i];
    }
}

void sha256_hex(const uint8_t digest[SHA256_DIGEST_BYTES], char hex[SHA256_HEX_CHARS + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (uint32_t i = 0u; i < SHA256_DIGEST_BYTES; ++i) {
        hex[2u * i] = digits[digest[i] >> 4];
        hex[2u * i + 1u] = digits[digest[i] & 0x0fu];
    }
    hex[SHA256_HEX_CHARS] = '\0';
}
