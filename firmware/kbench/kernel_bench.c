/* Emulator benchmark of the engine: the FULLY_CONNECTED calls of the model's steps and
 * every element-wise op, each on its real inputs, repeated, timed with SysTick; then
 * whole model steps (tg_model_step) chained over the same inputs, and the same steps
 * driven sample by sample through tg_push_sample (the stream's own work).
 *
 * Built by `make -C firmware kbench FW=<export> BOARD=<board> OUT=<dir>` with
 * -DTGT_MODEL_H='"<prefix>_model.h"' -DTGT_MODEL=<prefix>_model
 * -DTGT_STATE_BYTES=... -DTGT_SCRATCH_BYTES=...
 *
 * FC layers in model order: front end (if any), per GRU layer gx then gh, head.
 * Element-wise ops: op = 16 * layer + KB_OP_* (the ops of tg_gru_step in its order),
 * or KB_OP_SOFTMAX.
 *
 * kb_in.bin (little endian): u32 magic "TGKB", reps, n_steps, n_fc, calibration
 *     loop iterations; per FC layer u32 rows, cols; u32 n_ops; per op u32 op, na, nb,
 *     ny (bytes per call of its inputs and output); u32 n_samples; then int8
 *     x[n_steps][k*C] (model step inputs); per FC layer int8 in[n_steps][cols]; per op
 *     int8 a[n_steps][na] and b[n_steps][nb]; zero bytes up to a multiple of 4; int16
 *     counts[n_samples][C] (the raw samples whose pushes run the same n_steps steps).
 * kb_out.bin: u32 magic "TGKO", n_fc, n_steps, calibration ticks; per FC layer
 *     u32 ticks of reps*n_steps kernel calls, u32 ticks of as many calls of an
 *     empty function, int8 out[n_steps][rows] (last repetition); then u32 ticks
 *     of reps chains of n_steps model steps (each from the zero state),
 *     int8 y[n_steps][n_outputs] and the final GRU states of the last chain; per op
 *     u32 ticks, u32 empty ticks, int8 y[n_steps][ny]; u32 ticks of reps chains of
 *     n_samples pushes (each after tg_reset, which is not timed), u32 steps run in
 *     the last chain, int8 y[n_steps][n_outputs] of its steps.
 * Exit code: 0, or KB_EXIT_* below. */
#include <stdint.h>

#include TGT_MODEL_H
#include "harness.h"
#include "kernel_bench.h"
#include "semihost.h"

#define KB_MAGIC_IN 0x424b4754u  /* "TGKB" */
#define KB_MAGIC_OUT 0x4f4b4754u /* "TGKO" */
#define KB_MAX_FC (2 + 2 * TG_MAX_LAYERS)
#define KB_MAX_OPS (1 + 8 * TG_MAX_LAYERS)
#define KB_MAX_HEAD (28 + 8 * KB_MAX_FC + 16 * KB_MAX_OPS)
#ifndef KB_MAX_IN /* boards with little RAM set smaller buffers (board.mk) */
#define KB_MAX_IN 98304
#endif
#ifndef KB_MAX_OUT
#define KB_MAX_OUT 65536
#endif

enum { KB_EXIT_OPEN = 2, KB_EXIT_READ = 3, KB_EXIT_HEADER = 4, KB_EXIT_WRITE = 6 };

/* The element-wise ops of tg_gru_step, in its order, and the head's softmax. */
enum {
    KB_OP_ZR_ADD = 0,
    KB_OP_SIGMOID = 1,
    KB_OP_R_MUL = 2,
    KB_OP_H_ADD = 3,
    KB_OP_TANH = 4,
    KB_OP_H_SUB = 5,
    KB_OP_Z_MUL = 6,
    KB_OP_OUT_ADD = 7,
    KB_OP_SOFTMAX = 15
};

static uint8_t in_buf[KB_MAX_IN] __attribute__((aligned(4)));
static uint8_t out_buf[KB_MAX_OUT];
static int8_t state[TGT_STATE_BYTES];
static int8_t scratch[TGT_SCRATCH_BYTES];
static int32_t work[TG_FC_WORK_WORDS(256)]; /* the FC layers' work words (the widest input) */
static tg_stream stream;

static uint32_t now(void)
{
    return SYST_CVR & SYST_MASK;
}

/* SysTick counts down; one measurement must stay below 2^24 ticks. */
static uint32_t since(uint32_t start)
{
    return (start - now()) & SYST_MASK;
}

/* A counted loop of exactly 2 instructions per iteration (SUBS, BNE). Unified syntax: GCC
 * reads inline assembly as divided syntax, where Thumb-1 (ARMv6-M) has no SUBS spelling. */
static void spin(uint32_t n)
{
    __asm__ volatile(".syntax unified\n1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
}

/* Each element-wise op as tg_gru_step calls it (a, b: its inputs, y: its output), one
 * function per op so that a timed call costs what the step's own call costs. */
#define KB_GATE(op) const tg_gru_params *p = &m->gru[op >> 4]

static void kb_zr_add(const tg_model_params *m, uint32_t op, const int8_t *a, const int8_t *b,
                      int8_t *y)
{
    KB_GATE(op);
    tg_add_s8(&p->zr_add, a, 1, b, 1, y, 2 * p->units);
}

static void kb_sigmoid(const tg_model_params *m, uint32_t op, const int8_t *a, const int8_t *b,
                       int8_t *y)
{
    KB_GATE(op);
    (void)b;
    tg_lut_s8(p->sigmoid, a, y, 2 * p->units);
}

static void kb_r_mul(const tg_model_params *m, uint32_t op, const int8_t *a, const int8_t *b,
                     int8_t *y)
{
    KB_GATE(op);
    tg_mul_s8(&p->r_mul, a, 1, b, 1, y, p->units);
}

static void kb_h_add(const tg_model_params *m, uint32_t op, const int8_t *a, const int8_t *b,
                     int8_t *y)
{
    KB_GATE(op);
    tg_add_s8(&p->h_add, a, 1, b, 1, y, p->units);
}

static void kb_tanh(const tg_model_params *m, uint32_t op, const int8_t *a, const int8_t *b,
                    int8_t *y)
{
    KB_GATE(op);
    (void)b;
    tg_lut_s8(p->tanh, a, y, p->units);
}

static void kb_h_sub(const tg_model_params *m, uint32_t op, const int8_t *a, const int8_t *b,
                     int8_t *y)
{
    KB_GATE(op);
    tg_sub_s8(&p->h_sub, a, 1, b, 1, y, p->units);
}

static void kb_z_mul(const tg_model_params *m, uint32_t op, const int8_t *a, const int8_t *b,
                     int8_t *y)
{
    KB_GATE(op);
    tg_mul_s8(&p->z_mul, a, 1, b, 1, y, p->units);
}

static void kb_out_add(const tg_model_params *m, uint32_t op, const int8_t *a, const int8_t *b,
                       int8_t *y)
{
    KB_GATE(op);
    tg_add_s8(&p->out_add, a, 1, b, 1, y, p->units);
}

static void kb_softmax(const tg_model_params *m, uint32_t op, const int8_t *a, const int8_t *b,
                       int8_t *y)
{
    (void)op;
    (void)b;
    tg_softmax_s8(m->softmax_exp, a, y, 1, m->n_outputs);
}

static const kb_op_fn kb_ops[16] = {
    [KB_OP_ZR_ADD] = kb_zr_add, [KB_OP_SIGMOID] = kb_sigmoid, [KB_OP_R_MUL] = kb_r_mul,
    [KB_OP_H_ADD] = kb_h_add,   [KB_OP_TANH] = kb_tanh,       [KB_OP_H_SUB] = kb_h_sub,
    [KB_OP_Z_MUL] = kb_z_mul,   [KB_OP_OUT_ADD] = kb_out_add, [KB_OP_SOFTMAX] = kb_softmax
};

/* Bytes of input a, input b and output y of one call of an op; 0 when op is unknown. */
static uint32_t op_sizes(const tg_model_params *m, uint32_t op, uint32_t *na, uint32_t *nb,
                         uint32_t *ny)
{
    const uint32_t kind = op & 15u;
    if (kind == KB_OP_SOFTMAX) {
        if (op != KB_OP_SOFTMAX || m->softmax_exp == 0) {
            return 0u;
        }
        *na = *ny = (uint32_t)m->n_outputs;
        *nb = 0u;
        return 1u;
    }
    if ((op >> 4) >= (uint32_t)m->n_layers || kind > KB_OP_OUT_ADD) {
        return 0u;
    }
    const uint32_t u = (uint32_t)m->gru[op >> 4].units;
    const uint32_t n = (kind == KB_OP_ZR_ADD || kind == KB_OP_SIGMOID) ? 2u * u : u;
    *na = *ny = n;
    *nb = (kind == KB_OP_SIGMOID || kind == KB_OP_TANH) ? 0u : n;
    return 1u;
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
            fn(l, in + (int32_t)s * cols, out + (int32_t)s * rows, work);
        }
        ticks += since(t0);
    }
    return ticks;
}

static uint32_t time_ops(kb_op_fn fn, const tg_model_params *m, uint32_t op, const int8_t *a,
                         const int8_t *b, int8_t *y, const uint32_t *sizes, uint32_t n_steps,
                         uint32_t reps)
{
    uint32_t ticks = 0u;
    for (uint32_t r = 0u; r < reps; ++r) {
        const uint32_t t0 = now();
        for (uint32_t s = 0u; s < n_steps; ++s) {
            fn(m, op, a + s * sizes[0], b + s * sizes[1], y + s * sizes[2]);
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
    uint8_t head[KB_MAX_HEAD];
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
    if (sh_read(in, head + 20, 8u * n_fc + 4u) != 0) {
        return KB_EXIT_READ;
    }
    const uint8_t *hp = head + 20 + 8u * n_fc;
    const uint32_t n_ops = get_u32(hp);
    if (n_ops > KB_MAX_OPS || sh_read(in, head + 24 + 8u * n_fc, 16u * n_ops + 4u) != 0) {
        return n_ops > KB_MAX_OPS ? KB_EXIT_HEADER : KB_EXIT_READ;
    }
    hp += 4;
    const uint32_t channels = (uint32_t)m->channels;
    const uint32_t step_in = (uint32_t)m->kernel * channels;
    const uint32_t n_out = (uint32_t)m->n_outputs;
    uint32_t in_bytes = n_steps * step_in;
    uint32_t out_bytes = 16u + 4u + n_steps * n_out;
    for (uint32_t j = 0u; j < n_fc; ++j) {
        if (get_u32(head + 20 + 8 * j) != (uint32_t)fc[j]->p.rows ||
            get_u32(head + 24 + 8 * j) != (uint32_t)fc[j]->p.cols || fc[j]->p.cols > 256) {
            return KB_EXIT_HEADER;
        }
        in_bytes += n_steps * (uint32_t)fc[j]->p.cols;
        out_bytes += 8u + n_steps * (uint32_t)fc[j]->p.rows;
    }
    uint32_t op_id[KB_MAX_OPS];
    uint32_t op_size[KB_MAX_OPS][3];
    for (uint32_t j = 0u; j < n_ops; ++j) {
        const uint8_t *q = hp + 16u * j;
        op_id[j] = get_u32(q);
        if (!op_sizes(m, op_id[j], &op_size[j][0], &op_size[j][1], &op_size[j][2]) ||
            get_u32(q + 4) != op_size[j][0] || get_u32(q + 8) != op_size[j][1] ||
            get_u32(q + 12) != op_size[j][2]) {
            return KB_EXIT_HEADER;
        }
        in_bytes += n_steps * (op_size[j][0] + op_size[j][1]);
        out_bytes += 8u + n_steps * op_size[j][2];
    }
    const uint32_t n_samples = get_u32(hp + 16u * n_ops);
    const uint32_t counts_at = (in_bytes + 3u) & ~3u;
    in_bytes = counts_at + 2u * n_samples * channels;
    const uint32_t h_bytes = (uint32_t)(tg_state_buffer_size(m) - (int32_t)step_in);
    out_bytes += h_bytes + 8u + n_steps * n_out;
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
    const int8_t *data = x + n_steps * step_in;
    for (uint32_t j = 0u; j < n_fc; ++j) {
        int8_t *y = (int8_t *)(o + 8);
        put_u32(o, time_calls(tg_fc_layer_run, fc[j], data, y, n_steps, reps));
        put_u32(o + 4, time_calls(kb_empty_call, fc[j], data, y, n_steps, reps));
        /* the empty calls wrote nothing: y holds the kernel outputs */
        data += n_steps * (uint32_t)fc[j]->p.cols;
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
            tg_model_step(m, x + s * step_in, h, ys + s * n_out, scratch);
        }
        ticks += since(t0);
    }
    put_u32(o, ticks);
    o += 4u + n_steps * n_out;
    for (uint32_t i = 0u; i < h_bytes; ++i) {
        o[i] = (uint8_t)h[i];
    }
    o += h_bytes;

    for (uint32_t j = 0u; j < n_ops; ++j) {
        const int8_t *a = data;
        const int8_t *b = a + n_steps * op_size[j][0];
        int8_t *y = (int8_t *)(o + 8);
        put_u32(o,
                time_ops(kb_ops[op_id[j] & 15u], m, op_id[j], a, b, y, op_size[j], n_steps, reps));
        put_u32(o + 4, time_ops(kb_empty_op, m, op_id[j], a, b, y, op_size[j], n_steps, reps));
        data = b + n_steps * op_size[j][1];
        o += 8u + n_steps * op_size[j][2];
    }

    /* the same steps through the stream: quantization, ring and step */
    const int16_t *counts = (const int16_t *)(const void *)(in_buf + counts_at);
    if (tg_stream_init(&stream, m, state, TGT_STATE_BYTES, scratch, TGT_SCRATCH_BYTES) != TG_OK) {
        return KB_EXIT_HEADER;
    }
    ys = (int8_t *)(o + 8);
    uint32_t ready = 0u;
    ticks = 0u;
    for (uint32_t r = 0u; r < reps; ++r) {
        tg_reset(&stream);
        ready = 0u;
        t0 = now();
        for (uint32_t i = 0u; i < n_samples; ++i) {
            int8_t *y = ys + (ready < n_steps ? ready : n_steps - 1u) * n_out;
            if (tg_push_sample(&stream, counts + i * channels, y) == TG_OUTPUT_READY) {
                ready++;
            }
        }
        ticks += since(t0);
    }
    put_u32(o, ticks);
    put_u32(o + 4, ready);
    o += 8u + n_steps * n_out;
    SYST_CSR = 0u;

    if (sh_write(out, out_buf, (uint32_t)(o - out_buf)) != 0) {
        return KB_EXIT_WRITE;
    }
    sh_close(in);
    sh_close(out);
    return 0;
}
