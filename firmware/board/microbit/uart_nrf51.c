/* The console UART (uart.h) on the nRF51 UART (nRF51 Series Reference Manual, UART):
 * tasks and events instead of status bits, one interrupt for both directions.
 *
 * Receive: the RXDRDY event raises the interrupt; the handler clears the event, then
 * reads RXD, as long as the event comes back (the UART holds up to 6 bytes).
 * Transmit: one byte in flight; TXDRDY says it has gone. A writer that must wait
 * enables the TXDRDY interrupt and sleeps (WFI); the handler disables it again. */
#include "uart.h"

#include "board.h"
#include "uart_ring.h"

/* Register offsets: tasks, events, interrupt enable, configuration. */
#define UART_STARTRX 0x000u
#define UART_STARTTX 0x008u
#define UART_RXDRDY 0x108u
#define UART_TXDRDY 0x11cu
#define UART_INTENSET 0x304u
#define UART_INTENCLR 0x308u
#define UART_ENABLE 0x500u
#define UART_RXD 0x518u
#define UART_TXD 0x51cu
#define UART_BAUDRATE 0x524u

#define INT_RXDRDY (1u << 2)
#define INT_TXDRDY (1u << 7)
#define ENABLE_UART 4u
#define TASK_START 1u
#define BAUDRATE_115200 0x01d7e000u

static uint32_t uart_base;
static uint32_t tx_in_flight; /* a byte was written whose TXDRDY has not been taken */

/* The nRF51's baud rate register takes fixed codes; only 115200 (the DUT's) is known
 * here, any other rate keeps the reset value (250000). The clock is fixed (16 MHz). */
void uart_init(uint32_t base, uint32_t clock_hz, uint32_t baud)
{
    (void)clock_hz;
    uart_base = base;
    tx_in_flight = 0u;
    uart_ring_reset();
    BOARD_REG(base + UART_ENABLE) = ENABLE_UART;
    if (baud == 115200u) {
        BOARD_REG(base + UART_BAUDRATE) = BAUDRATE_115200;
    }
    BOARD_REG(base + UART_RXDRDY) = 0u;
    BOARD_REG(base + UART_TXDRDY) = 0u;
    BOARD_REG(base + UART_STARTTX) = TASK_START;
    BOARD_REG(base + UART_STARTRX) = TASK_START;
    BOARD_REG(base + UART_INTENSET) = INT_RXDRDY;
    if (base == BOARD_CONSOLE_UART) {
        board_irq_enable(BOARD_IRQ_CONSOLE_RX);
    }
}

/* The UART's one interrupt: take every received byte; a pending TXDRDY only wakes
 * uart_write, so its interrupt is switched off until the next wait. */
void board_uart0_rx_handler(void)
{
    const uint32_t base = uart_base;
    BOARD_REG(base + UART_INTENCLR) = INT_TXDRDY;
    while (BOARD_REG(base + UART_RXDRDY) != 0u) {
        BOARD_REG(base + UART_RXDRDY) = 0u;
        uart_ring_push((uint8_t)BOARD_REG(base + UART_RXD));
    }
}

static int tx_busy(void)
{
    return tx_in_flight != 0u && BOARD_REG(uart_base + UART_TXDRDY) == 0u;
}

void uart_write(const char *s, uint32_t n)
{
    for (uint32_t i = 0u; i < n; ++i) {
        while (tx_busy()) {
            board_interrupts_off();
            BOARD_REG(uart_base + UART_INTENSET) = INT_TXDRDY;
            if (tx_busy()) {
                board_wait_for_interrupt();
            }
            board_interrupts_on();
        }
        BOARD_REG(uart_base + UART_TXDRDY) = 0u;
        BOARD_REG(uart_base + UART_TXD) = (uint8_t)s[i];
        tx_in_flight = 1u;
    }
}
