/* Arm CMSDK APB UART driver: interrupt-driven receive into a ring buffer;
 * transmit waits for a free buffer in WFI, woken by the TX interrupt. */
#ifndef UART_CMSDK_H
#define UART_CMSDK_H

#include <stdint.h>

/** UART0 of the MPS2 boards. */
#define UART_CMSDK_UART0 0x40004000u

/** Receive ring size in bytes (a power of two). */
#define UART_RX_RING 512u

/**
 * @brief Enable TX and RX with the RX interrupt for the UART at `base`.
 * @param base     register base (UART_CMSDK_UART0).
 * @param clock_hz peripheral clock.
 * @param baud     line rate; BAUDDIV = clock_hz / baud, at least 16.
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

#endif /* UART_CMSDK_H */
