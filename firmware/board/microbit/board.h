/* BBC micro:bit as QEMU models it: nRF51822 (Cortex-M0, ARMv6-M), 16 MHz, 16 KB RAM;
 * the console is the nRF51 UART at 0x40002000 (its one interrupt, 2, serves RX and TX). */
#ifndef BOARD_MICROBIT_H
#define BOARD_MICROBIT_H

#include "cortex_m.h"

/** Processor clock (HCLK), which also drives SysTick (CLKSOURCE = 1). */
#define BOARD_CPU_HZ 16000000u

/** The console UART (uart.h): the nRF51 UART. */
#define BOARD_CONSOLE_UART 0x40002000u

/** External interrupts wired in the vector table; the UART's (peripheral ID 2). */
#define BOARD_N_IRQS 32
#define BOARD_IRQ_CONSOLE_RX 2
#define BOARD_IRQ_CONSOLE_TX 2

/** Exit code of a CPU fault in semihosting builds. */
#define BOARD_EXIT_FAULT 0x7f

#endif /* BOARD_MICROBIT_H */
