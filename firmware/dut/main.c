/* Device under test: the tinygru engine with one exported model behind the
 * device protocol (protocol.h) on the board's console UART (board/uart.h).
 *
 * At boot it computes the sha256 of the model data it links (model_hash.h) and
 * reports it with info%; the host compares it with the export's files.json.
 *
 * Build with (see firmware/Makefile, which sets them from its DUT_* options):
 *   -DDUT_MODEL_H='"<prefix>_model.h"' -DDUT_CONFIG_H='"<prefix>_config.h"'
 *   -DDUT_MODEL=<prefix>_model -DDUT_P=<PREFIX> -DDUT_NAME='"<prefix>"'
 *   -DDUT_SHA256='"<sha256 of step_int8.tflite>"' -DDUT_TARGET='"cortex-m4/mps2-an386"'
 * and optionally:
 *   -DDUT_MODEL_ID='"kws01"'   the profile% model id (default DUT_NAME)
 *   -DDUT_INPUT_INT8=1         db takes the int8 model input (T*C bytes), not int16 counts
 *   -DDUT_ENERGY=1             MLPerf energy mode: timestamps pulse a pin, no m-lap-us lines
 *   -DDUT_PIN_REG=0x40028000u -DDUT_PIN_MASK=1u   the pin's output register and bit (energy)
 *   -DDUT_BAUD=9600u           console line rate (default 115200) */
#include <stdint.h>
#include <string.h>

#include DUT_MODEL_H
#include DUT_CONFIG_H
#include "board.h"
#include "model_hash.h"
#include "protocol.h"
#include "tinygru_kernels.h" /* TG_USE_DSP: which word order the model data holds */
#include "timer.h"
#include "uart.h"

#define DUT_CAT2(a, b) a##b
#define DUT_CAT(a, b) DUT_CAT2(a, b)
#define DUT_STR2(x) #x
#define DUT_STR(x) DUT_STR2(x)
#define DUT_(name) DUT_CAT(DUT_P, name)

#ifndef DUT_BAUD
#define DUT_BAUD 115200u
#endif
#ifndef DUT_MODEL_ID
#define DUT_MODEL_ID DUT_NAME
#endif
#ifndef DUT_INPUT_INT8
#define DUT_INPUT_INT8 0
#endif
#ifndef DUT_ENERGY
#define DUT_ENERGY 0
#endif
#if DUT_ENERGY && !defined(DUT_PIN_REG)
#error "DUT_ENERGY=1 needs the timestamp pin: -DDUT_PIN_REG=<output register> -DDUT_PIN_MASK=<bit>"
#endif
#if defined(__ARM_BIG_ENDIAN) ||                                                                   \
    (defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__)
#error "the db buffer holds int16 little endian values read in place: little-endian targets only"
#endif

#define DUT_WINDOW DUT_(_WINDOW)
#define DUT_CHANNELS DUT_(_CHANNELS)
#define DUT_OUTPUTS DUT_(_N_OUTPUTS)
#define DUT_STATE_BYTES DUT_(_STATE_BYTES)
#define DUT_SCRATCH_BYTES DUT_(_SCRATCH_BYTES)

typedef char dut_outputs_fit[(DUT_OUTPUTS <= TGP_MAX_OUTPUTS) ? 1 : -1];

#if DUT_INPUT_INT8
typedef int8_t dut_value; /* the model input x, quantized on the host */
#define DUT_INPUT_FORMAT "int8"
#else
typedef int16_t dut_value; /* raw sensor counts, quantized here (tg_quantize_sample) */
#define DUT_INPUT_FORMAT "int16le"
#endif

static dut_value input[DUT_WINDOW * DUT_CHANNELS];
static int8_t window_state[DUT_STATE_BYTES];
static int8_t stream_state[DUT_STATE_BYTES];
static int8_t scratch[DUT_SCRATCH_BYTES];
static tg_stream window_stream;
static tg_stream live_stream;
static tgp_state proto;
static char data_sha256[SHA256_HEX_CHARS + 1];

static void port_write(void *ctx, const char *s, uint32_t n)
{
    (void)ctx;
    uart_write(s, n);
}

static uint64_t port_ticks(void *ctx)
{
    (void)ctx;
    return timer_ticks();
}

#if DUT_ENERGY
#define PIN (*(volatile uint32_t *)(uintptr_t)(DUT_PIN_REG))

/* MLPerf's energy-mode timestamp: pull the pin low, hold at least 1 us, release. */
static void port_timestamp_pin(void *ctx)
{
    (void)ctx;
    const uint64_t hold = (uint64_t)timer_hz() / 1000000u + 1u;
    PIN = PIN & ~(uint32_t)(DUT_PIN_MASK);
    const uint64_t t0 = timer_ticks();
    while (timer_ticks() - t0 < hold) {
    }
    PIN = PIN | (uint32_t)(DUT_PIN_MASK);
}
#endif

#if DUT_INPUT_INT8
/* One quantized sample into the stream, as tg_push_sample does after quantizing. */
static tg_status push(tg_stream *s, const dut_value *x, int8_t *out)
{
    const tg_model_params *m = s->model;
    const int32_t keep = (m->kernel - 1) * m->channels;
    memmove(s->ring, s->ring + m->channels, (size_t)keep);
    memcpy(s->ring + keep, x, (size_t)m->channels);
    const int run = (s->t % (uint32_t)m->stride) == 0u;
    s->t++;
    if (!run) {
        return TG_OK;
    }
    tg_model_step(m, s->ring, s->h, out, s->scratch);
    return TG_OUTPUT_READY;
}

/* tg_window on quantized samples: reset, then every sample. */
static tg_status window(tg_stream *s, const dut_value *x, int32_t n, int8_t *out)
{
    tg_status status = TG_OK;
    tg_reset(s);
    for (int32_t i = 0; i < n; ++i) {
        if (push(s, x + i * DUT_CHANNELS, out) == TG_OUTPUT_READY) {
            status = TG_OUTPUT_READY;
        }
    }
    return status;
}
#else
static tg_status push(tg_stream *s, const dut_value *x, int8_t *out)
{
    return tg_push_sample(s, x, out);
}

static tg_status window(tg_stream *s, const dut_value *x, int32_t n, int8_t *out)
{
    return tg_window(s, x, n, out);
}
#endif

static int32_t port_window(void *ctx, const uint8_t *in, int32_t n, int8_t *out)
{
    (void)ctx;
    const tg_status s = window(&window_stream, (const dut_value *)(const void *)in, n, out);
    return (s < 0) ? (int32_t)s : (s == TG_OUTPUT_READY ? 1 : 0);
}

static void port_stream_reset(void *ctx)
{
    (void)ctx;
    tg_reset(&live_stream);
}

static int32_t port_stream_push(void *ctx, const uint8_t *in, int32_t n, int8_t *out)
{
    (void)ctx;
    const dut_value *x = (const dut_value *)(const void *)in;
    int32_t steps = 0;
    for (int32_t i = 0; i < n; ++i) {
        const tg_status s = push(&live_stream, x + i * DUT_CHANNELS, out);
        if (s < 0) {
            return (int32_t)s;
        }
        steps += (s == TG_OUTPUT_READY) ? 1 : 0;
    }
    return steps;
}

static const int32_t units[] = {
    DUT_(_UNITS_1),
#if DUT_(_N_LAYERS) > 1
    DUT_(_UNITS_2),
#endif
};

static tgp_model_info info = {
    .device_name = "tinygru",
    .model_id = DUT_MODEL_ID,
    .model_name = DUT_NAME,
    .profile = "tinygru-" TG_ENGINE_VERSION,
    .model_sha256 = DUT_SHA256,
    .data_sha256 = data_sha256,
    .data_dsp = TG_USE_DSP,
    .engine_version = TG_ENGINE_VERSION,
    .target = DUT_TARGET,
    /* one string of key=value pairs; the formatter would split the string literals */
    /* clang-format off */
    .quant = "input_zero_point=" DUT_STR(DUT_(_INPUT_ZERO_POINT))
             ",input_shift=" DUT_STR(DUT_(_INPUT_SHIFT))
             ",input_scale=" DUT_STR(DUT_(_INPUT_SCALE))
             ",state_scale=" DUT_STR(DUT_(_STATE_SCALE))
             ",output_scale=" DUT_STR(DUT_(_OUTPUT_SCALE))
             ",output_zero_point=" DUT_STR(DUT_(_OUTPUT_ZERO_POINT)),
    /* clang-format on */
    .input_format = DUT_INPUT_FORMAT,
    .value_bytes = (int32_t)sizeof(dut_value),
    .baud = DUT_BAUD,
    .window = DUT_WINDOW,
    .channels = DUT_CHANNELS,
    .kernel = DUT_(_KERNEL),
    .stride = DUT_(_STRIDE),
    .n_outputs = DUT_OUTPUTS,
    .n_layers = DUT_(_N_LAYERS),
    .units = units,
    .output_zero_point = DUT_(_OUTPUT_ZERO_POINT),
    .output_scale = (float)DUT_(_OUTPUT_SCALE),
};

static tgp_port port = {
    .ctx = 0,
    .write = port_write,
    .ticks = port_ticks,
    .ticks_hz = 0u, /* timer_hz(), set in main */
#if DUT_ENERGY
    .timestamp_pin = port_timestamp_pin,
#else
    .timestamp_pin = 0,
#endif
    .window = port_window,
    .stream_reset = port_stream_reset,
    .stream_push = port_stream_push,
};

/* The sha256 of the model data this firmware links, and the ticks it took. */
static void hash_model_data(const tg_model_params *m)
{
    uint8_t digest[SHA256_DIGEST_BYTES];
    /* Right after timer_init the counter may still read its cleared value (SysTick
     * loads its reload value at the first clock), which would put t0 past t1: start
     * at the first change. */
    const uint64_t first = timer_ticks();
    uint64_t t0 = first;
    while (t0 == first) {
        t0 = timer_ticks();
    }
    info.data_bytes = model_data_sha256(m, digest);
    info.data_ticks = timer_ticks() - t0;
    sha256_hex(digest, data_sha256);
}

int main(void)
{
    port.ticks_hz = timer_hz();
    uart_init(BOARD_CONSOLE_UART, timer_hz(), DUT_BAUD);
    timer_init();
    const tg_model_params *m = &DUT_MODEL;
    hash_model_data(m);
    const tg_status a = tg_stream_init(&window_stream, m, window_state, DUT_STATE_BYTES, scratch,
                                       DUT_SCRATCH_BYTES);
    const tg_status b =
        tg_stream_init(&live_stream, m, stream_state, DUT_STATE_BYTES, scratch, DUT_SCRATCH_BYTES);
    tgp_init(&proto, &port, &info, (uint8_t *)input, (uint32_t)sizeof input);
    if (a != TG_OK || b != TG_OK) {
        static const char msg[] = "e-[tg_stream_init failed]\r\n";
        uart_write(msg, sizeof msg - 1u);
    }
    tgp_boot(&proto);
    for (;;) {
        int32_t c = uart_read();
        if (c < 0) {
            /* idle until input: the tick count excludes waiting for the host */
            timer_pause();
            c = uart_read_blocking();
            timer_resume();
        }
        tgp_feed(&proto, (uint8_t)c);
    }
}
