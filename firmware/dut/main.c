/* Device under test: the tinygru engine with one exported model behind the
 * device protocol (protocol.h) on the board's console UART (board/uart.h).
 *
 * Build with (see firmware/Makefile):
 *   -DDUT_MODEL_H='"<prefix>_model.h"' -DDUT_CONFIG_H='"<prefix>_config.h"'
 *   -DDUT_MODEL=<prefix>_model -DDUT_P=<PREFIX> -DDUT_NAME='"<prefix>"'
 *   -DDUT_SHA256='"<sha256 of step_int8.tflite>"' -DDUT_TARGET='"cortex-m4/mps2-an386"' */
#include <stdint.h>

#include DUT_MODEL_H
#include DUT_CONFIG_H
#include "board.h"
#include "protocol.h"
#include "timer.h"
#include "uart.h"

#define DUT_CAT2(a, b) a##b
#define DUT_CAT(a, b) DUT_CAT2(a, b)
#define DUT_STR2(x) #x
#define DUT_STR(x) DUT_STR2(x)
#define DUT_(name) DUT_CAT(DUT_P, name)

#define DUT_BAUD 115200u
#define DUT_WINDOW DUT_(_WINDOW)
#define DUT_CHANNELS DUT_(_CHANNELS)
#define DUT_OUTPUTS DUT_(_N_OUTPUTS)
#define DUT_STATE_BYTES DUT_(_STATE_BYTES)
#define DUT_SCRATCH_BYTES DUT_(_SCRATCH_BYTES)

typedef char dut_outputs_fit[(DUT_OUTPUTS <= TGP_MAX_OUTPUTS) ? 1 : -1];

static int16_t counts[DUT_WINDOW * DUT_CHANNELS];
static int8_t window_state[DUT_STATE_BYTES];
static int8_t stream_state[DUT_STATE_BYTES];
static int8_t scratch[DUT_SCRATCH_BYTES];
static tg_stream window_stream;
static tg_stream live_stream;
static tgp_state proto;

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

static int32_t port_window(void *ctx, const int16_t *x, int32_t n, int8_t *out)
{
    (void)ctx;
    const tg_status s = tg_window(&window_stream, x, n, out);
    return (s < 0) ? (int32_t)s : (s == TG_OUTPUT_READY ? 1 : 0);
}

static void port_stream_reset(void *ctx)
{
    (void)ctx;
    tg_reset(&live_stream);
}

static int32_t port_stream_push(void *ctx, const int16_t *x, int32_t n, int8_t *out)
{
    (void)ctx;
    int32_t steps = 0;
    for (int32_t i = 0; i < n; ++i) {
        const tg_status s = tg_push_sample(&live_stream, x + i * DUT_CHANNELS, out);
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

static const tgp_model_info info = {
    .device_name = "tinygru",
    .model_name = DUT_NAME,
    .profile = "tinygru-" TG_ENGINE_VERSION,
    .model_sha256 = DUT_SHA256,
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
    .window = port_window,
    .stream_reset = port_stream_reset,
    .stream_push = port_stream_push,
};

int main(void)
{
    port.ticks_hz = timer_hz();
    uart_init(BOARD_CONSOLE_UART, timer_hz(), DUT_BAUD);
    timer_init();
    const tg_model_params *m = &DUT_MODEL;
    const tg_status a = tg_stream_init(&window_stream, m, window_state, DUT_STATE_BYTES, scratch,
                                       DUT_SCRATCH_BYTES);
    const tg_status b =
        tg_stream_init(&live_stream, m, stream_state, DUT_STATE_BYTES, scratch, DUT_SCRATCH_BYTES);
    tgp_init(&proto, &port, &info, counts, (uint32_t)sizeof counts);
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
