/* The console UART (uart.h) on the STM32F4 USART (RM0090, USART): status register SR
 * (RXNE, TXE), data register DR, one interrupt for both directions.
 *
 * Receive: RXNE raises the interrupt; reading DR clears it. Transmit: TXE says DR has
 * room; a writer that must wait enables the TXE interrupt and sleeps (WFI), and the
 * handler disables it again. On a real part the bus clocks and pins are switched on
 * first (RCC, GPIOA PA9/PA10 as AF7); QEMU models neither and ignores those writes. */
#include "uart.h"

#include "board.h"
#include "uart_ring.h"

/* USART register offsets and bits. */
#define USART_SR 0x00u
#define USART_DR 0x04u
#define USART_BRR 0x08u
#define USART_CR1 0x0cu
#define SR_RXNE (1u << 5)
#define SR_TXE (1u << 7)
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define CR1_RXNEIE (1u << 5)
#define CR1_TXEIE (1u << 7)
#define CR1_UE (1u << 13)

/* Clocks and pins of USART1 on a real STM32F405. */
#define RCC_AHB1ENR 0x40023830u
#define RCC_APB2ENR 0x40023844u
#define RCC_GPIOAEN (1u << 0)
#define RCC_USART1EN (1u << 4)
#define GPIOA_MODER 0x40020000u
#define GPIOA_AFRH 0x40020024u
#define PA9_PA10_MODER_MASK (0xfu << 18)
#define PA9_PA10_MODER_AF (0xau << 18)
#define PA9_PA10_AFRH_MASK (0xffu << 4)
#define PA9_PA10_AFRH_AF7 (0x77u << 4)

static uint32_t uart_base;

static void usart1_clocks_and_pins(void)
{
    BOARD_REG(RCC_AHB1ENR) = BOARD_REG(RCC_AHB1ENR) | RCC_GPIOAEN;
    BOARD_REG(RCC_APB2ENR) = BOARD_REG(RCC_APB2ENR) | RCC_USART1EN;
    BOARD_REG(GPIOA_MODER) = (BOARD_REG(GPIOA_MODER) & ~PA9_PA10_MODER_MASK) | PA9_PA10_MODER_AF;
    BOARD_REG(GPIOA_AFRH) = (BOARD_REG(GPIOA_AFRH) & ~PA9_PA10_AFRH_MASK) | PA9_PA10_AFRH_AF7;
}

/* clock_hz: the USART's bus clock (on a real part APB2, at most 84 MHz); BRR is the
 * divider with 16x oversampling, rounded. */
void uart_init(uint32_t base, uint32_t clock_hz, uint32_t baud)
{
    uart_base = base;
    uart_ring_reset();
    if (base == BOARD_CONSOLE_UART) {
        usart1_clocks_and_pins();
    }
    BOARD_REG(base + USART_CR1) = 0u;
    BOARD_REG(base + USART_BRR) = (baud == 0u) ? 16u : (clock_hz + baud / 2u) / baud;
    (void)BOARD_REG(base + USART_DR); /* no stale received byte */
    BOARD_REG(base + USART_CR1) = CR1_UE | CR1_TE | CR1_RE | CR1_RXNEIE;
    if (base == BOARD_CONSOLE_UART) {
        board_irq_enable(BOARD_IRQ_CONSOLE_RX);
    }
}

/* The USART's one interrupt: take every received byte; TXE only wakes uart_write, so
 * its interrupt is switched off until the next wait. */
void board_uart0_rx_handler(void)
{
    const uint32_t base = uart_base;
    const uint32_t cr1 = BOARD_REG(base + USART_CR1);
    if ((cr1 & CR1_TXEIE) != 0u) {
        BOARD_REG(base + USART_CR1) = cr1 & ~CR1_TXEIE;
    }
    while ((BOARD_REG(base + USART_SR) & SR_RXNE) != 0u) {
        uart_ring_push((uint8_t)BOARD_REG(base + USART_DR));
    }
}

static int tx_full(void)
{
    return (BOARD_REG(uart_base + USART_SR) & SR_TXE) == 0u;
}

void uart_write(const char *s, uint32_t n)
{
    for (uint32_t i = 0u; i < n; ++i) {
        while (tx_full()) {
            board_interrupts_off();
            BOARD_REG(uart_base + USART_CR1) = BOARD_REG(uart_base + USART_CR1) | CR1_TXEIE;
            if (tx_full()) {
                board_wait_for_interrupt();
            }
            board_interrupts_on();
        }
        BOARD_REG(uart_base + USART_DR) = (uint8_t)s[i];
    }
}
