/* The engine runner: raw counts in, engine outputs out, via semihosting files in
 * the emulator's working directory (firmware_export/qemu.py drives it).
 *
 * Built by `make -C firmware runner FW=<export> BOARD=<board> OUT=<dir>` with
 * -DTGT_MODEL_H='"<prefix>_model.h"' -DTGT_MODEL=<prefix>_model
 * -DTGT_STATE_BYTES=... -DTGT_SCRATCH_BYTES=...
 *
 * Windows (tg_window, each from a zero state):
 * tg_in.bin:  int32 magic "TGIN", n_windows, n_samples, channels; then
 *             int16 counts[n_windows][n_samples][channels], little endian.
 * tg_out.bin: int32 magic "TGOU", n_windows, n_outputs, state_bytes (GRU states);
 *             per window: uint32 SysTick ticks of tg_window, int32 status,
 *             int8 y[n_outputs], int8 h[state_bytes];
 *             trailer: uint32 peak stack bytes (painted-stack high-water mark).
 *
 * Series (tg_push_sample, one sample at a time, state carried; reset per series):
 * tg_in.bin:  int32 magic "TGIS", n_series, n_samples, channels; counts as above.
 * tg_out.bin: int32 magic "TGOS", n_series, n_outputs, state_bytes; then one
 *             record per step (every push that returned TG_OUTPUT_READY):
 *             uint32 SysTick ticks of the pushes since the previous record,
 *             int32 status, int8 y[n_outputs], int8 h[state_bytes] after the step;
 *             the same trailer.
 * Exit code: 0, or TGT_EXIT_* below. */
#include <stdint.h>

#include TGT_MODEL_H
#include "harness.h"
#include "semihost.h"

#define TGT_MAGIC_IN 0x4e494754u         /* "TGIN" */
#define TGT_MAGIC_OUT 0x554f4754u        /* "TGOU" */
#define TGT_MAGIC_SERIES_IN 0x53494754u  /* "TGIS" */
#define TGT_MAGIC_SERIES_OUT 0x534f4754u /* "TGOS" */
#ifndef TGT_MAX_COUNTS                   /* a board with little RAM sets a smaller one (board.mk) */
#define TGT_MAX_COUNTS 16384
#endif
#define TGT_MAX_RECORD 1024
#define TGT_PAINT 0xa5a5a5a5u

enum {
    TGT_EXIT_OPEN = 2,
    TGT_EXIT_READ = 3,
    TGT_EXIT_HEADER = 4,
    TGT_EXIT_INIT = 5,
    TGT_EXIT_WRITE = 6
};

extern uint32_t __bss_end[];
extern uint32_t __stack_top[];

static int16_t counts[TGT_MAX_COUNTS];
static int8_t state[TGT_STATE_BYTES];
static int8_t scratch[TGT_SCRATCH_BYTES];
static uint8_t record[TGT_MAX_RECORD];
static tg_stream stream;

/* SysTick counts down from SYST_MASK, no interrupt: a window must take fewer
 * than 2^24 ticks (671 M instructions at 40 per tick). */
static uint32_t ticks_between(uint32_t start, uint32_t end)
{
    return (start - end) & SYST_MASK;
}

static uint32_t stack_pointer(void)
{
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

static int32_t write_u32s(int32_t fd, uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    uint8_t buf[16];
    put_u32(buf, a);
    put_u32(buf + 4, b);
    put_u32(buf + 8, c);
    put_u32(buf + 12, d);
    return sh_write(fd, buf, 16u);
}

static int32_t write_record(int32_t out, uint32_t ticks, tg_status status, uint32_t n_out,
                            uint32_t h_bytes)
{
    put_u32(record, ticks);
    put_u32(record + 4, (uint32_t)(int32_t)status);
    for (uint32_t i = 0u; i < h_bytes; ++i) {
        record[8u + n_out + i] = (uint8_t)stream.h[i];
    }
    return sh_write(out, record, 8u + n_out + h_bytes);
}

/* One tg_window per window of n_samples samples. */
static int run_windows(int32_t in, int32_t out, uint32_t n_windows, uint32_t n_samples,
                       uint32_t n_out, uint32_t h_bytes)
{
    const uint32_t channels = (uint32_t)stream.model->channels;
    if (n_samples * channels > TGT_MAX_COUNTS) {
        return TGT_EXIT_HEADER;
    }
    for (uint32_t w = 0u; w < n_windows; ++w) {
        if (sh_read(in, counts, n_samples * channels * 2u) != 0) {
            return TGT_EXIT_READ;
        }
        int8_t *y = (int8_t *)(record + 8);
        const uint32_t t0 = SYST_CVR & SYST_MASK;
        const tg_status status = tg_window(&stream, counts, (int32_t)n_samples, y);
        const uint32_t t1 = SYST_CVR & SYST_MASK;
        if (write_record(out, ticks_between(t0, t1), status, n_out, h_bytes) != 0) {
            return TGT_EXIT_WRITE;
        }
    }
    return 0;
}

/* tg_push_sample over each series, read in chunks of whole samples; a record per step. */
static int run_series(int32_t in, int32_t out, uint32_t n_series, uint32_t n_samples,
                      uint32_t n_out, uint32_t h_bytes)
{
    const uint32_t channels = (uint32_t)stream.model->channels;
    const uint32_t chunk = TGT_MAX_COUNTS / channels;
    int8_t *y = (int8_t *)(record + 8);
    for (uint32_t s = 0u; s < n_series; ++s) {
        tg_reset(&stream);
        uint32_t ticks = 0u;
        for (uint32_t done = 0u; done < n_samples;) {
            const uint32_t n = n_samples - done < chunk ? n_samples - done : chunk;
            if (sh_read(in, counts, n * channels * 2u) != 0) {
                return TGT_EXIT_READ;
            }
            for (uint32_t i = 0u; i < n; ++i) {
                const uint32_t t0 = SYST_CVR & SYST_MASK;
                const tg_status status = tg_push_sample(&stream, counts + i * channels, y);
                const uint32_t t1 = SYST_CVR & SYST_MASK;
                ticks += ticks_between(t0, t1);
                if (status == TG_OK) {
                    continue;
                }
                if (write_record(out, ticks, status, n_out, h_bytes) != 0) {
                    return TGT_EXIT_WRITE;
                }
                ticks = 0u;
            }
            done += n;
        }
    }
    return 0;
}

int main(void)
{
    /* paint the free stack below this frame for the high-water mark */
    const uint32_t sp = stack_pointer();
    for (volatile uint32_t *p = __bss_end; (uint32_t)p < sp - 64u; ++p) {
        *p = TGT_PAINT;
    }

    const int32_t in = sh_open("tg_in.bin", SH_MODE_RB);
    const int32_t out = sh_open("tg_out.bin", SH_MODE_WB);
    if (in < 0 || out < 0) {
        return TGT_EXIT_OPEN;
    }
    uint8_t head[16];
    if (sh_read(in, head, 16u) != 0) {
        return TGT_EXIT_READ;
    }
    const uint32_t magic = get_u32(head);
    const uint32_t n_runs = get_u32(head + 4);
    const uint32_t n_samples = get_u32(head + 8);
    const uint32_t channels = get_u32(head + 12);
    const tg_model_params *m = &TGT_MODEL;
    const int series = magic == TGT_MAGIC_SERIES_IN;
    if ((magic != TGT_MAGIC_IN && !series) || channels != (uint32_t)m->channels ||
        channels > TGT_MAX_COUNTS) {
        return TGT_EXIT_HEADER;
    }
    if (tg_stream_init(&stream, m, state, TGT_STATE_BYTES, scratch, TGT_SCRATCH_BYTES) != TG_OK) {
        return TGT_EXIT_INIT;
    }
    const uint32_t n_out = (uint32_t)m->n_outputs;
    const uint32_t h_bytes = (uint32_t)(tg_state_buffer_size(m) - m->kernel * m->channels);
    if (8u + n_out + h_bytes > TGT_MAX_RECORD) {
        return TGT_EXIT_HEADER;
    }
    const uint32_t magic_out = series ? TGT_MAGIC_SERIES_OUT : TGT_MAGIC_OUT;
    if (write_u32s(out, magic_out, n_runs, n_out, h_bytes) != 0) {
        return TGT_EXIT_WRITE;
    }

    SYST_RVR = SYST_MASK;
    SYST_CVR = 0u;
    SYST_CSR = 5u; /* enable, processor clock, no interrupt */
    while (SYST_CVR == 0u) {
    }
    const int err = series ? run_series(in, out, n_runs, n_samples, n_out, h_bytes)
                           : run_windows(in, out, n_runs, n_samples, n_out, h_bytes);
    SYST_CSR = 0u;
    if (err != 0) {
        return err;
    }

    uint32_t peak = 0u;
    for (const volatile uint32_t *p = __bss_end; p < __stack_top; ++p) {
        if (*p != TGT_PAINT) {
            peak = (uint32_t)__stack_top - (uint32_t)p;
            break;
        }
    }
    uint8_t trailer[4];
    put_u32(trailer, peak);
    if (sh_write(out, trailer, 4u) != 0) {
        return TGT_EXIT_WRITE;
    }
    sh_close(in);
    sh_close(out);
    return 0;
}
