// qweight.c: exact element access and sizes of frozen weights (see ops.h).
#include "ops.h"

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

size_t qweight_bytes(const qweight *w) {
    int64_t n = w->rows * w->cols;
    if (w->type == DT_NF4) return nf4_bytes(n);
    return (size_t)n * dtype_size(w->type);
}
