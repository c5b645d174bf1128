/* The console UART (uart.h) on the Arm CMSDK APB UART: UART0 of the MPS2 boards. */
#include "uart.h"

#include "board.h"

/** Receive ring size in bytes (a power of two). */
#define UART_RX_RING 512u

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
static volatile uint8_t rx_ring[UART_RX_RING];
static volatile uint32_t rx_head; /* written by the interrupt handler */
static volatile uint32_t rx_tail; /* written by the reader */
static volatile uint32_t rx_dropped;

void uart_init(uint32_t base, uint32_t clock_hz, uint32_t baud)
{
    uint32_t div = (baud == 0u) ? 16u : clock_hz / baud;
    if (div < 16u) {
        div = 16u;
    }
    uart_base = base;
    rx_head = 0u;
    rx_tail = 0u;
    rx_dropped = 0u;
    BOARD_REG(base + UART_CTRL) = 0u;
    BOARD_REG(base + UART_BAUDDIV) = div;
    (void)BOARD_REG(base + UART_DATA); /* one dummy read: no stale RX-full state */
    BOARD_REG(base + UART_INT) = INT_RX | INT_TX;
    BOARD_REG(base + UART_CTRL) = CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_IRQ_EN | CTRL_TX_IRQ_EN;
    if (base == BOARD_CONSOLE_UART) {
        board_irq_enable(BOARD_IRQ_UART0_RX);
        board_irq_enable(BOARD_IRQ_UART0_TX);
    }
}

/* Clear the interrupt first, then drain DATA: a byte arriving in between raises
 * the interrupt again instead of being lost. */
void board_uart0_rx_handler(void)
{
    const uint32_t base = uart_base;
    BOARD_REG(base + UART_INT) = INT_RX;
    while ((BOARD_REG(base + UART_STATE) & STATE_RX_FULL) != 0u) {
        const uint8_t c = (uint8_t)BOARD_REG(base + UART_DATA);
        const uint32_t head = rx_head;
        if (head - rx_tail < UART_RX_RING) {
            rx_ring[head & (UART_RX_RING - 1u)] = c;
            rx_head = head + 1u;
        } else {
            rx_dropped = rx_dropped + 1u;
        }
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
