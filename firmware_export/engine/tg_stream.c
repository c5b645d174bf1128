/* tinygru engine: raw samples in, a step every `stride` samples (see tinygru.h).
 *
 * The ring holds the last k quantized samples oldest first, so the step input is
 * one contiguous [k][C] array; pushing shifts it by one sample ((k-1) C bytes).
 * Before the first samples it holds the input zero point: the int8 encoding of
 * the zeros the causal convolution pads with. */
#include "tinygru.h"

#include <string.h>

#include "tg_requantize.h"
#include "tg_scratch.h"

static int32_t state_units(const tg_model_params *m)
{
    int32_t n = 0;
    for (int32_t l = 0; l < m->n_layers; ++l) {
        n += m->gru[l].units;
    }
    return n;
}

int32_t tg_state_buffer_size(const tg_model_params *m)
{
    return state_units(m) + m->kernel * m->channels;
}

int32_t tg_scratch_buffer_size(const tg_model_params *m)
{
    return tg_gate_bytes(m) + 3 + 4 * tg_work_words(m); /* 3: room to align the work */
}

static int model_ok(const tg_model_params *m)
{
    return m->format_version == TG_FORMAT_VERSION && m->n_layers >= 1 &&
           m->n_layers <= TG_MAX_LAYERS && m->channels >= 1 && m->kernel >= 1 && m->stride >= 1 &&
           m->n_outputs >= 1;
}

tg_status tg_stream_init(tg_stream *s, const tg_model_params *m, int8_t *state, int32_t state_size,
                         int8_t *scratch, int32_t scratch_size)
{
    if (s == 0 || m == 0 || state == 0 || scratch == 0) {
        return TG_ERROR_ARGUMENT;
    }
    if (!model_ok(m)) {
        return TG_ERROR_MODEL;
    }
    if (state_size < tg_state_buffer_size(m) || scratch_size < tg_scratch_buffer_size(m)) {
        return TG_ERROR_BUFFER;
    }
    s->model = m;
    s->h = state;
    s->ring = state + state_units(m);
    s->scratch = scratch;
    tg_reset(s);
    return TG_OK;
}

void tg_reset(tg_stream *s)
{
    const tg_model_params *m = s->model;
    int8_t *h = s->h;
    for (int32_t l = 0; l < m->n_layers; ++l) {
        memset(h, m->gru[l].h_zero_point, (size_t)m->gru[l].units);
        h += m->gru[l].units;
    }
    memset(s->ring, m->input_zero_point, (size_t)(m->kernel * m->channels));
    s->t = 0u;
}

/* Round v / 2^shift half away from zero; shift in [1, 62]. */
static int64_t rhaz_shift(int64_t v, int32_t shift)
{
    const int64_t half = (int64_t)1 << (shift - 1);
    const int64_t mag = ((v < 0 ? -v : v) + half) >> shift;
    return v < 0 ? -mag : mag;
}

void tg_quantize_sample(const tg_model_params *m, const int16_t *counts, int8_t *q)
{
    for (int32_t c = 0; c < m->channels; ++c) {
        const int64_t v = (int64_t)counts[c] * m->input_multiplier[c] + m->input_bias[c];
        int64_t r = rhaz_shift(v, m->input_shift) + m->input_zero_point;
        r = r < -128 ? -128 : (r > 127 ? 127 : r);
        q[c] = (int8_t)r;
    }
}

/* One sample into the ring; 1 when a step runs now (t % stride == 0). Out of line: its
 * locals are not held by the callers during the step. */
static TG_NOINLINE int tg_ring_push(tg_stream *s, const int16_t *counts)
{
    const tg_model_params *m = s->model;
    const int32_t c = m->channels;
    const int32_t keep = (m->kernel - 1) * c;
    memmove(s->ring, s->ring + c, (size_t)keep);
    tg_quantize_sample(m, counts, s->ring + keep);
    const int run = (s->t % (uint32_t)m->stride) == 0u;
    s->t++;
    return run;
}

/* One sample, and a step when it is due (arguments checked by the caller). */
static TG_INLINE tg_status tg_push(tg_stream *s, const int16_t *counts, int8_t *out)
{
    if (!tg_ring_push(s, counts)) {
        return TG_OK;
    }
    tg_model_step(s->model, s->ring, s->h, out, s->scratch);
    return TG_OUTPUT_READY;
}

tg_status tg_push_sample(tg_stream *s, const int16_t *counts, int8_t *out)
{
    if (s == 0 || s->model == 0 || counts == 0 || out == 0) {
        return TG_ERROR_ARGUMENT;
    }
    return tg_push(s, counts, out);
}

tg_status tg_window(tg_stream *s, const int16_t *counts, int32_t n_samples, int8_t *out)
{
    if (s == 0 || s->model == 0 || counts == 0 || out == 0 || n_samples < 0) {
        return TG_ERROR_ARGUMENT;
    }
    tg_status status = TG_OK;
    tg_reset(s);
    for (int32_t i = 0; i < n_samples; ++i) {
        if (tg_push(s, counts + i * s->model->channels, out) == TG_OUTPUT_READY) {
            status = TG_OUTPUT_READY;
        }
    }
    return status;
}
