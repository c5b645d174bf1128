# Board support of the MPS2 boards: AN385 (Cortex-M3), AN386 (Cortex-M4) and AN500
# (Cortex-M7) share one memory map, the CMSDK UART and SysTick. Which boards use this
# folder, and their CPUs, is edge_runtime/boards.py's table (its `support` column).
# File names are relative to this folder; firmware/Makefile reads these variables.

# Every program: vector table, .data/.bss set-up, exit (semihosting or WFI).
BOARD_SRCS := ../common/startup.c
# Programs that talk over the console: board/uart.h and board/timer.h.
BOARD_CONSOLE_SRCS := ../common/uart_cmsdk.c ../common/uart_ring.c ../common/timer_systick.c
BOARD_LDSCRIPT := mps2.ld
