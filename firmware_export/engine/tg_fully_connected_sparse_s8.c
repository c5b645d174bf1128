/* tinygru int8 engine: FULLY_CONNECTED over block-sparse weights (see tinygru.h). */
#include "tinygru.h"

#include "tg_dsp.h"
#include "tg_requantize.h"

/* Words per row record: ctl, start, mult, add, shift. */
#define TG_SPARSE_ROW 5

/* The kept-group count of the row whose record is row, from ctl or from the stream. */
static inline int32_t tg_sparse_count(const int32_t *row, const uint8_t **g)
{
    int32_t n = row[0];
    if (n > TG_SPARSE_SHORT) {
        n = **g;
        *g += 1;
    }
    return n;
}

/* The positions of row `first` in the group stream and the values: from the start, from the
 * layer's split row, or by walking the records from the nearer of the two. */
static void tg_sparse_seek(const tg_fc_sparse *w, int32_t first, const uint8_t **g,
                           const uint32_t **v)
{
    int32_t r = 0;
    *g = w->groups;
    *v = w->values;
    if (w->split_row > 0 && first >= w->split_row) {
        r = w->split_row;
        *g += w->split_groups;
        *v += w->split_values;
    }
    for (; r < first; ++r) {
        const int32_t n = tg_sparse_count(w->rows + TG_SPARSE_ROW * r, g);
        *g += n;
        *v += 2 * n;
    }
}

/* One output from the row's 2 acc and its requantization (mult, add, shift). */
static inline int8_t tg_sparse_out(int32_t acc2, const int32_t *row, int32_t lo, int32_t hi)
{
    const int32_t v = tg_sat8(tg_rq_apply(acc2, row[2], row[3], row[4]));
    return (int8_t)tg_clamp(v, lo, hi);
}

#if TG_USE_DSP

/* (x0, x2) and (x1, x3) as int16 halfwords per group of 4 inputs (missing inputs of the
 * last group are 0), in work[2g], work[2g + 1]. */
static void tg_sparse_prepare(const int8_t *x, int32_t cols, int32_t *work)
{
    const int8_t *end = x + (cols & ~3);
#if defined(__GNUC__)
    const int8_t *end8 = x + (cols & ~7);
    if (x != end8) { /* two groups per iteration (LDR takes any alignment, LDRD does not) */
        int32_t a, b, c, d, e, f;
        __asm__ volatile("1:\n\t"
                         "ldr %[a], [%[x]], #4\n\t"
                         "ldr %[b], [%[x]], #4\n\t"
                         "sxtb16 %[c], %[a]\n\t"
                         "sxtb16 %[d], %[a], ror #8\n\t"
                         "sxtb16 %[e], %[b]\n\t"
                         "sxtb16 %[f], %[b], ror #8\n\t"
                         "strd %[c], %[d], [%[w]], #8\n\t"
                         "strd %[e], %[f], [%[w]], #8\n\t"
                         "cmp %[x], %[end]\n\t"
                         "bne 1b"
                         : [x] "+r"(x), [w] "+r"(work), [a] "=&r"(a), [b] "=&r"(b), [c] "=&r"(c),
                           [d] "=&r"(d), [e] "=&r"(e), [f] "=&r"(f)
                         : [end] "r"(end8)
                         : "cc", "memory");
    }
#endif
    for (; x != end; x += 4, work += 2) {
        const int32_t w = tg_load_s8x4(x);
        work[0] = __sxtb16(w);
        work[1] = tg_sxtb16_ror8(w);
    }
    if ((cols & 3) != 0) {
        uint32_t u = 0u;
        for (int32_t j = 0; j < (cols & 3); ++j) {
            u |= (uint32_t)(uint8_t)x[j] << (8 * j);
        }
        work[0] = __sxtb16((int32_t)u);
        work[1] = tg_sxtb16_ror8((int32_t)u);
    }
}

#if defined(__GNUC__)
/* Every row: load its record (ctl, a = start, mult, add, shift); jump by ctl into an unrolled
 * run of TG_SPARSE_SHORT groups so that exactly its groups follow (ctl 0: none; a longer row
 * first runs its groups beyond TG_SPARSE_SHORT one at a time); per group g, with (p, q) its
 * two value words: a += SMLAD(work[2g], p) + SMLAD(work[2g + 1], q); then the row's
 * requantization of a = 2 acc (tg_rq_apply). Registers: r0 the group stream, r1 the row
 * records, r2 the values, r3 the work words, r4 the output, r5 its end; r6 ctl, then with
 * r7 (saved on the stack), r12 and lr the group's temporaries; r8 a; r9..r11 mult, add,
 * shift (r9 counts a long row's extra groups, then is reloaded). */
static void tg_sparse_rows_dsp(const uint8_t *groups, const int32_t *rows, const uint32_t *values,
                               const int32_t *work, int8_t *y, int8_t *y_end)
{
    register const uint8_t *g __asm__("r0") = groups;
    register const int32_t *r __asm__("r1") = rows;
    register const uint32_t *v __asm__("r2") = values;
    register const int32_t *xw __asm__("r3") = work;
    register int8_t *out __asm__("r4") = y;
    register int8_t *end __asm__("r5") = y_end;
#define TG_SPARSE_GROUP                                                                            \
    "ldrb r6, [r0], #1\n\t"                                                                        \
    "add r6, r3, r6, lsl #3\n\t"                                                                   \
    "ldrd r7, r12, [r6]\n\t"                                                                       \
    "ldrd r6, lr, [r2], #8\n\t"                                                                    \
    "smlad r8, r7, r6, r8\n\t"                                                                     \
    "smlad r8, r12, lr, r8\n\t"
    /* clang-format off */
    __asm__ volatile(
        "push {r7}\n"
        "1:\n\t"
        "ldm r1!, {r6, r8, r9, r10, r11}\n\t"  /* ctl, a = start, mult, add, shift */
        "tbb [pc, r6]\n"
        "2:\n\t"
        ".byte (3f - 2b) / 2\n\t"
        ".byte (11f - 2b) / 2\n\t"
        ".byte (12f - 2b) / 2\n\t"
        ".byte (13f - 2b) / 2\n\t"
        ".byte (14f - 2b) / 2\n\t"
        ".byte (15f - 2b) / 2\n\t"
        ".byte (16f - 2b) / 2\n\t"
        ".byte (17f - 2b) / 2\n\t"
        ".byte (18f - 2b) / 2\n\t"
        ".byte (5f - 2b) / 2\n\t"
        ".p2align 1\n"
        "18:\n\t" TG_SPARSE_GROUP
        "17:\n\t" TG_SPARSE_GROUP
        "16:\n\t" TG_SPARSE_GROUP
        "15:\n\t" TG_SPARSE_GROUP
        "14:\n\t" TG_SPARSE_GROUP
        "13:\n\t" TG_SPARSE_GROUP
        "12:\n\t" TG_SPARSE_GROUP
        "11:\n\t" TG_SPARSE_GROUP
        "3:\n\t"
        "smmlar r6, r8, r9, r10\n\t"
        "add r6, r6, r8, asr #31\n\t"
        "asr r6, r6, r11\n\t"
        "ssat r6, #8, r6\n\t"
        "strb r6, [r4], #1\n\t"
        "cmp r4, r5\n\t"
        "bne 1b\n\t"
        "b 6f\n"
        "5:\n\t"                               /* a long row: n - 8 groups, then 8 */
        "ldrb r9, [r0], #1\n\t"
        "sub r9, r9, #8\n"
        "4:\n\t"
        TG_SPARSE_GROUP
        "subs r9, r9, #1\n\t"
        "bne 4b\n\t"
        "ldr r9, [r1, #-12]\n\t"               /* mult */
        "b 18b\n"
        "6:\n\t"
        "pop {r7}"
        : "+r"(g), "+r"(r), "+r"(v), "+r"(out)
        : "r"(xw), "r"(end)
        : "r6", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
    /* clang-format on */
#undef TG_SPARSE_GROUP
}
#endif

void tg_fully_connected_sparse_s8(const tg_fc_layer *l, const int8_t *x, int8_t *y, int32_t *work,
                                  tg_rows rows)
{
    const tg_fc_sparse *w = l->sparse;
    const int32_t first = (int32_t)(rows & 0xFFFFu);
    const int32_t n = (int32_t)(rows >> 16) - first;
    const int32_t lo = l->p.act_min;
    const int32_t hi = l->p.act_max;
    const uint8_t *g;
    const uint32_t *v;
    if (x != 0) {
        tg_sparse_prepare(x, l->p.cols, work + 1);
    }
    tg_sparse_seek(w, first, &g, &v);
#if defined(__GNUC__)
    tg_sparse_rows_dsp(g, w->rows + TG_SPARSE_ROW * first, v, work + 1, y, y + n);
    if (lo != -128 || hi != 127) { /* a fused activation: clamp(sat8(v)) = clamp(v) */
        for (int32_t r = 0; r < n; ++r) {
            y[r] = (int8_t)tg_clamp(y[r], lo, hi);
        }
    }
#else
    for (int32_t r = 0; r < n; ++r) {
        const int32_t *row = w->rows + TG_SPARSE_ROW * (first + r);
        int32_t a = row[1];
        for (int32_t k = tg_sparse_count(row, &g); k > 0; --k, v += 2) {
            const int32_t *xp = work + 1 + 2 * *g++;
            a = __smlad(xp[0], (int32_t)v[0], a);
            a = __smlad(xp[1], (int32_t)v[1], a);
        }
        y[r] = tg_sparse_out(a, row, lo, hi); /* a = 2 acc */
    }
#endif
}

#else /* portable C */

void tg_fully_connected_sparse_s8(const tg_fc_layer *l, const int8_t *x, int8_t *y, int32_t *work,
                                  tg_rows rows)
{
    const tg_fc_sparse *w = l->sparse;
    const int32_t first = (int32_t)(rows & 0xFFFFu);
    const int32_t n = (int32_t)(rows >> 16) - first;
    const int32_t cols = l->p.cols;
    /* group numbers ascend within a row, so only a row's last group can run past the last
     * column (when cols % 4 != 0): it is the one numbered cols / 4 */
    const int32_t short_group = (cols & 3) != 0 ? cols >> 2 : -1;
    int8_t *in = (int8_t *)(void *)(work + 1); /* the input, kept for a later call */
    const uint8_t *g;
    const uint32_t *vw;
    if (x != 0) {
        for (int32_t c = 0; c < cols; ++c) {
            in[c] = x[c];
        }
    }
    tg_sparse_seek(w, first, &g, &vw);
    const int8_t *v = (const int8_t *)(const void *)vw; /* bytes w0..w3, then 4 zero bytes */
    for (int32_t r = 0; r < n; ++r) {
        const int32_t *row = w->rows + TG_SPARSE_ROW * (first + r);
        const int32_t a = row[1];
        int32_t d = 0;
        int32_t k = tg_sparse_count(row, &g);
        const int32_t last_short = k > 0 && g[k - 1] == short_group;
        for (k -= last_short; k > 0; --k, v += 8) {
            const int8_t *xc = in + 4 * *g++;
            d += v[0] * xc[0] + v[1] * xc[1] + v[2] * xc[2] + v[3] * xc[3];
        }
        if (last_short) { /* its weights past the last column are 0 and are not read */
            const int8_t *xc = in + 4 * *g++;
            for (int32_t j = 0; j < (cols & 3); ++j) {
                d += v[j] * xc[j];
            }
            v += 8;
        }
        y[r] = tg_sparse_out(a + 2 * d, row, l->p.act_min, l->p.act_max); /* 2 acc */
    }
}

#endif /* TG_USE_DSP */
