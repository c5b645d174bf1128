/**
 * @file tinygru_kernels.h
 * @brief int8 kernels of the tinygru engine, bit-exact with the TFLM reference kernels.
 *
 * Every kernel reproduces the integer arithmetic of the pinned TFLM build
 * (tflite-micro 0.dev20261023182759), which uses double rounding:
 * requantization is SaturatingRoundingDoublingHighMul followed by
 * RoundingDivideByPOT (see tg_requantize.h). All multipliers, shifts and tables
 * are computed offline from the float scales of the .tflite exactly as TFLM's
 * Prepare does (firmware_export/tflm_ref.py); nothing here uses float or the heap.
 *
 * Conventions:
 * - A (multiplier, shift) pair encodes the real number multiplier * 2^(shift - 31).
 *   Multiplier range: {0} or [2^30, 2^31 - 1]. Shift range: {-31, 30}.
 * - An "offset" is added to a value: input offsets are minus the input zero
 *   point (range {-127, 128}), output offsets are the output zero point
 *   (range {-128, 127}).
 * - act_min <= act_max, both in {-128, 127}: the fused-activation clamp.
 * - Relies on two's-complement int32 with arithmetic right shift of negative
 *   values (true of GCC, Clang and Arm compilers).
 */
#ifndef TINYGRU_KERNELS_H
#define TINYGRU_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * 1 when the kernels use the Arm DSP extension (SIMD32: SMLAD, SMMLAR, ...): the compiler
 * targets a core that has it (__ARM_FEATURE_DSP: Cortex-M4/M7/M33/M55) and TG_NO_DSP is
 * not defined. TG_NO_DSP forces the portable C path (same outputs). It also selects the
 * packed weight layout of the model data (tinygru.h, tg_fc_packed_s8).
 */
#if defined(__ARM_FEATURE_DSP) && !defined(TG_NO_DSP)
#define TG_USE_DSP 1
#else
#define TG_USE_DSP 0
#endif

/** Sizes and quantization of one FULLY_CONNECTED layer. */
typedef struct {
    int32_t batches;       /**< Input vectors per call. Range: {1, ...}. */
    int32_t rows;          /**< Output features (weight rows). Range: {1, ...}. */
    int32_t cols;          /**< Input features (weight columns). Range: {1, ...}. */
    int32_t input_offset;  /**< -input zero point, or 0 when folded into the bias. */
    int32_t output_offset; /**< Output zero point. Range: {-128, 127}. */
    int32_t act_min;       /**< Clamp low. Range: {-128, 127}. */
    int32_t act_max;       /**< Clamp high. Range: {act_min, 127}. */
} tg_fc_params;

/**
 * @brief int8 FULLY_CONNECTED with per-row requantization.
 *
 * y[b][r] = clamp(requantize(bias[r] + sum_c w[r][c] * (x[b][c] + input_offset),
 *                            mult[r], shift[r]) + output_offset, act_min, act_max)
 *
 * A per-tensor layer passes the same pair in every row. The input zero point may
 * be folded offline, bias'[r] = bias[r] - zp_in * sum_c w[r][c], with
 * input_offset = 0: identical results in int32.
 *
 * @param[in]  p       Sizes and offsets.
 * @param[in]  input   [batches][cols] int8.
 * @param[in]  weights [rows][cols] int8, row-major, symmetric (zero point 0).
 * @param[in]  bias    [rows] int32, or NULL for none.
 * @param[in]  mult    [rows] multipliers. Range: [2^30, 2^31 - 1] (or 0).
 * @param[in]  shift   [rows] shifts. Range: {-31, 30}.
 * @param[out] output  [batches][rows] int8.
 */
void tg_fully_connected_s8(const tg_fc_params *p, const int8_t *input, const int8_t *weights,
                           const int32_t *bias, const int32_t *mult, const int32_t *shift,
                           int8_t *output);

/** Quantization of an int8 ADD or SUB (TFLM's left-shift-20 scheme). */
typedef struct {
    int32_t input1_offset;     /**< -zero point of input 1. Range: {-127, 128}. */
    int32_t input1_multiplier; /**< s1 / (2 max(s1, s2)). Range: [2^30, 2^31 - 1]. */
    int32_t input1_shift;      /**< Range: {-31, 0}. */
    int32_t input2_offset;     /**< -zero point of input 2. Range: {-127, 128}. */
    int32_t input2_multiplier; /**< s2 / (2 max(s1, s2)). Range: [2^30, 2^31 - 1]. */
    int32_t input2_shift;      /**< Range: {-31, 0}. */
    int32_t left_shift;        /**< Always 20 for int8. */
    int32_t output_offset;     /**< Output zero point. Range: {-128, 127}. */
    int32_t output_multiplier; /**< 2 max(s1, s2) / (2^20 so). Range: [2^30, 2^31 - 1]. */
    int32_t output_shift;      /**< Range: {-31, 0}. */
    int32_t act_min;           /**< Clamp low. Range: {-128, 127}. */
    int32_t act_max;           /**< Clamp high. Range: {act_min, 127}. */
} tg_addsub_params;

/**
 * @brief int8 ADD: out[i] = in1[i * in1_stride] + in2[i * in2_stride] in real values.
 *
 * Each input is offset, shifted left by left_shift, requantized by its own
 * multiplier; the sum is requantized by the output multiplier, offset and clamped.
 * A stride of 0 broadcasts a scalar (e.g. a constant), 1 walks a vector.
 *
 * @param[in]  p          Quantization.
 * @param[in]  in1        Input 1.
 * @param[in]  in1_stride Range: {0, 1}.
 * @param[in]  in2        Input 2.
 * @param[in]  in2_stride Range: {0, 1}.
 * @param[out] out        [size] int8.
 * @param[in]  size       Number of outputs. Range: {0, ...}.
 */
void tg_add_s8(const tg_addsub_params *p, const int8_t *in1, int32_t in1_stride, const int8_t *in2,
               int32_t in2_stride, int8_t *out, int32_t size);

/** @brief int8 SUB: as tg_add_s8 with the scaled input 2 subtracted (in1 - in2). */
void tg_sub_s8(const tg_addsub_params *p, const int8_t *in1, int32_t in1_stride, const int8_t *in2,
               int32_t in2_stride, int8_t *out, int32_t size);

/** Quantization of an int8 MUL. */
typedef struct {
    int32_t input1_offset;     /**< -zero point of input 1. Range: {-127, 128}. */
    int32_t input2_offset;     /**< -zero point of input 2. Range: {-127, 128}. */
    int32_t output_offset;     /**< Output zero point. Range: {-128, 127}. */
    int32_t output_multiplier; /**< s1 s2 / so. Range: [2^30, 2^31 - 1] (or 0). */
    int32_t output_shift;      /**< Range: {-31, 30}. */
    int32_t act_min;           /**< Clamp low. Range: {-128, 127}. */
    int32_t act_max;           /**< Clamp high. Range: {act_min, 127}. */
} tg_mul_params;

/**
 * @brief int8 MUL: out[i] = clamp(requantize((in1 + off1) (in2 + off2)) + output_offset).
 *
 * Strides as for tg_add_s8 (0 broadcasts a scalar).
 */
void tg_mul_s8(const tg_mul_params *p, const int8_t *in1, int32_t in1_stride, const int8_t *in2,
               int32_t in2_stride, int8_t *out, int32_t size);

/**
 * @brief Any int8 -> int8 function of one value: out[i] = table[in[i] + 128].
 *
 * Serves LOGISTIC, TANH and QUANTIZE (int8 requantize): the exporter computes the
 * 256 entries exactly as TFLM computes each output (tflm_ref.logistic_table,
 * tanh_table, quantize_table). In-place use (input == output) is allowed.
 *
 * @param[in]  table  256 entries; entry k is the output for input k - 128.
 * @param[in]  input  [size] int8.
 * @param[out] output [size] int8.
 * @param[in]  size   Range: {0, ...}.
 */
void tg_lut_s8(const int8_t table[256], const int8_t *input, int8_t *output, int32_t size);

/**
 * @brief int8 SOFTMAX over the last axis; output scale 1/256, zero point -128.
 *
 * exp_table[d] holds exp(beta * s_in * (-d)) in Q0.31 for d = 0..255, 0 where TFLM
 * skips the difference (tflm_ref.softmax_exp_table). Per row: sum of the entries
 * rounded to Q12.19, fixed-point reciprocal (Newton-Raphson), outputs rounded.
 *
 * @param[in]  exp_table 256 entries, exp_table[0] = 2^31 - 1.
 * @param[in]  input     [rows][depth] int8.
 * @param[out] output    [rows][depth] int8.
 * @param[in]  rows      Range: {1, ...}.
 * @param[in]  depth     Range: {1, 4096}.
 */
void tg_softmax_s8(const int32_t exp_table[256], const int8_t *input, int8_t *output, int32_t rows,
                   int32_t depth);

#ifdef __cplusplus
}
#endif

#endif /* TINYGRU_KERNELS_H */
