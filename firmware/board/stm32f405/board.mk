# Board support of the STM32F405 as QEMU's `netduinoplus2` models it: Cortex-M4F, 1 MB
# flash, 128 KB SRAM, the STM32 USART (USART1), SysTick.
# File names are relative to this folder; firmware/Makefile reads these variables.

BOARD_SRCS := ../common/startup.c
BOARD_CONSOLE_SRCS := usart_stm32.c ../common/uart_ring.c ../common/timer_systick.c
BOARD_LDSCRIPT := stm32f405.ld
# 128 KB SRAM: the kernel benchmark's buffers are 64 KB in, 40 KB out
# (kernel_bench.py BUFFER_BYTES)
BOARD_CFLAGS := -DKB_MAX_IN=65536 -DKB_MAX_OUT=40960
