/* What every Cortex-M core of the boards has in common (ARMv6-M, ARMv7-M, ARMv8-M):
 * the NVIC, interrupt masking and sleep. Each board.h includes this. */
#ifndef BOARD_CORTEX_M_H
#define BOARD_CORTEX_M_H

#include <stdint.h>

#define BOARD_REG(addr) (*(volatile uint32_t *)(uintptr_t)(addr))
/** NVIC interrupt set-enable registers, 32 interrupts each. */
#define BOARD_NVIC_ISER(n) BOARD_REG(0xe000e100u + 4u * (n))

static inline void board_irq_enable(uint32_t irq)
{
    BOARD_NVIC_ISER(irq / 32u) = 1u << (irq % 32u);
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

#endif /* BOARD_CORTEX_M_H */
