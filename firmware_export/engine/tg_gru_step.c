/* tinygru engine: one GRU layer step (see tinygru.h).
 *
 * Keras GRU, reset_after=True, gate order z, r, h~:
 *   z  = sigma(x Wz + bz_in + h Uz + bz_rec)
 *   r  = sigma(x Wr + br_in + h Ur + br_rec)
 *   h~ = tanh(x Wh + bh_in + r (.) (h Uh + bh_rec))
 *   h' = h~ + z (.) (h - h~)
 * evaluated as the converted graph does, one int8 op at a time.
 *
 * Gates (6U bytes): gx = [gx_zr (2U) | gx_h (U)], gh = [gh_zr (2U) | gh_h (U)].
 * Every later op is elementwise and writes over an input it no longer needs. */
#include "tinygru.h"

void tg_gru_step(const tg_gru_params *p, const int8_t *x, int8_t *h, int8_t *gates, int32_t *work)
{
    const int32_t u = p->units;
    int8_t *gx = gates;         /* [3U] */
    int8_t *gh = gates + 3 * u; /* [3U] */
    int8_t *zr = gx;            /* [2U]: z = zr[0..U), r = zr[U..2U) */
    int8_t *gx_h = gx + 2 * u;
    int8_t *gh_h = gh + 2 * u;

    /* gx = x W + b_in (all three gates); SPLIT_V is a view: gx_zr | gx_h */
    tg_fc_layer_run(&p->gx, x, gx, work);
    TG_TRACE(TG_OP_GX, gx, 3 * u);
    /* gh = h U + b_rec; SPLIT_V is a view: gh_zr | gh_h */
    tg_fc_layer_run(&p->gh, h, gh, work);
    TG_TRACE(TG_OP_GH, gh, 3 * u);
    /* z, r pre-activations: gx_zr + gh_zr */
    tg_add_s8(&p->zr_add, gx, 1, gh, 1, zr, 2 * u);
    TG_TRACE(TG_OP_ZR_ADD, zr, 2 * u);
    /* [z | r] = sigma(...); SPLIT is a view */
    tg_lut_s8(p->sigmoid, zr, zr, 2 * u);
    TG_TRACE(TG_OP_SIGMOID, zr, 2 * u);
    /* r (.) (h Uh + bh_rec) */
    tg_mul_s8(&p->r_mul, zr + u, 1, gh_h, 1, gh_h, u);
    TG_TRACE(TG_OP_R_MUL, gh_h, u);
    /* h~ pre-activation: gx_h + r (.) gh_h */
    tg_add_s8(&p->h_add, gx_h, 1, gh_h, 1, gx_h, u);
    TG_TRACE(TG_OP_H_ADD, gx_h, u);
    /* h~ = tanh(...) */
    tg_lut_s8(p->tanh, gx_h, gx_h, u);
    TG_TRACE(TG_OP_TANH, gx_h, u);
    /* h - h~ (last read of h) */
    tg_sub_s8(&p->h_sub, h, 1, gx_h, 1, gh_h, u);
    TG_TRACE(TG_OP_H_SUB, gh_h, u);
    /* z (.) (h - h~) */
    tg_mul_s8(&p->z_mul, zr, 1, gh_h, 1, gh_h, u);
    TG_TRACE(TG_OP_Z_MUL, gh_h, u);
    /* h' = h~ + z (.) (h - h~), written over h */
    tg_add_s8(&p->out_add, gx_h, 1, gh_h, 1, h, u);
    TG_TRACE(TG_OP_OUT_ADD, h, u);
}
