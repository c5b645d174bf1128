/* The tick counter every board provides (board/<support>/ implements it): a free-running
 * 64-bit count, on the MPS2 boards SysTick at the processor clock.
 *
 * Under QEMU with -icount shift=0 one guest instruction takes 1 ns of virtual
 * time, so on the 25 MHz MPS2 boards one tick is 40 instructions: differences
 * of timer_ticks() count instructions, not Cortex-M cycles. */
#ifndef BOARD_TIMER_H
#define BOARD_TIMER_H

#include <stdint.h>

/** @brief Start counting from 0 (on MPS2: SysTick, reload 2^24 - 1, wrap interrupt). */
void timer_init(void);

/** @return ticks since timer_init. */
uint64_t timer_ticks(void);

/** @brief Stop counting (e.g. while the core sleeps waiting for input). */
void timer_pause(void);

/** @brief Count on from where timer_pause stopped. */
void timer_resume(void);

/** @return tick rate in Hz. */
uint32_t timer_hz(void);

#endif /* BOARD_TIMER_H */
