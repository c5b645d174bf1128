/* The receive side every console UART driver shares: a ring the driver's receive
 * interrupt fills (uart_ring_push) and uart.h's readers empty (uart_ring.c). */
#ifndef BOARD_UART_RING_H
#define BOARD_UART_RING_H

#include <stdint.h>

/** Receive ring size in bytes (a power of two). */
#define UART_RX_RING 512u

/** @brief Empty the ring and zero the overrun count (uart_init does this). */
void uart_ring_reset(void);

/** @brief Store one received byte (interrupt context); counted as dropped when full. */
void uart_ring_push(uint8_t c);

#endif /* BOARD_UART_RING_H */
