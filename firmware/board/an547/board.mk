# Board support of the MPS3 AN547 (QEMU `mps3-an547`): Cortex-M55 in the SSE-300, run in
# the Secure state; CMSDK UART0, SysTick; code in the ITCM, data in the DTCM.
# File names are relative to this folder; firmware/Makefile reads these variables.

BOARD_SRCS := ../common/startup.c
BOARD_CONSOLE_SRCS := ../common/uart_cmsdk.c ../common/uart_ring.c ../common/timer_systick.c
BOARD_LDSCRIPT := an547.ld
