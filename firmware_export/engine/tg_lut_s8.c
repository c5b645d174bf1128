/* tinygru int8 engine: table lookup for LOGISTIC, TANH, QUANTIZE (see tinygru_kernels.h). */
#include "tinygru_kernels.h"

void tg_lut_s8(const int8_t table[256], const int8_t *input, int8_t *output, int32_t size)
{
    const int8_t *centre = table + 128; /* entry of input 0: centre[x] for x in [-128, 127] */
    int32_t i = 0;
    for (; i + 4 <= size; i += 4) {
        const int8_t a = centre[input[i]];
        const int8_t b = centre[input[i + 1]];
        const int8_t c = centre[input[i + 2]];
        const int8_t d = centre[input[i + 3]];
        output[i] = a;
        output[i + 1] = b;
        output[i + 2] = c;
        output[i + 3] = d;
    }
    for (; i < size; ++i) {
        output[i] = centre[input[i]];
    }
}
