/* tinygru engine: one GRU layer step (see tinygru.h).
 *
 * Keras GRU, reset_after=True, gate order z, r, h~:
 *   z  = sigma(x Wz + bz_in + h Uz + bz_rec)
 *   r  = sigma(x Wr + br_in + h Ur + br_rec)
 *   h~ = tanh(x Wh + bh_in + r (.) (h Uh + bh_rec))
 *   h' = h~ + z (.) (h - h~)
 * evaluated as the converted graph does, one int8 op at a time.
 *
 * The products are computed in parts, so that at most 4U gate bytes are live:
 *   gh_zr = rows [0, 2U) of h U     -> gh        (x may still sit at gates[0..))
 *   gx_zr = rows [0, 2U) of x W     -> gates     (x is in work by now)
 *   [z | r] = sigma(gx_zr + gh_zr)  -> gates
 *   gx_h  = rows [2U, 3U) of x W    -> gh        (the work of x, still there)
 *   gh_h  = rows [2U, 3U) of h U    -> gh + U    (the work of h, prepared again)
 * then the element-wise ops, each writing over an input it no longer needs, and h' over h.
 * gh is gates + 2U, or gates + input_size when x is gates itself (the front end output)
 * and is longer than 2U. */
#include "tinygru.h"

#include "tg_fc_dispatch.h"

void tg_gru_step(const tg_gru_params *p, const int8_t *x, int8_t *h, int32_t *work)
{
    int8_t *gates = (int8_t *)(void *)(work + p->work_words);
    /* few values live across the calls (each one costs a saved register): the others are
     * recomputed from p, gates and gh */
#define U (p->units)
    int8_t *gh = gates + (x == gates && p->input_size > 2 * U ? p->input_size : 2 * U);
    TG_TRACE_RESERVE(trace_gx, TG_OP_GX, 3 * U);
    TG_TRACE_RESERVE(trace_gh, TG_OP_GH, 3 * U);

    /* gx = x W + b_in, gh = h U + b_rec (all three gates each); SPLIT_V are views */
    tg_fc_dispatch(&p->gh, h, gh, work, TG_ROWS(0, 2 * U));
    TG_TRACE_FILL(trace_gh, 0, gh, 2 * U);
    tg_fc_dispatch(&p->gx, x, gates, work, TG_ROWS(0, 2 * U));
    TG_TRACE_FILL(trace_gx, 0, gates, 2 * U);
    /* z, r pre-activations: gx_zr + gh_zr, into gates = [z | r] */
    tg_add_s8(&p->zr_add, gates, 1, gh, 1, gates, 2 * U);
    TG_TRACE(TG_OP_ZR_ADD, gates, 2 * U);
    /* [z | r] = sigma(...); SPLIT is a view */
    tg_lut_s8(p->sigmoid, gates, gates, 2 * U);
    TG_TRACE(TG_OP_SIGMOID, gates, 2 * U);
    /* the h~ rows of both products: gx_h at gh, gh_h at gh + U */
    tg_fc_dispatch(&p->gx, 0, gh, work, TG_ROWS(2 * U, 3 * U));
    TG_TRACE_FILL(trace_gx, 2 * U, gh, U);
    tg_fc_dispatch(&p->gh, h, gh + U, work, TG_ROWS(2 * U, 3 * U));
    TG_TRACE_FILL(trace_gh, 2 * U, gh + U, U);
    /* r (.) (h Uh + bh_rec) */
    tg_mul_s8(&p->r_mul, gates + U, 1, gh + U, 1, gh + U, U);
    TG_TRACE(TG_OP_R_MUL, gh + U, U);
    /* h~ pre-activation: gx_h + r (.) gh_h */
    tg_add_s8(&p->h_add, gh, 1, gh + U, 1, gh, U);
    TG_TRACE(TG_OP_H_ADD, gh, U);
    /* h~ = tanh(...) */
    tg_lut_s8(p->tanh, gh, gh, U);
    TG_TRACE(TG_OP_TANH, gh, U);
    /* h - h~ (last read of h) */
    tg_sub_s8(&p->h_sub, h, 1, gh, 1, gh + U, U);
    TG_TRACE(TG_OP_H_SUB, gh + U, U);
    /* z (.) (h - h~) */
    tg_mul_s8(&p->z_mul, gates, 1, gh + U, 1, gh + U, U);
    TG_TRACE(TG_OP_Z_MUL, gh + U, U);
    /* h' = h~ + z (.) (h - h~), written over h */
    tg_add_s8(&p->out_add, gh, 1, gh + U, 1, h, U);
    TG_TRACE(TG_OP_OUT_ADD, h, U);
#undef U
}
