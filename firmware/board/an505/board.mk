# Board support of the MPS2 AN505 (QEMU `mps2-an505`): Cortex-M33 in the IoT Kit, run in
# the Secure state; CMSDK UART0 at its Secure alias, SysTick.
# File names are relative to this folder; firmware/Makefile reads these variables.

BOARD_SRCS := ../common/startup.c
BOARD_CONSOLE_SRCS := ../common/uart_cmsdk.c ../common/uart_ring.c ../common/timer_systick.c
BOARD_LDSCRIPT := an505.ld
