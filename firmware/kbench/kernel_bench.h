/* The kernel benchmark's call signatures and its empty reference calls. */
#ifndef TG_KERNEL_BENCH_H
#define TG_KERNEL_BENCH_H

#include "tinygru.h"

/** The signature of tg_fc_layer_run. */
typedef void (*kb_fc_fn)(const tg_fc_layer *l, const int8_t *x, int8_t *y, int32_t *work);

/** One element-wise op of a step (op = 16 * layer + KB_OP_*, see kernel_bench.c) on the
 *  inputs a and b (b unused by one-input ops), output y. */
typedef void (*kb_op_fn)(const tg_model_params *m, uint32_t op, const int8_t *a, const int8_t *b,
                         int8_t *y);

/** Do nothing; defined in their own file so the compiler cannot see through the calls.
 *  Timing them in the same loops as the engine calls gives the loop and call overhead. */
void kb_empty_call(const tg_fc_layer *l, const int8_t *x, int8_t *y, int32_t *work);
void kb_empty_op(const tg_model_params *m, uint32_t op, const int8_t *a, const int8_t *b,
                 int8_t *y);

#endif /* TG_KERNEL_BENCH_H */
