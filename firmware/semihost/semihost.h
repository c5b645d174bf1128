/* ARM semihosting calls (bkpt 0xab) of the programs that run under QEMU with files. */
#ifndef TG_SEMIHOST_H
#define TG_SEMIHOST_H

#include <stdint.h>

enum {
    SH_SYS_OPEN = 0x01,
    SH_SYS_CLOSE = 0x02,
    SH_SYS_WRITE = 0x05,
    SH_SYS_READ = 0x06,
    SH_SYS_EXIT_EXTENDED = 0x20
};

/** Open modes of SYS_OPEN. */
enum { SH_MODE_RB = 1, SH_MODE_WB = 5 };

/** @return a file handle, or -1. */
int32_t sh_open(const char *name, int32_t mode);
void sh_close(int32_t handle);
/** @return 0 when all n bytes were read or written. */
int32_t sh_read(int32_t handle, void *buf, uint32_t n);
int32_t sh_write(int32_t handle, const void *buf, uint32_t n);
/** Stop the emulator; QEMU exits with `code`. */
void sh_exit(int32_t code) __attribute__((noreturn));

#endif /* TG_SEMIHOST_H */
