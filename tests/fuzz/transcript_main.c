/* Host driver for transcript tests: stdin bytes into the protocol parser (bound
 * to the fake device), the replies to stdout. With an argument, the boot banner
 * is printed first. */
#include <stdio.h>

#include "fake_port.h"

static fake_device dev;
static tgp_state proto;
static int16_t buf[FAKE_WINDOW * FAKE_CHANNELS];

int main(int argc, char **argv)
{
    (void)argv;
    fake_init(&dev, &proto, buf);
    if (argc > 1) {
        tgp_boot(&proto);
    }
    int c;
    while ((c = getchar()) != EOF) {
        tgp_feed(&proto, (uint8_t)c);
    }
    fwrite(dev.out, 1u, dev.out_len, stdout);
    return dev.out_total == dev.out_len ? 0 : 2;
}
