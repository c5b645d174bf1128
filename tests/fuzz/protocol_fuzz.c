/* libFuzzer target: arbitrary bytes into the device protocol parser.
 * Checks, besides the sanitizers: every terminator gets exactly one m-ready,
 * every reply line is "m-..." or "e-..." ending in CR LF, and the parser's
 * buffer bookkeeping stays in range. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fake_port.h"

static fake_device dev;
static tgp_state proto;
static int16_t buf[FAKE_WINDOW * FAKE_CHANNELS];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the first byte's low bit also picks the timestamp mode */
    const int energy = size > 0u && (data[0] & 1u) != 0u;
    fake_init(&dev, &proto, buf, energy);
    uint32_t terminators = 0u;
    for (size_t i = 0; i < size; ++i) {
        tgp_feed(&proto, data[i]);
        terminators += (data[i] == (uint8_t)TGP_TERMINATOR) ? 1u : 0u;
        if (proto.line_len > TGP_LINE_MAX || proto.load_pos > proto.load_size ||
            proto.load_size > proto.buf_cap) {
            abort();
        }
    }
    if (dev.ready_lines != terminators || dev.bad_lines != 0u || dev.cur_len != 0u) {
        abort();
    }
    return 0;
}
