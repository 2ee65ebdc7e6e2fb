// gguf_quant.c: see gguf_quant.h.
#include "gguf_quant.h"

#include <math.h>
#include <string.h>

#include "../common/dtype.h"
#include "../common/err.h"

static void put_d(uint8_t *b, float d) {
    uint16_t h = f32_to_f16(d);  // round to nearest even, as ggml's GGML_FP32_TO_FP16
    b[0] = (uint8_t)h, b[1] = (uint8_t)(h >> 8);
}

void gguf_quantize_q8_0(uint8_t *dst, const float *x, int64_t n) {
    QL_ASSERT(n % GGUF_QK == 0);
    for (int64_t i = 0; i < n / GGUF_QK; i++, x += GGUF_QK, dst += GGUF_Q8_0_BYTES) {
        float amax = 0.0f;
        for (int j = 0; j < GGUF_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        put_d(dst, d);
        for (int j = 0; j < GGUF_QK; j++) {
            float q = roundf(x[j] * id);
            q = isnan(q) ? 0.0f : q > 127.0f ? 127.0f : q < -128.0f ? -128.0f : q;  // only for a non-finite id
            dst[2 + j] = (uint8_t)(int8_t)q;
        }
    }
}

void gguf_quantize_q4_0(uint8_t *dst, const float *x, int64_t n) {
    QL_ASSERT(n % GGUF_QK == 0);
    for (int64_t i = 0; i < n / GGUF_QK; i++, x += GGUF_QK, dst += GGUF_Q4_0_BYTES) {
        float amax = 0.0f, m = 0.0f;
        for (int j = 0; j < GGUF_QK; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]), m = x[j];  // strict: the first of equal magnitudes
        const float d = m / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        put_d(dst, d);
        for (int j = 0; j < GGUF_QK / 2; j++) {
            int q[2];
            for (int h = 0; h < 2; h++) {
                const float p = x[j + h * GGUF_QK / 2] * id;  // two roundings, as ggml: the product,
                const float v = p + 8.5f;                      // then the sum (never one fused step)
                q[h] = !(v >= 0.0f) ? 0 : v >= 15.0f ? 15 : (int)v;  // trunc, min 15 (v < 0: non-finite id only)
            }
            dst[2 + j] = (uint8_t)(q[0] | q[1] << 4);
        }
    }
}
