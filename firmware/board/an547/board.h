/* MPS3 AN547 as QEMU models it: Cortex-M55 (ARMv8.1-M with DSP and Helium) in the
 * SSE-300, 32 MHz. The core boots in the Secure state with the SAU off, so every access
 * is Secure, whichever alias. The console is CMSDK UART0 at 0x49303000, NVIC interrupts
 * 33 (RX) and 34 (TX). */
#ifndef BOARD_AN547_H
#define BOARD_AN547_H

#include "cortex_m.h"

/** Processor clock, which also drives SysTick (CLKSOURCE = 1). */
#define BOARD_CPU_HZ 32000000u

/** The console UART (uart.h): CMSDK UART0. */
#define BOARD_CONSOLE_UART 0x49303000u

/** External interrupts wired in the vector table, and the console UART's. */
#define BOARD_N_IRQS 48
#define BOARD_IRQ_CONSOLE_RX 33
#define BOARD_IRQ_CONSOLE_TX 34

/** Exit code of a CPU fault in semihosting builds. */
#define BOARD_EXIT_FAULT 0x7f

#endif /* BOARD_AN547_H */
