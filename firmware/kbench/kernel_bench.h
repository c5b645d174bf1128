/* The kernel benchmark's call signature and its empty reference call. */
#ifndef TG_KERNEL_BENCH_H
#define TG_KERNEL_BENCH_H

#include "tinygru.h"

/** The signature of tg_fc_layer_run. */
typedef void (*kb_fc_fn)(const tg_fc_layer *l, const int8_t *x, int8_t *y);

/** Does nothing; defined in its own file so the compiler cannot see through the call.
 *  Timing it in the same loop as tg_fc_layer_run gives the loop and call overhead. */
void kb_empty_call(const tg_fc_layer *l, const int8_t *x, int8_t *y);

#endif /* TG_KERNEL_BENCH_H */
