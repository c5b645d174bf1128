/* STM32F405 as QEMU's netduinoplus2 models it: Cortex-M4F at 168 MHz (SYSCLK, no RCC
 * model: the clock is fixed). The console is USART1 at 0x40011000, interrupt 37 (one
 * for RX and TX); QEMU connects it to the first -serial. */
#ifndef BOARD_STM32F405_H
#define BOARD_STM32F405_H

#include "cortex_m.h"

/** Processor clock (SYSCLK = HCLK), which also drives SysTick (CLKSOURCE = 1). */
#define BOARD_CPU_HZ 168000000u

/** The console UART (uart.h): USART1. */
#define BOARD_CONSOLE_UART 0x40011000u

/** External interrupts wired in the vector table; USART1's. */
#define BOARD_N_IRQS 82
#define BOARD_IRQ_CONSOLE_RX 37
#define BOARD_IRQ_CONSOLE_TX 37

/** Exit code of a CPU fault in semihosting builds. */
#define BOARD_EXIT_FAULT 0x7f

#endif /* BOARD_STM32F405_H */
