#include "fake_port.h"

static void fake_write(void *ctx, const char *s, uint32_t n)
{
    fake_device *d = (fake_device *)ctx;
    for (uint32_t i = 0u; i < n; ++i) {
        const char c = s[i];
        if (d->out_len < FAKE_OUT_CAP) {
            d->out[d->out_len++] = c;
        }
        d->out_total++;
        if (c == '\n') {
            const uint32_t len = d->cur_len;
            const int crlf = len > 0u && d->cur[len - 1u] == '\r';
            const int prefix =
                len >= 2u && (d->cur[0] == 'm' || d->cur[0] == 'e') && d->cur[1] == '-';
            if (!crlf || !prefix) {
                d->bad_lines++;
            }
            if (len == 8u && d->cur[0] == 'm' && d->cur[1] == '-' && d->cur[2] == 'r' &&
                d->cur[3] == 'e' && d->cur[4] == 'a' && d->cur[5] == 'd' && d->cur[6] == 'y') {
                d->ready_lines++;
            }
            d->cur_len = 0u;
        } else if (d->cur_len < sizeof d->cur) {
            d->cur[d->cur_len++] = c;
        }
    }
}

static uint64_t fake_ticks(void *ctx)
{
    fake_device *d = (fake_device *)ctx;
    d->now += 7u;
    return d->now;
}

static void fake_pin(void *ctx)
{
    fake_device *d = (fake_device *)ctx;
    d->pin_pulses++;
    d->now += 30u;
}

static int32_t fake_window(void *ctx, const uint8_t *in, int32_t n, int8_t *out)
{
    fake_device *d = (fake_device *)ctx;
    const int16_t *x = (const int16_t *)(const void *)in;
    for (int32_t k = 0; k < FAKE_OUTPUTS; ++k) {
        int32_t s = 0;
        for (int32_t t = 0; t < n; ++t) {
            s += x[t * FAKE_CHANNELS + k] * (t + 1);
        }
        out[k] = (int8_t)(s & 0xff);
    }
    d->now += 1000u;
    return n >= 2 ? 1 : 0;
}

static void fake_stream_reset(void *ctx)
{
    fake_device *d = (fake_device *)ctx;
    for (int32_t k = 0; k < FAKE_OUTPUTS; ++k) {
        d->acc[k] = 0;
    }
    d->stream_t = 0u;
}

static int32_t fake_stream_push(void *ctx, const uint8_t *in, int32_t n, int8_t *out)
{
    fake_device *d = (fake_device *)ctx;
    const int16_t *x = (const int16_t *)(const void *)in;
    int32_t steps = 0;
    for (int32_t t = 0; t < n; ++t) {
        for (int32_t k = 0; k < FAKE_OUTPUTS; ++k) {
            d->acc[k] = (d->acc[k] * 3 + x[t * FAKE_CHANNELS + k]) & 0xffff;
        }
        if (d->stream_t++ % 2u == 0u) {
            for (int32_t k = 0; k < FAKE_OUTPUTS; ++k) {
                out[k] = (int8_t)(d->acc[k] & 0xff);
            }
            steps++;
        }
    }
    d->now += 100u * (uint64_t)n;
    return steps;
}

static const int32_t fake_units[1] = { 5 };

static const tgp_model_info fake_info = {
    .device_name = "tinygru",
    .model_id = "fk01",
    .model_name = "fake",
    .profile = "tinygru-test",
    .model_sha256 = "00112233",
    .data_sha256 = "44556677",
    .data_bytes = 1234u,
    .data_ticks = 56u,
    .engine_version = "0.0.0",
    .target = "host",
    .quant = "output_scale=0.00390625,output_zero_point=-128",
    .input_format = "int16le",
    .value_bytes = 2,
    .baud = 115200u,
    .window = FAKE_WINDOW,
    .channels = FAKE_CHANNELS,
    .kernel = 2,
    .stride = 2,
    .n_outputs = FAKE_OUTPUTS,
    .n_layers = 1,
    .units = fake_units,
    .output_zero_point = -128,
    .output_scale = 0.00390625f,
};

void fake_init(fake_device *d, tgp_state *p, int16_t *buf, int energy)
{
    static tgp_port port;
    port.ctx = d;
    port.write = fake_write;
    port.ticks = fake_ticks;
    port.ticks_hz = 25000000u;
    port.timestamp_pin = energy ? fake_pin : 0;
    port.window = fake_window;
    port.stream_reset = fake_stream_reset;
    port.stream_push = fake_stream_push;
    d->out_len = 0u;
    d->out_total = 0u;
    d->ready_lines = 0u;
    d->bad_lines = 0u;
    d->cur_len = 0u;
    d->now = 0u;
    d->pin_pulses = 0u;
    fake_stream_reset(d);
    tgp_init(p, &port, &fake_info, (uint8_t *)buf, 2u * FAKE_WINDOW * FAKE_CHANNELS);
}
