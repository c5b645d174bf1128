/* ARM semihosting: operation in r0, parameter block address in r1, result in r0. */
#include "semihost.h"

static int32_t sh_call(int32_t op, const void *arg)
{
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static uint32_t str_len(const char *s)
{
    uint32_t n = 0u;
    while (s[n] != '\0') {
        ++n;
    }
    return n;
}

int32_t sh_open(const char *name, int32_t mode)
{
    const uint32_t block[3] = { (uint32_t)name, (uint32_t)mode, str_len(name) };
    return sh_call(SH_SYS_OPEN, block);
}

void sh_close(int32_t handle)
{
    const uint32_t block[1] = { (uint32_t)handle };
    (void)sh_call(SH_SYS_CLOSE, block);
}

int32_t sh_read(int32_t handle, void *buf, uint32_t n)
{
    const uint32_t block[3] = { (uint32_t)handle, (uint32_t)buf, n };
    return sh_call(SH_SYS_READ, block);
}

int32_t sh_write(int32_t handle, const void *buf, uint32_t n)
{
    const uint32_t block[3] = { (uint32_t)handle, (uint32_t)buf, n };
    return sh_call(SH_SYS_WRITE, block);
}

void sh_exit(int32_t code)
{
    const uint32_t block[2] = { 0x20026u, (uint32_t)code }; /* ADP_Stopped_ApplicationExit */
    for (;;) {
        (void)sh_call(SH_SYS_EXIT_EXTENDED, block);
    }
}
