/* The console UART every board provides (board/<support>/ implements it): interrupt-driven
 * receive into a ring buffer; transmit waits for room in the core's sleep (WFI), woken by
 * the transmit interrupt. The DUT speaks the device protocol over it. */
#ifndef BOARD_UART_H
#define BOARD_UART_H

#include <stdint.h>

/**
 * @brief Enable TX and RX with the RX interrupt for the UART at `base`.
 * @param base     register base: BOARD_CONSOLE_UART of board.h.
 * @param clock_hz the UART's clock.
 * @param baud     line rate; the divider is clock_hz / baud, as the UART allows.
 */
void uart_init(uint32_t base, uint32_t clock_hz, uint32_t baud);

/** @brief Send n bytes, waiting while the transmit buffer is full. */
void uart_write(const char *s, uint32_t n);

/** @return the next received byte (0..255), or -1 when none is waiting. */
int32_t uart_read(void);

/** @brief Block (WFI) until a received byte is waiting; return it. */
uint8_t uart_read_blocking(void);

/** @return bytes dropped because the receive ring was full. */
uint32_t uart_rx_overruns(void);

#endif /* BOARD_UART_H */
