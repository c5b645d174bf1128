/* Emulator benchmark of the engine's matrix kernels: the FULLY_CONNECTED calls of
 * the model's steps, each on its real inputs, repeated, timed with SysTick; then
 * whole model steps (tg_model_step) chained over the same inputs.
 *
 * Built by `make -C firmware kbench FW=<export> BOARD=<board> OUT=<dir>` with
 * -DTGT_MODEL_H='"<prefix>_model.h"' -DTGT_MODEL=<prefix>_model
 * -DTGT_STATE_BYTES=... -DTGT_SCRATCH_BYTES=...
 *
 * FC layers in model order: front end (if any), per GRU layer gx then gh, head.
 *
 * kb_in.bin (little endian): u32 magic "TGKB", reps, n_steps, n_fc, calibration
 *     loop iterations; per FC layer u32 rows, cols; int8 x[n_steps][k*C] (model
 *     step inputs); per FC layer int8 in[n_steps][cols] (that layer's inputs).
 * kb_out.bin: u32 magic "TGKO", n_fc, n_steps, calibration ticks; per FC layer
 *     u32 ticks of reps*n_steps kernel calls, u32 ticks of as many calls of an
 *     empty function, int8 out[n_steps][rows] (last repetition); then u32 ticks
 *     of reps chains of n_steps model steps (each from the zero state),
 *     int8 y[n_steps][n_outputs] and the final GRU states of the last chain.
 * Exit code: 0, or KB_EXIT_* below. */
#include <stdint.h>

#include TGT_MODEL_H
#include "kernel_bench.h"
#include "harness.h"
#include "semihost.h"

#define KB_MAGIC_IN 0x424b4754u  /* "TGKB" */
#define KB_MAGIC_OUT 0x4f4b4754u /* "TGKO" */
#define KB_MAX_FC (2 + 2 * TG_MAX_LAYERS)
#define KB_MAX_IN 98304
#define KB_MAX_OUT 98304

enum { KB_EXIT_OPEN = 2, KB_EXIT_READ = 3, KB_EXIT_HEADER = 4, KB_EXIT_WRITE = 6 };

static uint8_t in_buf[KB_MAX_IN];
static uint8_t out_buf[KB_MAX_OUT];
static int8_t state[TGT_STATE_BYTES];
static int8_t scratch[TGT_SCRATCH_BYTES];

static uint32_t now(void)
{
    return SYST_CVR & SYST_MASK;
}

/* SysTick counts down; one measurement must stay below 2^24 ticks. */
static uint32_t since(uint32_t start)
{
    return (start - now()) & SYST_MASK;
}

/* A counted loop of exactly 2 instructions per iteration (SUBS, BNE). */
static void spin(uint32_t n)
{
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
}

static uint32_t time_calls(kb_fc_fn fn, const tg_fc_layer *l, const int8_t *in, int8_t *out,
                           uint32_t n_steps, uint32_t reps)
{
    const int32_t cols = l->p.cols;
    const int32_t rows = l->p.rows;
    uint32_t ticks = 0u;
    for (uint32_t r = 0u; r < reps; ++r) {
        const uint32_t t0 = now();
        for (uint32_t s = 0u; s < n_steps; ++s) {
            fn(l, in + (int32_t)s * cols, out + (int32_t)s * rows);
        }
        ticks += since(t0);
    }
    return ticks;
}

int main(void)
{
    const tg_model_params *m = &TGT_MODEL;
    const tg_fc_layer *fc[KB_MAX_FC];
    uint32_t n_fc = 0u;
    if (m->has_front_end) {
        fc[n_fc++] = &m->front_end;
    }
    for (int32_t i = 0; i < m->n_layers; ++i) {
        fc[n_fc++] = &m->gru[i].gx;
        fc[n_fc++] = &m->gru[i].gh;
    }
    fc[n_fc++] = &m->head;

    const int32_t in = sh_open("kb_in.bin", SH_MODE_RB);
    const int32_t out = sh_open("kb_out.bin", SH_MODE_WB);
    if (in < 0 || out < 0) {
        return KB_EXIT_OPEN;
    }
    uint8_t head[20 + 8 * KB_MAX_FC];
    if (sh_read(in, head, 20u) != 0) {
        return KB_EXIT_READ;
    }
    const uint32_t reps = get_u32(head + 4);
    const uint32_t n_steps = get_u32(head + 8);
    const uint32_t spins = get_u32(head + 16);
    if (get_u32(head) != KB_MAGIC_IN || get_u32(head + 12) != n_fc || reps == 0u || n_steps == 0u ||
        spins == 0u) {
        return KB_EXIT_HEADER;
    }
    if (sh_read(in, head + 20, 8u * n_fc) != 0) {
        return KB_EXIT_READ;
    }
    const uint32_t step_in = (uint32_t)(m->kernel * m->channels);
    uint32_t in_bytes = n_steps * step_in;
    uint32_t out_bytes = 16u + 4u + n_steps * (uint32_t)m->n_outputs;
    for (uint32_t j = 0u; j < n_fc; ++j) {
        if (get_u32(head + 20 + 8 * j) != (uint32_t)fc[j]->p.rows ||
            get_u32(head + 24 + 8 * j) != (uint32_t)fc[j]->p.cols) {
            return KB_EXIT_HEADER;
        }
        in_bytes += n_steps * (uint32_t)fc[j]->p.cols;
        out_bytes += 8u + n_steps * (uint32_t)fc[j]->p.rows;
    }
    const uint32_t h_bytes = (uint32_t)(tg_state_buffer_size(m) - (int32_t)step_in);
    out_bytes += h_bytes;
    if (in_bytes > KB_MAX_IN || out_bytes > KB_MAX_OUT) {
        return KB_EXIT_HEADER;
    }
    if (sh_read(in, in_buf, in_bytes) != 0) {
        return KB_EXIT_READ;
    }

    SYST_RVR = SYST_MASK;
    SYST_CVR = 0u;
    SYST_CSR = 5u; /* enable, processor clock, no interrupt */
    while (SYST_CVR == 0u) {
    }

    uint8_t *o = out_buf;
    put_u32(o, KB_MAGIC_OUT);
    put_u32(o + 4, n_fc);
    put_u32(o + 8, n_steps);
    uint32_t t0 = now();
    spin(spins);
    put_u32(o + 12, since(t0));
    o += 16;

    const int8_t *x = (const int8_t *)in_buf;
    const int8_t *layer_in = x + n_steps * step_in;
    for (uint32_t j = 0u; j < n_fc; ++j) {
        int8_t *y = (int8_t *)(o + 8);
        put_u32(o, time_calls(tg_fc_layer_run, fc[j], layer_in, y, n_steps, reps));
        put_u32(o + 4, time_calls(kb_empty_call, fc[j], layer_in, y, n_steps, reps));
        /* the empty calls wrote nothing: y holds the kernel outputs */
        layer_in += n_steps * (uint32_t)fc[j]->p.cols;
        o += 8u + n_steps * (uint32_t)fc[j]->p.rows;
    }

    int8_t *h = state;
    int8_t *ys = (int8_t *)(o + 4);
    uint32_t ticks = 0u;
    for (uint32_t r = 0u; r < reps; ++r) {
        for (uint32_t i = 0u; i < h_bytes; ++i) {
            h[i] = 0; /* the zero state: every hN is int8 with zero point 0 */
        }
        t0 = now();
        for (uint32_t s = 0u; s < n_steps; ++s) {
            tg_model_step(m, x + s * step_in, h, ys + s * (uint32_t)m->n_outputs, scratch);
        }
        ticks += since(t0);
    }
    put_u32(o, ticks);
    o += 4u + n_steps * (uint32_t)m->n_outputs;
    for (uint32_t i = 0u; i < h_bytes; ++i) {
        o[i] = (uint8_t)h[i];
    }
    o += h_bytes;
    SYST_CSR = 0u;

    if (sh_write(out, out_buf, (uint32_t)(o - out_buf)) != 0) {
        return KB_EXIT_WRITE;
    }
    sh_close(in);
    sh_close(out);
    return 0;
}
