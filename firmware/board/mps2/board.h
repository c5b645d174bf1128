/* MPS2 board constants shared by AN385 (Cortex-M3), AN386 (Cortex-M4) and
 * AN500 (Cortex-M7): one memory map, CMSDK UART0 at 0x40004000, 25 MHz clock. */
#ifndef BOARD_MPS2_H
#define BOARD_MPS2_H

#include <stdint.h>

/** Processor clock, which also drives SysTick (CLKSOURCE = 1). */
#define BOARD_CPU_HZ 25000000u

/** The console UART (uart.h): CMSDK UART0. */
#define BOARD_CONSOLE_UART 0x40004000u

/** External interrupts wired in the vector table. */
#define BOARD_N_IRQS 32
#define BOARD_IRQ_UART0_RX 0
#define BOARD_IRQ_UART0_TX 1

/** Exit code of a CPU fault in semihosting builds. */
#define BOARD_EXIT_FAULT 0x7f

#define BOARD_REG(addr) (*(volatile uint32_t *)(uintptr_t)(addr))
#define BOARD_NVIC_ISER0 BOARD_REG(0xe000e100u)

static inline void board_irq_enable(uint32_t irq)
{
    BOARD_NVIC_ISER0 = 1u << irq;
}

static inline void board_interrupts_on(void)
{
    __asm__ volatile("cpsie i" ::: "memory");
}

static inline void board_interrupts_off(void)
{
    __asm__ volatile("cpsid i" ::: "memory");
}

/** Sleep until an interrupt is pending (also with interrupts masked). */
static inline void board_wait_for_interrupt(void)
{
    __asm__ volatile("dsb\n\twfi" ::: "memory");
}

#endif /* BOARD_MPS2_H */
