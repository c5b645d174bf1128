/* Cortex-M startup for the MPS2 boards (AN385 Cortex-M3, AN386 Cortex-M4,
 * AN500 Cortex-M7): vector table, .data copy, .bss clear, then main.
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

__attribute__((section(".vectors"), used)) static const tg_vector vectors[16 + BOARD_N_IRQS] = {
    (tg_vector)(uintptr_t)__stack_top,
    tg_reset_handler,
    fault_handler, /* NMI */
    fault_handler, /* HardFault */
    fault_handler, /* MemManage */
    fault_handler, /* BusFault */
    fault_handler, /* UsageFault */
    0,
    0,
    0,
    0,
    board_default_handler, /* SVCall */
    board_default_handler, /* DebugMonitor */
    0,
    board_default_handler, /* PendSV */
    board_systick_handler, /* SysTick */
    [16 + BOARD_IRQ_UART0_RX] = board_uart0_rx_handler,
    [16 + BOARD_IRQ_UART0_TX] = board_uart0_tx_handler,
    [16 + 2 ... 16 + BOARD_N_IRQS - 1] = board_default_handler,
};
