/* The console UART (uart.h) on the Arm CMSDK APB UART: UART0 of the MPS2 boards
 * (AN385/AN386/AN500, AN505) and of the MPS3 AN547; board.h gives its base and interrupts. */
#include "uart.h"

#include "board.h"
#include "uart_ring.h"

/* Register offsets and bits. */
#define UART_DATA 0x00u
#define UART_STATE 0x04u
#define UART_CTRL 0x08u
#define UART_INT 0x0cu /* INTSTATUS on read, INTCLEAR on write */
#define UART_BAUDDIV 0x10u

#define STATE_TX_FULL 0x1u
#define STATE_RX_FULL 0x2u
#define CTRL_TX_EN 0x1u
#define CTRL_RX_EN 0x2u
#define CTRL_TX_IRQ_EN 0x4u
#define CTRL_RX_IRQ_EN 0x8u
#define INT_TX 0x1u
#define INT_RX 0x2u

static uint32_t uart_base;

void uart_init(uint32_t base, uint32_t clock_hz, uint32_t baud)
{
    uint32_t div = (baud == 0u) ? 16u : clock_hz / baud;
    if (div < 16u) {
        div = 16u;
    }
    uart_base = base;
    uart_ring_reset();
    BOARD_REG(base + UART_CTRL) = 0u;
    BOARD_REG(base + UART_BAUDDIV) = div;
    (void)BOARD_REG(base + UART_DATA); /* one dummy read: no stale RX-full state */
    BOARD_REG(base + UART_INT) = INT_RX | INT_TX;
    BOARD_REG(base + UART_CTRL) = CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_IRQ_EN | CTRL_TX_IRQ_EN;
    if (base == BOARD_CONSOLE_UART) {
        board_irq_enable(BOARD_IRQ_CONSOLE_RX);
        board_irq_enable(BOARD_IRQ_CONSOLE_TX);
    }
}

/* Clear the interrupt first, then drain DATA: a byte arriving in between raises
 * the interrupt again instead of being lost. */
void board_uart0_rx_handler(void)
{
    const uint32_t base = uart_base;
    BOARD_REG(base + UART_INT) = INT_RX;
    while ((BOARD_REG(base + UART_STATE) & STATE_RX_FULL) != 0u) {
        uart_ring_push((uint8_t)BOARD_REG(base + UART_DATA));
    }
}

/* The transmit interrupt only wakes the core from WFI in uart_write. */
void board_uart0_tx_handler(void)
{
    BOARD_REG(uart_base + UART_INT) = INT_TX;
}

static int tx_full(void)
{
    return (BOARD_REG(uart_base + UART_STATE) & STATE_TX_FULL) != 0u;
}

/* While the transmit buffer is full the core sleeps instead of polling, so an
 * emulator's I/O thread is not starved by register reads. */
void uart_write(const char *s, uint32_t n)
{
    for (uint32_t i = 0u; i < n; ++i) {
        while (tx_full()) {
            board_interrupts_off();
            if (tx_full()) {
                board_wait_for_interrupt();
            }
            board_interrupts_on();
        }
        BOARD_REG(uart_base + UART_DATA) = (uint8_t)s[i];
    }
}
