/* Cortex-M startup of every board (ARMv6-M, ARMv7-M, ARMv8-M): vector table,
 * .data copy, .bss clear, then main. The board's board.h gives the number of
 * external interrupts (BOARD_N_IRQS) and the console UART's (BOARD_IRQ_CONSOLE_RX,
 * BOARD_IRQ_CONSOLE_TX; one number when the UART has a single interrupt, whose
 * handler is then board_uart0_rx_handler). The linker script puts .vectors where
 * the core fetches its reset vector (VTOR at reset, the Secure one on ARMv8-M).
 *
 * Built with -DBOARD_SEMIHOST_EXIT, main's return value (and a fault, as 0x7f)
 * ends the emulator through semihosting (semihost.h must be on the include
 * path); otherwise the core parks in a WFI loop. */
#include <stdint.h>

#include "board.h"

#if defined(BOARD_SEMIHOST_EXIT)
#include "semihost.h"
#endif

extern uint32_t __data_load[], __data_start[], __data_end[];
extern uint32_t __bss_start[], __bss_end[];
extern uint32_t __stack_top[];

int main(void);

void tg_reset_handler(void) __attribute__((noreturn));
void board_default_handler(void);
static void fault_handler(void) __attribute__((noreturn));

/* Handlers a program may define; unused ones fall back to board_default_handler. */
void board_systick_handler(void) __attribute__((weak, alias("board_default_handler")));
void board_uart0_rx_handler(void) __attribute__((weak, alias("board_default_handler")));
void board_uart0_tx_handler(void) __attribute__((weak, alias("board_default_handler")));

static void board_exit(int code) __attribute__((noreturn));

static void board_exit(int code)
{
#if defined(BOARD_SEMIHOST_EXIT)
    sh_exit(code);
#else
    (void)code;
    for (;;) {
        __asm__ volatile("wfi");
    }
#endif
}

void tg_reset_handler(void)
{
    volatile uint32_t *src = __data_load;
    for (volatile uint32_t *dst = __data_start; dst < __data_end; ++dst, ++src) {
        *dst = *src;
    }
    for (volatile uint32_t *dst = __bss_start; dst < __bss_end; ++dst) {
        *dst = 0u;
    }
    board_exit(main());
}

static void fault_handler(void)
{
    board_exit(BOARD_EXIT_FAULT);
}

void board_default_handler(void)
{
}

typedef void (*tg_vector)(void);

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverride-init" /* the console's vectors over the default */
__attribute__((section(".vectors"), used)) static const tg_vector vectors[16 + BOARD_N_IRQS] = {
    (tg_vector)(uintptr_t)__stack_top,
    tg_reset_handler,
    fault_handler, /* NMI */
    fault_handler, /* HardFault */
    fault_handler, /* MemManage */
    fault_handler, /* BusFault */
    fault_handler, /* UsageFault */
#if defined(__ARM_ARCH_8M_MAIN__) || defined(__ARM_ARCH_8_1M_MAIN__)
    fault_handler, /* SecureFault */
#else
    0,
#endif
    0,
    0,
    0,
    board_default_handler, /* SVCall */
    board_default_handler, /* DebugMonitor */
    0,
    board_default_handler, /* PendSV */
    board_systick_handler, /* SysTick */
    /* every external interrupt to the default handler, then the console's over it */
    [16 ... 16 + BOARD_N_IRQS - 1] = board_default_handler,
    [16 + BOARD_IRQ_CONSOLE_RX] = board_uart0_rx_handler,
#if BOARD_IRQ_CONSOLE_TX != BOARD_IRQ_CONSOLE_RX
    [16 + BOARD_IRQ_CONSOLE_TX] = board_uart0_tx_handler,
#endif
};
#pragma GCC diagnostic pop
