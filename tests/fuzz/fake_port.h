/* A deterministic stand-in for the device behind the protocol parser, for host
 * builds (transcript tests, fuzzing): a 4-sample, 3-channel "model" whose
 * outputs are checksums of the input, and a timer that advances 1000 ticks per
 * window. Replies are appended to a buffer and checked line by line. */
#ifndef FAKE_PORT_H
#define FAKE_PORT_H

#include <stdint.h>

#include "protocol.h"

#define FAKE_WINDOW 4
#define FAKE_CHANNELS 3
#define FAKE_OUTPUTS 3
#define FAKE_OUT_CAP 65536u

typedef struct {
    char out[FAKE_OUT_CAP];
    uint32_t out_len;     /* bytes kept in out (stops growing at the cap) */
    uint64_t out_total;   /* bytes written */
    uint32_t ready_lines; /* lines equal to "m-ready" */
    uint32_t bad_lines;   /* lines not starting with "m-" or "e-", or not ending in CR LF */
    char cur[512];
    uint32_t cur_len;
    uint64_t now;
    int32_t acc[FAKE_OUTPUTS];
    uint32_t stream_t;
    uint32_t pin_pulses; /* energy mode: timestamp pin pulses (each advances 30 ticks) */
} fake_device;

/** @brief A parser bound to a fresh fake device (buffer: one whole window); with energy
 *  set, in MLPerf energy mode (timestamps pulse a counted pin). */
void fake_init(fake_device *d, tgp_state *p, int16_t *buf, int energy);

#endif /* FAKE_PORT_H */
