/* MPS2 AN505 as QEMU models it: Cortex-M33 (ARMv8-M Mainline with DSP) in the Arm IoT
 * Kit, 20 MHz. The core boots in the Secure state and stays there: with the SAU off every
 * access is Secure, and the peripherals are reached through their Secure aliases. The
 * console is CMSDK UART0 at 0x50200000 (Secure alias of 0x40200000), expansion
 * interrupts 0 (RX) and 1 (TX), which are NVIC interrupts 32 and 33. */
#ifndef BOARD_AN505_H
#define BOARD_AN505_H

#include "cortex_m.h"

/** Processor clock (MAINCLK), which also drives SysTick (CLKSOURCE = 1). */
#define BOARD_CPU_HZ 20000000u

/** The console UART (uart.h): CMSDK UART0, Secure alias. */
#define BOARD_CONSOLE_UART 0x50200000u

/** External interrupts wired in the vector table, and the console UART's. */
#define BOARD_N_IRQS 48
#define BOARD_IRQ_CONSOLE_RX 32
#define BOARD_IRQ_CONSOLE_TX 33

/** Exit code of a CPU fault in semihosting builds. */
#define BOARD_EXIT_FAULT 0x7f

#endif /* BOARD_AN505_H */
