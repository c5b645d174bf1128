#include "protocol.h"

#define TGP_NAME_ECHO 32 /* characters of an unknown command echoed in the error */
#define TGP_MAX_TOKENS 8

/* ---- output ------------------------------------------------------------ */

static void put(const tgp_state *p, const char *s, uint32_t n)
{
    p->port->write(p->port->ctx, s, n);
}

static uint32_t str_len(const char *s)
{
    uint32_t n = 0u;
    while (s[n] != '\0') {
        ++n;
    }
    return n;
}

static void put_str(const tgp_state *p, const char *s)
{
    put(p, s, str_len(s));
}

static void put_u64(const tgp_state *p, uint64_t v)
{
    char d[20];
    uint32_t n = 0u;
    do {
        d[sizeof d - 1u - n] = (char)('0' + (int)(v % 10u));
        v /= 10u;
        ++n;
    } while (v != 0u);
    put(p, d + sizeof d - n, n);
}

static void put_i32(const tgp_state *p, int32_t v)
{
    if (v < 0) {
        put(p, "-", 1u);
        put_u64(p, (uint64_t)(-(int64_t)v));
    } else {
        put_u64(p, (uint64_t)v);
    }
}

/* v to three decimals, halves away from zero (as printf's %0.3f on these values);
 * magnitudes from 4e6 on print as 4000000.000. */
static void put_milli(const tgp_state *p, float v)
{
    const int neg = v < 0.0f;
    const float a = neg ? -v : v;
    const float scaled = a * 1000.0f + 0.5f;
    const uint32_t m = (scaled >= 4.0e9f) ? 4000000000u : (uint32_t)scaled;
    char frac[3];
    frac[0] = (char)('0' + (int)(m / 100u % 10u));
    frac[1] = (char)('0' + (int)(m / 10u % 10u));
    frac[2] = (char)('0' + (int)(m % 10u));
    if (neg && m != 0u) {
        put(p, "-", 1u);
    }
    put_u64(p, m / 1000u);
    put(p, ".", 1u);
    put(p, frac, 3u);
}

static void end_line(const tgp_state *p)
{
    put(p, "\r\n", 2u);
}

static void line(const tgp_state *p, const char *s)
{
    put_str(p, s);
    end_line(p);
}

static void error(const tgp_state *p, const char *s)
{
    put_str(p, "e-[");
    put_str(p, s);
    put_str(p, "]\r\n");
}

static uint64_t ticks_to_us(uint64_t ticks, uint32_t hz)
{
    if (hz == 0u) {
        return 0u;
    }
    return (ticks / hz) * 1000000u + (ticks % hz) * 1000000u / hz;
}

static void lap(const tgp_state *p, uint64_t ticks)
{
    put_str(p, "m-lap-us-");
    put_u64(p, ticks_to_us(ticks, p->port->ticks_hz));
    end_line(p);
}

static int energy_mode(const tgp_state *p)
{
    return p->port->timestamp_pin != 0;
}

/* MLPerf's th_timestamp: an m-lap-us line, or in energy mode a pulse on the pin. */
static void timestamp(const tgp_state *p)
{
    if (energy_mode(p)) {
        p->port->timestamp_pin(p->port->ctx);
    } else {
        lap(p, p->port->ticks(p->port->ctx));
    }
}

/* ---- parsing helpers --------------------------------------------------- */

static int str_eq(const char *a, const char *b)
{
    while (*a != '\0' && *a == *b) {
        ++a;
        ++b;
    }
    return *a == *b;
}

/* Decimal without sign, at most 9 digits. Returns 0 and sets *v, or -1. */
static int parse_u32(const char *s, uint32_t *v)
{
    uint32_t r = 0u;
    uint32_t n = 0u;
    for (; s[n] != '\0'; ++n) {
        if (n >= 9u || s[n] < '0' || s[n] > '9') {
            return -1;
        }
        r = r * 10u + (uint32_t)(s[n] - '0');
    }
    if (n == 0u) {
        return -1;
    }
    *v = r;
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Split the line in place; returns the token count (at most max). */
static uint32_t tokenize(char *s, char **tok, uint32_t max)
{
    uint32_t n = 0u;
    while (*s != '\0') {
        while (is_space(*s)) {
            *s++ = '\0';
        }
        if (*s == '\0') {
            break;
        }
        if (n == max) {
            return max + 1u;
        }
        tok[n++] = s;
        while (*s != '\0' && !is_space(*s)) {
            ++s;
        }
    }
    return n;
}

/* ---- the buffer -------------------------------------------------------- */

static uint32_t sample_bytes(const tgp_state *p)
{
    return (uint32_t)p->info->value_bytes * (uint32_t)p->info->channels;
}

static int loaded_samples(const tgp_state *p, const char *cmd, int32_t *n)
{
    if (p->load_size == 0u || p->load_pos != p->load_size) {
        put_str(p, "e-[");
        put_str(p, cmd);
        put_str(p, ": input incomplete, ");
        put_u64(p, p->load_pos);
        put_str(p, " of ");
        put_u64(p, p->load_size);
        put_str(p, " bytes loaded]\r\n");
        return -1;
    }
    *n = (int32_t)(p->load_size / sample_bytes(p));
    return 0;
}

/* infer runs whole windows only: a shorter buffer would answer from a partial window. */
static int loaded_window(const tgp_state *p, int32_t *n)
{
    if (loaded_samples(p, "infer", n) != 0) {
        return -1;
    }
    if (p->load_size != p->buf_cap) {
        put_str(p, "e-[infer: ");
        put_u64(p, p->load_size);
        put_str(p, " bytes loaded, a window is ");
        put_u64(p, p->buf_cap);
        put_str(p, " bytes (");
        put_u64(p, (uint32_t)p->info->window);
        put_str(p, " samples of ");
        put_u64(p, sample_bytes(p));
        put_str(p, " bytes)]\r\n");
        return -1;
    }
    return 0;
}

static void cmd_db(tgp_state *p, char **tok, uint32_t ntok)
{
    if (ntok < 2u) {
        error(p, "db: needs 'load N' or hex bytes");
        return;
    }
    if (str_eq(tok[1], "load")) {
        uint32_t n = 0u;
        if (ntok != 3u || parse_u32(tok[2], &n) != 0) {
            error(p, "db load: needs one byte count");
            return;
        }
        if (n == 0u || n > p->buf_cap || n % sample_bytes(p) != 0u) {
            put_str(p, "e-[db load: ");
            put_u64(p, n);
            put_str(p, " bytes is not a whole number of samples of ");
            put_u64(p, sample_bytes(p));
            put_str(p, " bytes, 1 to ");
            put_u64(p, p->buf_cap / sample_bytes(p));
            put_str(p, " samples]\r\n");
            p->load_size = 0u;
            p->load_pos = 0u;
            return;
        }
        p->load_size = n;
        p->load_pos = 0u;
        put_str(p, "m-[Expecting ");
        put_u64(p, n);
        put_str(p, " bytes]\r\n");
        return;
    }
    if (ntok != 2u) {
        error(p, "db: one hex string per command");
        return;
    }
    const char *hex = tok[1];
    const uint32_t digits = str_len(hex);
    if (p->load_size == 0u) {
        error(p, "db: no 'db load N' before the data");
        return;
    }
    if ((digits & 1u) != 0u) {
        error(p, "db: odd number of hex digits");
        return;
    }
    for (uint32_t i = 0u; i < digits; ++i) {
        if (hex_value(hex[i]) < 0) {
            error(p, "db: bad hex digit");
            return;
        }
    }
    const uint32_t bytes = digits / 2u;
    if (bytes > p->load_size - p->load_pos) {
        put_str(p, "e-[db: ");
        put_u64(p, bytes);
        put_str(p, " bytes but only ");
        put_u64(p, p->load_size - p->load_pos);
        put_str(p, " expected]\r\n");
        return;
    }
    for (uint32_t i = 0u; i < bytes; ++i) {
        const int hi = hex_value(hex[2u * i]);
        const int lo = hex_value(hex[2u * i + 1u]);
        p->buf[p->load_pos + i] = (uint8_t)(hi * 16 + lo);
    }
    p->load_pos += bytes;
    if (p->load_pos == p->load_size) {
        line(p, "m-load-done");
    }
}

/* ---- results ----------------------------------------------------------- */

static void put_results(const tgp_state *p)
{
    put_str(p, "m-results-[");
    for (int32_t i = 0; i < p->info->n_outputs; ++i) {
        if (i > 0) {
            put(p, ",", 1u);
        }
        const float v =
            (float)((int32_t)p->results[i] - p->info->output_zero_point) * p->info->output_scale;
        put_milli(p, v);
    }
    put_str(p, "]\r\n");
}

static void put_results_raw(const tgp_state *p)
{
    put_str(p, "m-results-raw-[");
    for (int32_t i = 0; i < p->info->n_outputs; ++i) {
        if (i > 0) {
            put(p, ",", 1u);
        }
        put_i32(p, p->results[i]);
    }
    put_str(p, "]\r\n");
}

static int have_results(const tgp_state *p, const char *cmd)
{
    if (!p->have_results) {
        put_str(p, "e-[");
        put_str(p, cmd);
        put_str(p, ": no results yet]\r\n");
        return 0;
    }
    return 1;
}

static int parse_count(const tgp_state *p, const char *s, const char *what, uint32_t min,
                       uint32_t *v)
{
    if (parse_u32(s, v) != 0 || *v < min || *v > TGP_MAX_RUNS) {
        put_str(p, "e-[infer: ");
        put_str(p, what);
        put_str(p, " must be ");
        put_u64(p, min);
        put_str(p, " to ");
        put_u64(p, TGP_MAX_RUNS);
        put_str(p, "]\r\n");
        return -1;
    }
    return 0;
}

static void engine_error(const tgp_state *p, const char *cmd, int32_t status)
{
    put_str(p, "e-[");
    put_str(p, cmd);
    put_str(p, ": engine error ");
    put_i32(p, status);
    put_str(p, "]\r\n");
}

static void cmd_infer(tgp_state *p, char **tok, uint32_t ntok)
{
    uint32_t n = 1u;
    uint32_t w = 10u;
    int32_t samples = 0;
    if (ntok > 3u) {
        error(p, "infer: usage 'infer [N [W]]'");
        return;
    }
    if (ntok >= 2u && parse_count(p, tok[1], "N", 1u, &n) != 0) {
        return;
    }
    if (ntok == 3u && parse_count(p, tok[2], "W", 0u, &w) != 0) {
        return;
    }
    if (loaded_window(p, &samples) != 0) {
        return;
    }
    const tgp_port *port = p->port;
    int32_t status = 0;
    put_str(p, "m-warmup-start-");
    put_u64(p, w);
    end_line(p);
    for (uint32_t i = 0u; i < w && status >= 0; ++i) {
        status = port->window(port->ctx, p->buf, samples, p->results);
    }
    line(p, "m-warmup-done");
    put_str(p, "m-infer-start-");
    put_u64(p, n);
    end_line(p);
    if (energy_mode(p)) {
        port->timestamp_pin(port->ctx);
    }
    const uint64_t t0 = port->ticks(port->ctx);
    for (uint32_t i = 0u; i < n && status >= 0; ++i) {
        status = port->window(port->ctx, p->buf, samples, p->results);
    }
    const uint64_t t1 = port->ticks(port->ctx);
    if (energy_mode(p)) {
        port->timestamp_pin(port->ctx);
    } else {
        lap(p, t0);
        lap(p, t1);
    }
    line(p, "m-infer-done");
    if (status < 0) {
        p->have_results = 0u;
        engine_error(p, "infer", status);
        return;
    }
    p->have_results = 1u;
    p->last_ticks = t1 - t0;
    p->last_runs = n;
    put_results(p);
}

static void cmd_stream(tgp_state *p, char **tok, uint32_t ntok)
{
    const tgp_port *port = p->port;
    if (ntok == 2u && str_eq(tok[1], "reset")) {
        port->stream_reset(port->ctx);
        p->stream_samples = 0u;
        line(p, "m-stream-reset");
        return;
    }
    if (ntok != 1u) {
        error(p, "stream: usage 'stream' or 'stream reset'");
        return;
    }
    int32_t samples = 0;
    if (loaded_samples(p, "stream", &samples) != 0) {
        return;
    }
    int8_t out[TGP_MAX_OUTPUTS];
    uint64_t ticks = 0u;
    uint32_t steps = 0u;
    for (int32_t t = 0; t < samples; ++t) {
        const uint8_t *x = p->buf + (uint32_t)t * sample_bytes(p);
        const uint64_t t0 = port->ticks(port->ctx);
        const int32_t ran = port->stream_push(port->ctx, x, 1, out);
        ticks += port->ticks(port->ctx) - t0;
        if (ran < 0) {
            engine_error(p, "stream", ran);
            return;
        }
        p->stream_samples += 1u;
        if (ran > 0) {
            steps += 1u;
            for (int32_t i = 0; i < p->info->n_outputs; ++i) {
                p->results[i] = out[i];
            }
            p->have_results = 1u;
            put_str(p, "m-step-[");
            for (int32_t i = 0; i < p->info->n_outputs; ++i) {
                if (i > 0) {
                    put(p, ",", 1u);
                }
                put_i32(p, out[i]);
            }
            put_str(p, "]\r\n");
        }
    }
    p->last_ticks = ticks;
    p->last_runs = 1u;
    put_str(p, "m-stream-[samples=");
    put_u64(p, (uint32_t)samples);
    put_str(p, ",steps=");
    put_u64(p, steps);
    put_str(p, ",t=");
    put_u64(p, p->stream_samples);
    put_str(p, "]\r\n");
}

static void kv(const tgp_state *p, const char *key, int32_t v, int first)
{
    if (!first) {
        put(p, ",", 1u);
    }
    put_str(p, key);
    put(p, "=", 1u);
    put_i32(p, v);
}

static void info_line(const tgp_state *p, const char *key, const char *value)
{
    put_str(p, "m-info-");
    put_str(p, key);
    put_str(p, "-[");
    put_str(p, value);
    put_str(p, "]\r\n");
}

static void cmd_info(const tgp_state *p)
{
    const tgp_model_info *m = p->info;
    info_line(p, "model", m->model_name);
    info_line(p, "sha256", m->model_sha256);
    put_str(p, "m-info-data-[sha256=");
    put_str(p, m->data_sha256);
    put_str(p, ",bytes=");
    put_u64(p, m->data_bytes);
    put_str(p, ",boot_ticks=");
    put_u64(p, m->data_ticks);
    put_str(p, ",dsp=");
    put_u64(p, m->data_dsp);
    put_str(p, "]\r\n");
    info_line(p, "engine", m->engine_version);
    info_line(p, "target", m->target);
    put_str(p, "m-info-dims-[");
    kv(p, "window", m->window, 1);
    kv(p, "channels", m->channels, 0);
    kv(p, "kernel", m->kernel, 0);
    kv(p, "stride", m->stride, 0);
    kv(p, "outputs", m->n_outputs, 0);
    kv(p, "layers", m->n_layers, 0);
    put_str(p, ",units=");
    for (int32_t i = 0; i < m->n_layers; ++i) {
        if (i > 0) {
            put(p, "/", 1u);
        }
        put_i32(p, m->units[i]);
    }
    put_str(p, "]\r\n");
    info_line(p, "quant", m->quant);
    put_str(p, "m-info-input-[");
    put_str(p, m->input_format);
    put_str(p, ",bytes=");
    put_u64(p, p->buf_cap);
    put_str(p, "]\r\n");
    put_str(p, "m-info-timer-[hz=");
    put_u64(p, p->port->ticks_hz);
    put_str(p, "]\r\n");
    put_str(p, "m-info-mlperf-[model=");
    put_str(p, m->model_id);
    put_str(p, ",timestamp=");
    put_str(p, energy_mode(p) ? "energy" : "performance");
    put_str(p, ",baud=");
    put_u64(p, m->baud);
    put_str(p, "]\r\n");
}

static void cmd_ticks(const tgp_state *p)
{
    put_str(p, "m-ticks-[runs=");
    put_u64(p, p->last_runs);
    put_str(p, ",total=");
    put_u64(p, p->last_ticks);
    put_str(p, ",hz=");
    put_u64(p, p->port->ticks_hz);
    put_str(p, "]\r\n");
}

static void cmd_help(const tgp_state *p)
{
    static const char *const lines[] = {
        "m-help-[name%|profile%|info%|timestamp%|help%]",
        "m-help-[db load N%: expect N bytes = samples*channels values (info%: input)]",
        "m-help-[db HEX%: append bytes]",
        "m-help-[infer [N [W]]%: W warm-ups, N timed whole windows from a zero state]",
        "m-help-[results%|results-raw%|ticks%]",
        "m-help-[stream%: push the loaded samples, state carried, one m-step per step]",
        "m-help-[stream reset%: zero the streaming state]",
    };
    for (uint32_t i = 0u; i < sizeof lines / sizeof lines[0]; ++i) {
        line(p, lines[i]);
    }
}

static void unknown(const tgp_state *p, const char *cmd)
{
    uint32_t n = str_len(cmd);
    put_str(p, "e-[unknown command '");
    put(p, cmd, n > TGP_NAME_ECHO ? TGP_NAME_ECHO : n);
    put_str(p, "']\r\n");
}

static void execute(tgp_state *p)
{
    char *tok[TGP_MAX_TOKENS];
    p->line[p->line_len] = '\0';
    const uint32_t ntok = tokenize(p->line, tok, TGP_MAX_TOKENS);
    if (ntok == 0u) {
        return;
    }
    if (ntok > TGP_MAX_TOKENS) {
        error(p, "too many words in command");
        return;
    }
    const char *c = tok[0];
    if (str_eq(c, "name") && ntok == 1u) {
        put_str(p, "m-name-dut-[");
        put_str(p, p->info->device_name);
        put_str(p, "]\r\n");
    } else if (str_eq(c, "timestamp") && ntok == 1u) {
        timestamp(p);
    } else if (str_eq(c, "profile") && ntok == 1u) {
        put_str(p, "m-profile-[");
        put_str(p, p->info->profile);
        put_str(p, "]\r\nm-model-[");
        put_str(p, p->info->model_id);
        put_str(p, "]\r\n");
    } else if (str_eq(c, "help") && ntok == 1u) {
        cmd_help(p);
    } else if (str_eq(c, "info") && ntok == 1u) {
        cmd_info(p);
    } else if (str_eq(c, "db")) {
        cmd_db(p, tok, ntok);
    } else if (str_eq(c, "infer")) {
        cmd_infer(p, tok, ntok);
    } else if (str_eq(c, "results") && ntok == 1u) {
        if (have_results(p, "results")) {
            put_results(p);
        }
    } else if (str_eq(c, "results-raw") && ntok == 1u) {
        if (have_results(p, "results-raw")) {
            put_results_raw(p);
        }
    } else if (str_eq(c, "ticks") && ntok == 1u) {
        cmd_ticks(p);
    } else if (str_eq(c, "stream")) {
        cmd_stream(p, tok, ntok);
    } else {
        unknown(p, c);
    }
}

/* ---- public ------------------------------------------------------------ */

static void line_clear(tgp_state *p)
{
    p->line_len = 0u;
    p->line_overflow = 0u;
    p->line_bad_byte = 0u;
}

void tgp_init(tgp_state *p, const tgp_port *port, const tgp_model_info *info, uint8_t *buf,
              uint32_t buf_cap)
{
    p->port = port;
    p->info = info;
    p->buf = buf;
    p->buf_cap = buf_cap;
    p->load_size = 0u;
    p->load_pos = 0u;
    p->have_results = 0u;
    p->last_ticks = 0u;
    p->last_runs = 0u;
    p->stream_samples = 0u;
    for (uint32_t i = 0u; i < TGP_MAX_OUTPUTS; ++i) {
        p->results[i] = 0;
    }
    line_clear(p);
}

void tgp_boot(tgp_state *p)
{
    line(p, energy_mode(p) ? "m-timestamp-mode-energy" : "m-timestamp-mode-performance");
    /* as th_timestamp_initialize: one timestamp, so an open-drain pin rests high */
    timestamp(p);
    line(p, "m-init-done");
    line(p, "m-ready");
}

void tgp_feed(tgp_state *p, uint8_t c)
{
    if (c == (uint8_t)TGP_CANCEL) {
        line_clear(p);
        return;
    }
    if (c != (uint8_t)TGP_TERMINATOR) {
        if (c >= 0x7fu || (c < 0x20u && !is_space((char)c))) {
            p->line_bad_byte = 1u;
        } else if (p->line_len < TGP_LINE_MAX) {
            p->line[p->line_len++] = (char)c;
        } else {
            p->line_overflow = 1u;
        }
        return;
    }
    if (p->line_overflow) {
        error(p, "command longer than 256 characters");
    } else if (p->line_bad_byte) {
        error(p, "non-printable byte in command");
    } else {
        execute(p);
    }
    line_clear(p);
    line(p, "m-ready");
}
