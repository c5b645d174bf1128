/* The receive ring of uart_ring.h and the readers of uart.h over it. */
#include "uart_ring.h"

#include "board.h"
#include "uart.h"

static volatile uint8_t rx_ring[UART_RX_RING];
static volatile uint32_t rx_head; /* written by the interrupt handler */
static volatile uint32_t rx_tail; /* written by the reader */
static volatile uint32_t rx_dropped;

void uart_ring_reset(void)
{
    rx_head = 0u;
    rx_tail = 0u;
    rx_dropped = 0u;
}

void uart_ring_push(uint8_t c)
{
    const uint32_t head = rx_head;
    if (head - rx_tail < UART_RX_RING) {
        rx_ring[head & (UART_RX_RING - 1u)] = c;
        rx_head = head + 1u;
    } else {
        rx_dropped = rx_dropped + 1u;
    }
}

int32_t uart_read(void)
{
    const uint32_t tail = rx_tail;
    if (rx_head == tail) {
        return -1;
    }
    const uint8_t c = rx_ring[tail & (UART_RX_RING - 1u)];
    rx_tail = tail + 1u;
    return (int32_t)c;
}

uint8_t uart_read_blocking(void)
{
    for (;;) {
        board_interrupts_off();
        const int32_t c = uart_read();
        if (c >= 0) {
            board_interrupts_on();
            return (uint8_t)c;
        }
        board_wait_for_interrupt();
        board_interrupts_on();
    }
}

uint32_t uart_rx_overruns(void)
{
    return rx_dropped;
}
