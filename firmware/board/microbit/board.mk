# Board support of the BBC micro:bit (QEMU `microbit`): nRF51822, Cortex-M0 (ARMv6-M:
# no DSP, no 64-bit multiply), 256 KB flash, 16 KB RAM, the nRF51 UART, SysTick.
# File names are relative to this folder; firmware/Makefile reads these variables.

BOARD_SRCS := ../common/startup.c
BOARD_CONSOLE_SRCS := uart_nrf51.c ../common/uart_ring.c ../common/timer_systick.c
BOARD_LDSCRIPT := microbit.ld
# 16 KB RAM: the semihosting runner reads at most 2048 int16 counts at a time (4 KB); the
# kernel benchmark's buffers are 7 KB in, 3 KB out (kernel_bench.py BUFFER_BYTES)
BOARD_CFLAGS := -DTGT_MAX_COUNTS=2048 -DKB_MAX_IN=7168 -DKB_MAX_OUT=3072
