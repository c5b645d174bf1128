/* The tick counter (timer.h) on SysTick, counting at the processor clock. */
#include "timer.h"

#include "board.h"

#define SYST_CSR BOARD_REG(0xe000e010u)
#define SYST_RVR BOARD_REG(0xe000e014u)
#define SYST_CVR BOARD_REG(0xe000e018u)
#define SYST_MASK 0x00ffffffu
#define SYST_PERIOD (SYST_MASK + 1u)
#define CSR_ENABLE_TICKINT_CORE 0x7u

static volatile uint32_t wraps;

void board_systick_handler(void)
{
    wraps = wraps + 1u;
}

void timer_init(void)
{
    SYST_CSR = 0u;
    wraps = 0u;
    SYST_RVR = SYST_MASK;
    SYST_CVR = 0u; /* any write reloads */
    SYST_CSR = CSR_ENABLE_TICKINT_CORE;
}

void timer_pause(void)
{
    SYST_CSR = SYST_CSR & ~1u;
}

void timer_resume(void)
{
    SYST_CSR = SYST_CSR | 1u;
}

/* The wrap count and the down-counter are read until the count is stable
 * across the read, so a wrap between the two reads is never half seen. */
uint64_t timer_ticks(void)
{
    uint32_t hi;
    uint32_t lo;
    do {
        hi = wraps;
        lo = SYST_CVR & SYST_MASK;
    } while (hi != wraps);
    return (uint64_t)hi * SYST_PERIOD + (uint64_t)(SYST_MASK - lo);
}

uint32_t timer_hz(void)
{
    return BOARD_CPU_HZ;
}
