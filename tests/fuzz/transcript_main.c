/* Host driver for transcript tests: stdin bytes into the protocol parser (bound
 * to the fake device), the replies to stdout. Arguments: "boot" prints the boot
 * banner first; "energy" runs the parser in MLPerf energy mode and reports the
 * timestamp pin pulses on stderr ("pulses=N"). */
#include <stdio.h>
#include <string.h>

#include "fake_port.h"

static fake_device dev;
static tgp_state proto;
static int16_t buf[FAKE_WINDOW * FAKE_CHANNELS];

int main(int argc, char **argv)
{
    int boot = 0;
    int energy = 0;
    for (int i = 1; i < argc; ++i) {
        boot |= strcmp(argv[i], "boot") == 0;
        energy |= strcmp(argv[i], "energy") == 0;
    }
    fake_init(&dev, &proto, buf, energy);
    if (boot) {
        tgp_boot(&proto);
    }
    int c;
    while ((c = getchar()) != EOF) {
        tgp_feed(&proto, (uint8_t)c);
    }
    fwrite(dev.out, 1u, dev.out_len, stdout);
    if (energy) {
        fprintf(stderr, "pulses=%lu\n", (unsigned long)dev.pin_pulses);
    }
    return dev.out_total == dev.out_len ? 0 : 2;
}
