/* MPS2 board constants shared by AN385 (Cortex-M3), AN386 (Cortex-M4) and
 * AN500 (Cortex-M7): one memory map, CMSDK UART0 at 0x40004000, 25 MHz clock. */
#ifndef BOARD_MPS2_H
#define BOARD_MPS2_H

#include "cortex_m.h"

/** Processor clock, which also drives SysTick (CLKSOURCE = 1). */
#define BOARD_CPU_HZ 25000000u

/** The console UART (uart.h): CMSDK UART0. */
#define BOARD_CONSOLE_UART 0x40004000u

/** External interrupts wired in the vector table, and the console UART's. */
#define BOARD_N_IRQS 32
#define BOARD_IRQ_CONSOLE_RX 0
#define BOARD_IRQ_CONSOLE_TX 1

/** Exit code of a CPU fault in semihosting builds. */
#define BOARD_EXIT_FAULT 0x7f

#endif /* BOARD_MPS2_H */
