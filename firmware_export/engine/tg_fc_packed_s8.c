/* tinygru int8 engine: FULLY_CONNECTED over packed 4-row blocks (see tinygru.h for the
 * layout and tg_requantize.h for the requantization). Four rows share every input load;
 * each row's accumulator is requantized once, in one rounding step per stage. */
#include "tinygru.h"

#include <string.h>

#include "tg_dsp.h"
#include "tg_requantize.h"

/* Cores without a 32 x 32 -> 64-bit multiply (Armv6-M, Armv8-M Baseline) take the
 * byte-wise loop of the portable path instead of its 64-bit pair accumulators. */
#if defined(__ARM_ARCH_6M__) || defined(__ARM_ARCH_8M_BASE__)
#define TG_FC_NARROW_MUL 1
#else
#define TG_FC_NARROW_MUL 0
#endif

/* One output: acc2 = 2 acc (acc = bias + dot of the row). */
static inline int32_t tg_fc_requantize(int32_t acc2, const tg_fc_rq *q)
{
    return tg_sat8(tg_rq_apply(acc2, q->mult, q->add, q->shift));
}

#if TG_USE_DSP

/* P = (x1, x3) and Q = (256 x0 - x1 + 127, 256 x2 - x3 + 127) of every group of 4 inputs
 * (missing inputs of the last group are 0), in work[2g], work[2g + 1]; returns 32768 times
 * the sum of the even-column inputs. The halfword arithmetic wraps, and the results fit. */
static TG_NOINLINE int32_t tg_fc_prepare(const int8_t *x, int32_t cols, int32_t *work)
{
    int32_t sum = 0;
    const int8_t *end = x + (cols & ~3);
    for (; x != end; x += 4, work += 2) {
        const int32_t xw = tg_load_s8x4(x);
        const int32_t p = tg_sxtb16_ror8(xw);
        const int32_t a = (int32_t)(((uint32_t)xw << 8) & 0xFF00FF00u); /* (256 x0, 256 x2) */
        work[0] = p;
        work[1] = __sadd16(__ssub16(a, p), 0x007F007F);
        sum = __smlad(__sxtb16(xw), 0x00010001, sum);
    }
    if ((cols & 3) != 0) { /* the last group, its missing inputs 0 */
        uint32_t u = 0u;
        for (int32_t j = 0; j < (cols & 3); ++j) {
            u |= (uint32_t)(uint8_t)x[j] << (8 * j);
        }
        const int32_t xw = (int32_t)u;
        const int32_t p = tg_sxtb16_ror8(xw);
        const int32_t a = (int32_t)(((uint32_t)xw << 8) & 0xFF00FF00u);
        work[0] = p;
        work[1] = __sadd16(__ssub16(a, p), 0x007F007F);
        sum = __smlad(__sxtb16(xw), 0x00010001, sum);
    }
    return sum * 32768;
}

/* The 4 accumulators of one block over all groups, in C (compilers without GNU asm, and the
 * blocks a row range cuts). */
static TG_INLINE void tg_fc_block_c(const uint32_t *w, const int32_t *pq, const int32_t *pq_end,
                                    int32_t a[4])
{
    for (; pq != pq_end; pq += 2, w += 4) {
        for (int32_t i = 0; i < 4; ++i) {
            const int32_t wi = (int32_t)w[i];
            a[i] = __smlad(wi, pq[0], a[i]);
            a[i] = __smlad(wi & 0x00FF00FF, pq[1], a[i]);
        }
    }
}

/* In C, the rows [first, end) (tg_rows) of the block holding row first, no further than
 * that block's end, into y (row first at y[0]). */
static TG_INLINE void tg_fc_block_part(const tg_fc_layer *l, const int32_t *work, tg_rows rows,
                                       int8_t *y)
{
    const int32_t first = (int32_t)(rows & 0xFFFFu);
    const int32_t end = (int32_t)(rows >> 16);
    const int32_t b = first >> 2;
    const int32_t groups = (l->p.cols + 3) >> 2;
    int32_t a[4];
    for (int32_t i = 0; i < 4; ++i) {
        a[i] = l->bias[4 * b + i] - work[0];
    }
    tg_fc_block_c(l->packed + 4 * b * groups, work + 1, work + 1 + 2 * groups, a);
    for (int32_t r = first; r < end && r < 4 * b + 4; ++r) {
        /* a = 256 acc: 2 acc is a >> 7, exactly */
        y[r - first] = (int8_t)tg_fc_requantize(a[r - 4 * b] >> 7, &l->rq[r]);
    }
}

/* clamp(sat8(v), lo, hi) = clamp(v, lo, hi): the fused activation after the fact. */
static void tg_fc_clamp(int8_t *y, int32_t n, int32_t lo, int32_t hi)
{
    if (lo != -128 || hi != 127) {
        for (int32_t r = 0; r < n; ++r) {
            y[r] = (int8_t)tg_clamp(y[r], lo, hi);
        }
    }
}

/* The blocks rows [first, end) (tg_rows) cut (rows not a multiple of 4), in C. */
static TG_NOINLINE void tg_fc_rows_part(const tg_fc_layer *l, const int32_t *work, tg_rows rows,
                                        int8_t *y)
{
    const int32_t first = (int32_t)(rows & 0xFFFFu);
    const int32_t end = (int32_t)(rows >> 16);
    if ((first & 3) != 0) {
        tg_fc_block_part(l, work, rows, y);
    }
    if ((end & 3) != 0 && (end & ~3) >= first) {
        tg_fc_block_part(l, work, TG_ROWS(end & ~3, end), y + ((end & ~3) - first));
    }
}

#if defined(__GNUC__)
/* What the block loop below reads and advances, at fixed offsets. */
typedef struct {
    const int32_t *bias; /* 0: the next block's accumulator starts */
    const int32_t *pq;   /* 4: P, Q of every group; pq[-1]: 32768 (even-column input sum) */
    const int32_t *end;  /* 8: past the last group's P, Q */
    const tg_fc_rq *rq;  /* 12: the next row's requantization */
    int8_t *y;           /* 16: the next output */
    int32_t blocks;      /* 20: blocks left, >= 1 */
} tg_fc_blocks;

/* The blocks wholly inside rows [first, end) (tg_rows) into y (row first at y[0]) in one asm
 * loop, outputs clamped to int8 only (a fused activation after): per block, the accumulators start
 * at bias - s (LDM), every group adds its 4 weight words (LDM) against P and Q (LDRD), and each
 * row's 256 acc is requantized (tg_fc_rq: SMMLAR, sign, shift, SSAT). Registers are fixed where LDM
 * needs them ascending: a0..a3 r2..r5, the weight words r9..r12, a row's (mult, add, shift) r6, r8,
 * r9; r7 (a frame pointer) is not used. */
static TG_NOINLINE void tg_fc_rows_dsp(const tg_fc_layer *l, const int32_t *work, tg_rows rows,
                                       int8_t *y)
{
    const int32_t first = (int32_t)(rows & 0xFFFFu);
    const int32_t end = (int32_t)(rows >> 16);
    const int32_t b = (first + 3) >> 2; /* the first whole block */
    const int32_t b1 = end >> 2;        /* past the last whole block */
    if (b >= b1) {
        return;
    }
    y += 4 * b - first;
    const int32_t groups = (l->p.cols + 3) >> 2;
    tg_fc_blocks ctx = {
        l->bias + 4 * b, work + 1, work + 1 + 2 * groups, l->rq + 4 * b, y, b1 - b
    };
    tg_fc_blocks *volatile at = &ctx; /* in the frame: the asm reloads it from there */
    register tg_fc_blocks *c __asm__("r0") = &ctx;
    register const uint32_t *w __asm__("r1") = l->packed + 4 * b * groups;
    /* clang-format off */
    __asm__ volatile(
        "1:\n\t"
        "ldr r0, %[at]\n\t"             /* the block: a = bias - s */
        "ldr r6, [r0]\n\t"
        "ldm r6!, {r2, r3, r4, r5}\n\t"
        "str r6, [r0]\n\t"
        "ldrd r0, lr, [r0, #4]\n\t"
        "ldr r8, [r0, #-4]\n\t"
        "sub r2, r2, r8\n\t"
        "sub r3, r3, r8\n\t"
        "sub r4, r4, r8\n\t"
        "sub r5, r5, r8\n"
        "2:\n\t"
        "ldrd r6, r8, [r0], #8\n\t"       /* a group: P, Q */
        "ldm r1!, {r9, r10, r11, r12}\n\t" /* its word of each row */
        "smlad r2, r9, r6, r2\n\t"
        "and r9, r9, #0x00FF00FF\n\t"
        "smlad r2, r9, r8, r2\n\t"
        "smlad r3, r10, r6, r3\n\t"
        "and r10, r10, #0x00FF00FF\n\t"
        "smlad r3, r10, r8, r3\n\t"
        "smlad r4, r11, r6, r4\n\t"
        "and r11, r11, #0x00FF00FF\n\t"
        "smlad r4, r11, r8, r4\n\t"
        "smlad r5, r12, r6, r5\n\t"
        "and r12, r12, #0x00FF00FF\n\t"
        "smlad r5, r12, r8, r5\n\t"
        "cmp r0, lr\n\t"
        "bne 2b\n\t"
        "ldr r0, %[at]\n\t"             /* the 4 outputs */
        "ldrd r12, lr, [r0, #12]\n\t"
        "ldm r12!, {r6, r8, r9}\n\t"
        "asr r10, r2, #7\n\t"
        "smmlar r11, r10, r6, r8\n\t"
        "add r11, r11, r10, asr #31\n\t"
        "asr r11, r11, r9\n\t"
        "ssat r11, #8, r11\n\t"
        "strb r11, [lr], #1\n\t"
        "ldm r12!, {r6, r8, r9}\n\t"
        "asr r10, r3, #7\n\t"
        "smmlar r11, r10, r6, r8\n\t"
        "add r11, r11, r10, asr #31\n\t"
        "asr r11, r11, r9\n\t"
        "ssat r11, #8, r11\n\t"
        "strb r11, [lr], #1\n\t"
        "ldm r12!, {r6, r8, r9}\n\t"
        "asr r10, r4, #7\n\t"
        "smmlar r11, r10, r6, r8\n\t"
        "add r11, r11, r10, asr #31\n\t"
        "asr r11, r11, r9\n\t"
        "ssat r11, #8, r11\n\t"
        "strb r11, [lr], #1\n\t"
        "ldm r12!, {r6, r8, r9}\n\t"
        "asr r10, r5, #7\n\t"
        "smmlar r11, r10, r6, r8\n\t"
        "add r11, r11, r10, asr #31\n\t"
        "asr r11, r11, r9\n\t"
        "ssat r11, #8, r11\n\t"
        "strb r11, [lr], #1\n\t"
        "strd r12, lr, [r0, #12]\n\t"
        "ldr r6, [r0, #20]\n\t"
        "subs r6, r6, #1\n\t"
        "str r6, [r0, #20]\n\t"
        "bne 1b"
        : "+r"(c), "+r"(w)
        : [at] "m"(at)
        : "r2", "r3", "r4", "r5", "r6", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
    /* clang-format on */
}

static TG_NOINLINE void tg_fc_rows_dsp2(const tg_fc_layer *l, const int32_t *work, tg_rows rows,
                                        int8_t *y)
{
    /* as tg_fc_rows_dsp, two groups per iteration (an even number of groups) */
    const int32_t first = (int32_t)(rows & 0xFFFFu);
    const int32_t end = (int32_t)(rows >> 16);
    const int32_t b = (first + 3) >> 2; /* the first whole block */
    const int32_t b1 = end >> 2;        /* past the last whole block */
    if (b >= b1) {
        return;
    }
    y += 4 * b - first;
    const int32_t groups = (l->p.cols + 3) >> 2;
    tg_fc_blocks ctx = {
        l->bias + 4 * b, work + 1, work + 1 + 2 * groups, l->rq + 4 * b, y, b1 - b
    };
    tg_fc_blocks *volatile at = &ctx; /* in the frame: the asm reloads it from there */
    register tg_fc_blocks *c __asm__("r0") = &ctx;
    register const uint32_t *w __asm__("r1") = l->packed + 4 * b * groups;
    /* clang-format off */
    __asm__ volatile(
        "1:\n\t"
        "ldr r0, %[at]\n\t"             /* the block: a = bias - s */
        "ldr r6, [r0]\n\t"
        "ldm r6!, {r2, r3, r4, r5}\n\t"
        "str r6, [r0]\n\t"
        "ldrd r0, lr, [r0, #4]\n\t"
        "ldr r8, [r0, #-4]\n\t"
        "sub r2, r2, r8\n\t"
        "sub r3, r3, r8\n\t"
        "sub r4, r4, r8\n\t"
        "sub r5, r5, r8\n"
        "2:\n\t"
        "ldrd r6, r8, [r0], #8\n\t"       /* a group: P, Q */
        "ldm r1!, {r9, r10, r11, r12}\n\t" /* its word of each row */
        "smlad r2, r9, r6, r2\n\t"
        "and r9, r9, #0x00FF00FF\n\t"
        "smlad r2, r9, r8, r2\n\t"
        "smlad r3, r10, r6, r3\n\t"
        "and r10, r10, #0x00FF00FF\n\t"
        "smlad r3, r10, r8, r3\n\t"
        "smlad r4, r11, r6, r4\n\t"
        "and r11, r11, #0x00FF00FF\n\t"
        "smlad r4, r11, r8, r4\n\t"
        "smlad r5, r12, r6, r5\n\t"
        "and r12, r12, #0x00FF00FF\n\t"
        "smlad r5, r12, r8, r5\n\t"
        "ldrd r6, r8, [r0], #8\n\t"       /* a group: P, Q */
        "ldm r1!, {r9, r10, r11, r12}\n\t" /* its word of each row */
        "smlad r2, r9, r6, r2\n\t"
        "and r9, r9, #0x00FF00FF\n\t"
        "smlad r2, r9, r8, r2\n\t"
        "smlad r3, r10, r6, r3\n\t"
        "and r10, r10, #0x00FF00FF\n\t"
        "smlad r3, r10, r8, r3\n\t"
        "smlad r4, r11, r6, r4\n\t"
        "and r11, r11, #0x00FF00FF\n\t"
        "smlad r4, r11, r8, r4\n\t"
        "smlad r5, r12, r6, r5\n\t"
        "and r12, r12, #0x00FF00FF\n\t"
        "smlad r5, r12, r8, r5\n\t"
        "cmp r0, lr\n\t"
        "bne 2b\n\t"
        "ldr r0, %[at]\n\t"             /* the 4 outputs */
        "ldrd r12, lr, [r0, #12]\n\t"
        "ldm r12!, {r6, r8, r9}\n\t"
        "asr r10, r2, #7\n\t"
        "smmlar r11, r10, r6, r8\n\t"
        "add r11, r11, r10, asr #31\n\t"
        "asr r11, r11, r9\n\t"
        "ssat r11, #8, r11\n\t"
        "strb r11, [lr], #1\n\t"
        "ldm r12!, {r6, r8, r9}\n\t"
        "asr r10, r3, #7\n\t"
        "smmlar r11, r10, r6, r8\n\t"
        "add r11, r11, r10, asr #31\n\t"
        "asr r11, r11, r9\n\t"
        "ssat r11, #8, r11\n\t"
        "strb r11, [lr], #1\n\t"
        "ldm r12!, {r6, r8, r9}\n\t"
        "asr r10, r4, #7\n\t"
        "smmlar r11, r10, r6, r8\n\t"
        "add r11, r11, r10, asr #31\n\t"
        "asr r11, r11, r9\n\t"
        "ssat r11, #8, r11\n\t"
        "strb r11, [lr], #1\n\t"
        "ldm r12!, {r6, r8, r9}\n\t"
        "asr r10, r5, #7\n\t"
        "smmlar r11, r10, r6, r8\n\t"
        "add r11, r11, r10, asr #31\n\t"
        "asr r11, r11, r9\n\t"
        "ssat r11, #8, r11\n\t"
        "strb r11, [lr], #1\n\t"
        "strd r12, lr, [r0, #12]\n\t"
        "ldr r6, [r0, #20]\n\t"
        "subs r6, r6, #1\n\t"
        "str r6, [r0, #20]\n\t"
        "bne 1b"
        : "+r"(c), "+r"(w)
        : [at] "m"(at)
        : "r2", "r3", "r4", "r5", "r6", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
    /* clang-format on */
}
#endif

void tg_fc_packed_s8(const tg_fc_layer *l, const int8_t *x, int8_t *y, int32_t *work, tg_rows rows)
{
    if (x != 0) {
        work[0] = tg_fc_prepare(x, l->p.cols, work + 1);
    }
#if defined(__GNUC__)
    if (((rows | (rows >> 16)) & 3u) != 0) {
        tg_fc_rows_part(l, work, rows, y);
    }
    if ((((l->p.cols + 3) >> 2) & 1) == 0) { /* an even number of groups */
        tg_fc_rows_dsp2(l, work, rows, y);
    } else {
        tg_fc_rows_dsp(l, work, rows, y);
    }
#else
    const int32_t first = (int32_t)(rows & 0xFFFFu);
    const int32_t end = (int32_t)(rows >> 16);
    for (int32_t r = first & ~3; r < end; r += 4) {
        tg_fc_block_part(l, work, TG_ROWS(r > first ? r : first, end),
                         y + (r > first ? r - first : 0));
    }
#endif
    tg_fc_clamp(y, (int32_t)(rows >> 16) - (int32_t)(rows & 0xFFFFu), l->p.act_min, l->p.act_max);
}

#else /* portable C */

/* The 4 outputs of one block: acc = bias + dot of each row. */
static inline void tg_fc_block_store(const int32_t acc[4], const tg_fc_rq *q, int8_t *y)
{
    y[0] = (int8_t)tg_fc_requantize(acc[0] * 2, &q[0]);
    y[1] = (int8_t)tg_fc_requantize(acc[1] * 2, &q[1]);
    y[2] = (int8_t)tg_fc_requantize(acc[2] * 2, &q[2]);
    y[3] = (int8_t)tg_fc_requantize(acc[3] * 2, &q[3]);
}

#if TG_FC_NARROW_MUL
/* bias + dot of the 4 rows of a block, byte by byte in 32 bits. */
static TG_INLINE void tg_fc_block_acc(const uint32_t *w, const int8_t *x, int32_t cols,
                                      const int32_t *bias, int32_t s, int32_t acc[4])
{
    int32_t a0 = bias[0], a1 = bias[1], a2 = bias[2], a3 = bias[3];
    (void)s;
    for (int32_t c = 0; c < cols; ++c) {
        const uint32_t wc = w[c];
        const int32_t xc = x[c];
        a0 += xc * (int32_t)(int8_t)(uint8_t)((wc & 0xFFu) ^ 0x80u);
        a1 += xc * (int32_t)(int8_t)(uint8_t)(wc >> 8);
        a2 += xc * (int32_t)(int8_t)(uint8_t)(((wc >> 16) & 0xFFu) ^ 0x80u);
        a3 += xc * (int32_t)(int8_t)(uint8_t)(wc >> 24);
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}
#else
/* One column into the two pair accumulators. */
#define TG_FC_PAIR_MAC(W, X)                                                                       \
    do {                                                                                           \
        const uint32_t wc_ = (W);                                                                  \
        const int32_t xc_ = (X);                                                                   \
        p03 += (int64_t)xc_ * (int32_t)(wc_ & 0xFF0000FFu);                                        \
        p21 += (int64_t)xc_ * (int32_t)(((wc_ >> 16) | (wc_ << 16)) & 0xFF0000FFu);                \
    } while (0)

/* bias + dot of the 4 rows of a block; s = 128 sum(x), carried by rows 0 and 2. */
static TG_INLINE void tg_fc_block_acc(const uint32_t *w, const int8_t *x, int32_t cols,
                                      const int32_t *bias, int32_t s, int32_t acc[4])
{
    int64_t p03 = 0; /* (w0 + 128) sums + 2^24 w3 sums */
    int64_t p21 = 0; /* (w2 + 128) sums + 2^24 w1 sums */
    const int8_t *end4 = x + (cols & ~3);
    const int8_t *end = x + cols;
    for (; x != end4; x += 4, w += 4) {
        TG_FC_PAIR_MAC(w[0], x[0]);
        TG_FC_PAIR_MAC(w[1], x[1]);
        TG_FC_PAIR_MAC(w[2], x[2]);
        TG_FC_PAIR_MAC(w[3], x[3]);
    }
    for (; x != end; ++x, ++w) {
        TG_FC_PAIR_MAC(w[0], x[0]);
    }
    /* the low 24 bits hold the offset row's sum (|.| < 2^23), the rest the other row's */
    const int32_t s0 = (int32_t)((uint32_t)p03 << 8) >> 8;
    const int32_t s2 = (int32_t)((uint32_t)p21 << 8) >> 8;
    acc[0] = bias[0] + s0 - s;
    acc[1] = bias[1] + (int32_t)((p21 - s2) >> 24);
    acc[2] = bias[2] + s2 - s;
    acc[3] = bias[3] + (int32_t)((p03 - s0) >> 24);
}
#undef TG_FC_PAIR_MAC
#endif

/* Copies rows [first, end) of the 4 outputs of block b (in t) to y (row first at y[0]). */
static void tg_fc_block_copy(const int8_t t[4], int32_t b, int32_t first, int32_t end, int8_t *y)
{
    for (int32_t r = 4 * b > first ? 4 * b : first; r < end && r < 4 * b + 4; ++r) {
        y[r - first] = t[r - 4 * b];
    }
}

void tg_fc_packed_s8(const tg_fc_layer *l, const int8_t *x, int8_t *y, int32_t *work, tg_rows rows)
{
    const int32_t first = (int32_t)(rows & 0xFFFFu);
    const int32_t end = (int32_t)(rows >> 16);
    const int32_t cols = l->p.cols;
    const int32_t cols4 = (cols + 3) & ~3;
    int8_t *in = (int8_t *)(void *)(work + 1); /* the input, kept for a later call */
    if (x != 0) {
        memcpy(in, x, (size_t)cols);
        int32_t sum = 0;
        int32_t c = 0;
        for (; c + 4 <= cols; c += 4) {
            sum += in[c] + in[c + 1] + in[c + 2] + in[c + 3];
        }
        for (; c < cols; ++c) {
            sum += in[c];
        }
        work[0] = sum * 128; /* rows 4b and 4b+2 hold w + 128: their sums carry 128 sum(x) */
    }
    int32_t acc[4];
    int8_t t[4];
    for (int32_t b = first >> 2; 4 * b < end; ++b) {
        tg_fc_block_acc(l->packed + b * cols4, in, cols, l->bias + 4 * b, work[0], acc);
        const int whole = 4 * b >= first && 4 * b + 4 <= end;
        tg_fc_block_store(acc, l->rq + 4 * b, whole ? y + (4 * b - first) : t);
        if (!whole) {
            tg_fc_block_copy(t, b, first, end, y);
        }
    }
    if (l->p.act_min != -128 || l->p.act_max != 127) { /* clamp(sat8(v)) = clamp(v) */
        for (int32_t r = 0; r < end - first; ++r) {
            y[r] = (int8_t)tg_clamp(y[r], l->p.act_min, l->p.act_max);
        }
    }
}

#endif /* TG_USE_DSP */
