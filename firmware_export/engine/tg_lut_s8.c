/* tinygru int8 engine: table lookup for LOGISTIC, TANH, QUANTIZE (see tinygru_kernels.h). */
#include "tinygru_kernels.h"

void tg_lut_s8(const int8_t table[256], const int8_t *input, int8_t *output, int32_t size)
{
    for (int32_t i = 0; i < size; ++i) {
        output[i] = table[(int32_t)input[i] + 128];
    }
}
