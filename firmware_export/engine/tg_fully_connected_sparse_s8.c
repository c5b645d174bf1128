/* tinygru int8 engine: FULLY_CONNECTED over block-sparse weights (see tinygru.h). */
#include "tinygru.h"

#include "tg_dsp.h"
#include "tg_requantize.h"

/* The positions of row `first` in the group stream and the values: from the start, from the
 * layer's split row, or by walking the counts from the nearer of the two. */
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
        const int32_t n = **g;
        *g += 1 + n;
        *v += n;
    }
}

/* One output from the row's 2 acc and its requantization (mult, add, shift). */
static inline int8_t tg_sparse_out(int32_t acc2, const int32_t *row, int32_t lo, int32_t hi)
{
    const int32_t v = tg_sat8(tg_rq_apply(acc2, row[1], row[2], row[3]));
    return (int8_t)tg_clamp(v, lo, hi);
}

#if TG_USE_DSP

/* d (x0 + 128, x1, x2 + 128, x3) and n = -(d & 0x00FF00FF) per halfword of every group of
 * 4 inputs (missing inputs of the last group are 0), in work[2g], work[2g + 1]. */
static void tg_sparse_prepare(const int8_t *x, int32_t cols, int32_t *work)
{
    const int8_t *end = x + (cols & ~3);
    for (; x != end; x += 4, work += 2) {
        const int32_t d = tg_load_s8x4(x) ^ 0x00800080;
        work[0] = d;
        work[1] = __ssub16(0, d & 0x00FF00FF);
    }
    if ((cols & 3) != 0) {
        uint32_t u = 0u;
        for (int32_t j = 0; j < (cols & 3); ++j) {
            u |= (uint32_t)(uint8_t)x[j] << (8 * j);
        }
        const int32_t d = (int32_t)u ^ 0x00800080;
        work[0] = d;
        work[1] = __ssub16(0, d & 0x00FF00FF);
    }
}

#if defined(__GNUC__)
/* Every row: a = start; per kept group g (two at a time, an odd one first), with v its word
 * and (d, n) = work[2g], work[2g + 1]: a += SMLAD(d, SXTB16(v)) + SMLAD(n, v); then the
 * row's requantization of a = 256 acc (as tg_fc_packed_s8). Registers: r0 the group
 * stream, r1 the row records, r2 the values, r3 the work words, r4 the output, r5 its end;
 * r6 the count, r8 a, r9..r12 and lr the group's temporaries; r7 is not used. */
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
    "ldrb r9, [r0], #1\n\t"                                                                        \
    "add r9, r3, r9, lsl #3\n\t"                                                                   \
    "ldrd r10, r11, [r9]\n\t"                                                                      \
    "ldr r12, [r2], #4\n\t"                                                                        \
    "sxtb16 lr, r12\n\t"                                                                           \
    "smlad r8, r10, lr, r8\n\t"                                                                    \
    "smlad r8, r11, r12, r8\n\t"
    /* clang-format off */
    __asm__ volatile(
        "1:\n\t"
        "ldrb r6, [r0], #1\n\t"          /* a row: its group count */
        "ldr r8, [r1], #4\n\t"           /* a = start */
        "lsrs r6, r6, #1\n\t"            /* pairs; carry: an odd group */
        "bcc 4f\n\t"
        TG_SPARSE_GROUP
        "4:\n\t"
        "cbz r6, 3f\n"
        "2:\n\t"
        TG_SPARSE_GROUP
        TG_SPARSE_GROUP
        "subs r6, r6, #1\n\t"
        "bne 2b\n"
        "3:\n\t"
        "ldm r1!, {r9, r10, r11}\n\t"    /* mult, add, shift */
        "asr r12, r8, #7\n\t"
        "smmlar lr, r12, r9, r10\n\t"
        "add lr, lr, r12, asr #31\n\t"
        "asr lr, lr, r11\n\t"
        "ssat lr, #8, lr\n\t"
        "strb lr, [r4], #1\n\t"
        "cmp r4, r5\n\t"
        "bne 1b"
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
    tg_sparse_rows_dsp(g, w->rows + 4 * first, v, work + 1, y, y + n);
    if (lo != -128 || hi != 127) { /* a fused activation: clamp(sat8(v)) = clamp(v) */
        for (int32_t r = 0; r < n; ++r) {
            y[r] = (int8_t)tg_clamp(y[r], lo, hi);
        }
    }
#else
    for (int32_t r = 0; r < n; ++r) {
        const int32_t *row = w->rows + 4 * (first + r);
        int32_t a = row[0];
        for (int32_t k = *g++; k > 0; --k) {
            const int32_t *dn = work + 1 + 2 * *g++;
            const int32_t vw = (int32_t)*v++;
            a = __smlad(dn[0], __sxtb16(vw), a);
            a = __smlad(dn[1], vw, a);
        }
        y[r] = tg_sparse_out(a >> 7, row, lo, hi); /* a = 256 acc */
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
    const int8_t *v = (const int8_t *)(const void *)vw; /* bytes w0..w3 per group */
    for (int32_t r = 0; r < n; ++r) {
        const int32_t *row = w->rows + 4 * (first + r);
        int32_t a = row[0];
        int32_t k = *g++;
        const int32_t last_short = k > 0 && g[k - 1] == short_group;
        for (k -= last_short; k > 0; --k, v += 4) {
            const int8_t *xc = in + 4 * *g++;
            a += v[0] * xc[0] + v[1] * xc[1] + v[2] * xc[2] + v[3] * xc[3];
        }
        if (last_short) { /* its weights past the last column are 0 and are not read */
            const int8_t *xc = in + 4 * *g++;
            for (int32_t j = 0; j < (cols & 3); ++j) {
                a += v[j] * xc[j];
            }
            v += 4;
        }
        y[r] = tg_sparse_out(a * 2, row, l->p.act_min, l->p.act_max);
    }
}

#endif /* TG_USE_DSP */
