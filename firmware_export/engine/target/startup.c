/* Minimal Cortex-M3/M4 startup for the MPS2 boards: vector table, .data copy,
 * .bss clear, main, then a semihosting exit with main's return value. */
#include <stdint.h>

#include "semihost.h"

extern uint32_t __data_load[], __data_start[], __data_end[];
extern uint32_t __bss_start[], __bss_end[];
extern uint32_t __stack_top[];

int main(void);

#define TG_EXIT_FAULT 0x7f

void tg_reset_handler(void) __attribute__((noreturn));
static void fault_handler(void) __attribute__((noreturn));
static void idle_handler(void);

void tg_reset_handler(void)
{
    volatile uint32_t *src = __data_load;
    for (volatile uint32_t *dst = __data_start; dst < __data_end; ++dst, ++src) {
        *dst = *src;
    }
    for (volatile uint32_t *dst = __bss_start; dst < __bss_end; ++dst) {
        *dst = 0u;
    }
    sh_exit(main());
}

static void fault_handler(void)
{
    sh_exit(TG_EXIT_FAULT);
}

static void idle_handler(void)
{
}

typedef void (*tg_vector)(void);

__attribute__((section(".vectors"), used)) static const tg_vector vectors[16] = {
    (tg_vector)(uintptr_t)__stack_top,
    tg_reset_handler,
    fault_handler, /* NMI */
    fault_handler, /* HardFault */
    fault_handler, /* MemManage */
    fault_handler, /* BusFault */
    fault_handler, /* UsageFault */
    0, 0, 0, 0,
    idle_handler, /* SVCall */
    idle_handler, /* DebugMonitor */
    0,
    idle_handler, /* PendSV */
    idle_handler, /* SysTick */
};
