// qweight.c: exact element access and sizes of frozen weights (see ops.h).
#include "ops.h"

#include <string.h>

#include "../common/err.h"

float qweight_get(const qweight *w, int64_t r, int64_t c) {
    int64_t i = r * w->cols + c;
    switch (w->type) {
    case DT_F32: return ((const float *)w->data)[i];
    case DT_F16: return f16_to_f32(((const uint16_t *)w->data)[i]);
    case DT_BF16: return bf16_to_f32(((const uint16_t *)w->data)[i]);
    case DT_NF4: {
        float v;
        nf4_dequantize(&v, &w->nf4, i, 1);
        return v;
    }
    default: QL_ASSERT(!"qweight_get: unsupported dtype"); return 0;
    }
}

void qweight_rows_f32(const qweight *w, int64_t r0, int64_t nr, float *out) {
    int64_t i0 = r0 * w->cols, n = nr * w->cols;
    switch (w->type) {
    case DT_F32: memcpy(out, (const float *)w->data + i0, sizeof(float) * (size_t)n); return;
    case DT_F16: for (int64_t i = 0; i < n; i++) out[i] = f16_to_f32(((const uint16_t *)w->data)[i0 + i]); return;
    case DT_BF16: for (int64_t i = 0; i < n; i++) out[i] = bf16_to_f32(((const uint16_t *)w->data)[i0 + i]); return;
    case DT_NF4: nf4_dequantize(out, &w->nf4, i0, n); return;
    default: QL_ASSERT(!"qweight_rows_f32: unsupported dtype");
    }
}

size_t qweight_bytes(const qweight *w) {
    int64_t n = w->rows * w->cols;
    if (w->type == DT_NF4) return nf4_bytes(n);
    return (size_t)n * dtype_size(w->type);
}
