/* tinygru int8 engine: FULLY_CONNECTED over packed 4-row blocks (see tinygru.h for the
 * layout and tg_requantize.h for the requantization). Four rows share every input load;
 * each row's accumulator is requantized once, in one rounding step per stage. */
#include "tinygru.h"

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

#if TG_USE_DSP && !defined(__GNUC__)
/* The outputs of one block of 4 rows from the rows' 2 acc; n: the rows that exist (the
 * padding rows of the last block are not written). */
static inline void tg_fc_block_out(const int32_t acc2[4], const tg_fc_rq *q, int8_t *y, int32_t n,
                                   int32_t lo, int32_t hi)
{
    if (lo == -128 && hi == 127) {
        for (int32_t i = 0; i < n; ++i) {
            y[i] = (int8_t)tg_fc_requantize(acc2[i], &q[i]);
        }
    } else {
        for (int32_t i = 0; i < n; ++i) {
            y[i] = (int8_t)tg_clamp(tg_fc_requantize(acc2[i], &q[i]), lo, hi);
        }
    }
}
#endif

#if TG_USE_DSP

/* P = (x1, x3) and Q = (256 x0 - x1 + 127, 256 x2 - x3 + 127) of every group of 4 inputs
 * (missing inputs of the last group are 0), in work[2g], work[2g + 1]; returns 32768 times
 * the sum of the even-column inputs. The halfword arithmetic wraps, and the results fit. */
static int32_t tg_fc_prepare(const int8_t *x, int32_t cols, int32_t *work)
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

#if !defined(__GNUC__)
/* The 4 accumulators of one block over all groups, in C (compilers without GNU asm). */
static void tg_fc_block_c(const uint32_t *w, const int32_t *pq, const int32_t *pq_end, int32_t a[4])
{
    for (; pq != pq_end; pq += 2, w += 4) {
        for (int32_t i = 0; i < 4; ++i) {
            const int32_t wi = (int32_t)w[i];
            a[i] = __smlad(wi, pq[0], a[i]);
            a[i] = __smlad(wi & 0x00FF00FF, pq[1], a[i]);
        }
    }
}
#endif

#if defined(__GNUC__)
/* What the block loop below reads and advances, at fixed offsets. */
typedef struct {
    const int32_t *bias; /* 0: the next block's accumulator starts */
    int32_t s;           /* 4: 32768 (sum of the even-column inputs) */
    const int32_t *pq;   /* 8: P, Q of every group */
    const int32_t *end;  /* 12: past the last group's P, Q */
    const tg_fc_rq *rq;  /* 16: the next row's requantization */
    int8_t *y;           /* 20: the next output */
    int32_t blocks;      /* 24: blocks left, >= 1 */
} tg_fc_blocks;

/* Every full block of 4 rows, outputs clamped to int8 only: per block, the accumulators
 * start at bias - s (LDM), every group adds its 4 weight words (LDM) against P and Q
 * (LDRD), and each row's 256 acc is requantized (tg_fc_rq: SMMLAR, sign, shift, SSAT).
 * Registers are fixed where LDM needs them ascending: a0..a3 r2..r5, the weight words
 * r9..r12, a row's (mult, add, shift) r6, r8, r9; r7 (a frame pointer) is not used. */
static void tg_fc_blocks_dsp(tg_fc_blocks *ctx, const uint32_t *weights)
{
    register tg_fc_blocks *c __asm__("r0") = ctx;
    register const uint32_t *w __asm__("r1") = weights;
    /* clang-format off */
    __asm__ volatile(
        "push {r0}\n"
        "1:\n\t"
        "ldr r0, [sp]\n\t"              /* the block: a = bias - s */
        "ldrd r6, r8, [r0]\n\t"
        "ldm r6!, {r2, r3, r4, r5}\n\t"
        "str r6, [r0]\n\t"
        "sub r2, r2, r8\n\t"
        "sub r3, r3, r8\n\t"
        "sub r4, r4, r8\n\t"
        "sub r5, r5, r8\n\t"
        "ldrd r0, lr, [r0, #8]\n"
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
        "ldr r0, [sp]\n\t"              /* the 4 outputs */
        "ldrd r12, lr, [r0, #16]\n\t"
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
        "strd r12, lr, [r0, #16]\n\t"
        "ldr r6, [r0, #24]\n\t"
        "subs r6, r6, #1\n\t"
        "str r6, [r0, #24]\n\t"
        "bne 1b\n\t"
        "add sp, sp, #4"
        : "+r"(c), "+r"(w)
        :
        : "r2", "r3", "r4", "r5", "r6", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
    /* clang-format on */
}
#endif

void tg_fc_packed_s8(const tg_fc_layer *l, const int8_t *x, int8_t *y, int32_t *work)
{
    const int32_t rows = l->p.rows;
    const int32_t lo = l->p.act_min;
    const int32_t hi = l->p.act_max;
    const int32_t s = tg_fc_prepare(x, l->p.cols, work);
    const int32_t groups = (l->p.cols + 3) >> 2;
    const int32_t *pq_end = work + 2 * groups;
#if defined(__GNUC__)
    const int32_t full = rows >> 2;
    tg_fc_blocks ctx = { l->bias, s, work, pq_end, l->rq, y, full };
    if (full > 0) {
        tg_fc_blocks_dsp(&ctx, l->packed);
    }
    if ((rows & 3) != 0) { /* the last block's rows exist in the data, not in y */
        int8_t last[4];
        ctx.y = last;
        ctx.blocks = 1;
        tg_fc_blocks_dsp(&ctx, l->packed + full * 4 * groups);
        for (int32_t i = 0; i < (rows & 3); ++i) {
            y[4 * full + i] = last[i];
        }
    }
    if (lo != -128 || hi != 127) { /* a fused activation: clamp(sat8(v)) = clamp(v) */
        for (int32_t r = 0; r < rows; ++r) {
            y[r] = (int8_t)tg_clamp(y[r], lo, hi);
        }
    }
#else
    for (int32_t r = 0; r < rows; r += 4) {
        int32_t a[4];
        for (int32_t i = 0; i < 4; ++i) {
            a[i] = l->bias[r + i] - s;
        }
        tg_fc_block_c(l->packed + r * groups, work, pq_end, a);
        /* a = 256 acc: 2 acc is a >> 7, exactly */
        const int32_t acc2[4] = { a[0] >> 7, a[1] >> 7, a[2] >> 7, a[3] >> 7 };
        tg_fc_block_out(acc2, l->rq + r, y + r, rows - r < 4 ? rows - r : 4, lo, hi);
    }
#endif
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
static void tg_fc_block_acc(const uint32_t *w, const int8_t *x, int32_t cols, const int32_t *bias,
                            int32_t s, int32_t acc[4])
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
static void tg_fc_block_acc(const uint32_t *w, const int8_t *x, int32_t cols, const int32_t *bias,
                            int32_t s, int32_t acc[4])
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

void tg_fc_packed_s8(const tg_fc_layer *l, const int8_t *x, int8_t *y, int32_t *work)
{
    const int32_t rows = l->p.rows;
    const int32_t cols = l->p.cols;
    const int32_t cols4 = (cols + 3) & ~3;
    const int32_t lo = l->p.act_min;
    const int32_t hi = l->p.act_max;
    int32_t s = 0;
    (void)work;
#if !TG_FC_NARROW_MUL
    for (int32_t c = 0; c < cols; ++c) {
        s += x[c];
    }
    s *= 128;
#endif
    const uint32_t *w = l->packed;
    int32_t acc[4];
    int32_t r = 0;
    for (; r + 4 <= rows; r += 4, w += cols4) {
        tg_fc_block_acc(w, x, cols, l->bias + r, s, acc);
        tg_fc_block_store(acc, l->rq + r, y + r);
    }
    if (r < rows) { /* the last block's rows exist in the data, not in y */
        int8_t last[4];
        tg_fc_block_acc(w, x, cols, l->bias + r, s, acc);
        tg_fc_block_store(acc, l->rq + r, last);
        for (int32_t i = 0; r + i < rows; ++i) {
            y[r + i] = last[i];
        }
    }
    if (lo != -128 || hi != 127) { /* a fused activation: clamp(sat8(v)) = clamp(v) */
        for (r = 0; r < rows; ++r) {
            y[r] = (int8_t)tg_clamp(y[r], lo, hi);
        }
    }
}

#endif /* TG_USE_DSP */
