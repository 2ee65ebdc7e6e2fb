// ops_ref.c: the plain-C reference of every op in kernels/ops.h. Single
// thread, no SIMD, double accumulators where it helps; always compiled. The
// tests hold the CPU and CUDA backends to these functions.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/err.h"
#include "../ops.h"
#include "grad_ref.h"

static void *ref_alloc(ops *o, size_t n) { return calloc(1, n ? n : 1); }
static void ref_free(ops *o, void *p) { free(p); }
static void ref_copy(ops *o, void *dst, const void *src, size_t n) { memcpy(dst, src, n); }
static int ref_weight_upload(ops *o, qweight *w) { return QL_OK; }
static void ref_weight_release(ops *o, qweight *w) {}
static void ref_sync(ops *o) {}
static void ref_destroy(ops *o) { free(o); }

static void ref_embed(ops *o, float *out, const qweight *table, const int *tokens, int N) {
    int64_t C = table->cols;
    for (int n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) out[n * C + c] = qweight_get(table, tokens[n], c);
}

static void ref_matmul(ops *o, float *out, const float *x, const qweight *w, int N) {
    for (int n = 0; n < N; n++)
        for (int64_t r = 0; r < w->rows; r++) {
            double acc = 0;
            for (int64_t c = 0; c < w->cols; c++) acc += (double)x[n * w->cols + c] * qweight_get(w, r, c);
            out[n * w->rows + r] = (float)acc;
        }
}

static void ref_attention(ops *o, float *out, const float *q, const float *k, const float *v, int N, int T0,
                          int H, int Hkv, int D) {
    int group = H / Hkv, T = T0 + N;
    double *sc = malloc(sizeof(double) * T);
    QL_ASSERT(sc);
    double scale = 1.0 / sqrt((double)D);
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            const float *qv = q + ((size_t)n * H + h) * D;
            int kh = h / group, last = T0 + n;
            double mx = -INFINITY, sum = 0;
            for (int t = 0; t <= last; t++) {
                const float *kv = k + ((size_t)t * Hkv + kh) * D;
                double d = 0;
                for (int i = 0; i < D; i++) d += (double)qv[i] * kv[i];
                sc[t] = d * scale;
                if (sc[t] > mx) mx = sc[t];
            }
            for (int t = 0; t <= last; t++) sum += (sc[t] = exp(sc[t] - mx));
            float *ov = out + ((size_t)n * H + h) * D;
            for (int i = 0; i < D; i++) {
                double acc = 0;
                for (int t = 0; t <= last; t++) acc += sc[t] * v[((size_t)t * Hkv + kh) * D + i];
                ov[i] = (float)(acc / sum);
            }
        }
    free(sc);
}

static void ref_add(ops *o, float *y, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += x[i];
}

// Element i of a segment's A or B of type t (F32, F16 or BF16), as fp32 (exact)
static float seg_value(const void *m, dtype t, size_t i) {
    switch (t) {
    case DT_F32: return ((const float *)m)[i];
    case DT_F16: return f16_to_f32(((const uint16_t *)m)[i]);
    case DT_BF16: return bf16_to_f32(((const uint16_t *)m)[i]);
    default: QL_ASSERT(!"lora segment: unsupported dtype"); return 0;
    }
}

// fp64 sums, as every reference op
static void ref_lora_shrink(ops *o, float *xa, const float *x, const lora_seg *seg, int nseg, int in) {
    for (int g = 0; g < nseg; g++) {
        const lora_seg *sg = &seg[g];
        for (int i = 0; i < sg->n; i++)
            for (int r = 0; r < sg->rank; r++) {
                const float *xr = x + (size_t)(sg->row0 + i) * in;
                double acc = 0;
                for (int c = 0; c < in; c++) acc += (double)xr[c] * seg_value(sg->A, sg->tA, (size_t)r * in + c);
                xa[(size_t)i * sg->rank + r] = (float)acc;
            }
        xa += (size_t)sg->n * sg->rank;
    }
}

static void ref_lora_expand(ops *o, float *y, const float *xa, const lora_seg *seg, int nseg, int out) {
    for (int g = 0; g < nseg; g++) {
        const lora_seg *sg = &seg[g];
        for (int i = 0; i < sg->n; i++)
            for (int j = 0; j < out; j++) {
                const float *xr = xa + (size_t)i * sg->rank;
                double acc = 0;
                for (int r = 0; r < sg->rank; r++) acc += (double)xr[r] * seg_value(sg->B, sg->tB, (size_t)j * sg->rank + r);
                y[(size_t)(sg->row0 + i) * out + j] += (float)(sg->scale * acc);
            }
        xa += (size_t)sg->n * sg->rank;
    }
}

static void ref_dropout(ops *o, float *out, const float *x, int64_t n, float p, uint64_t key) {
    float s = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++) out[i] = dropout_keep(key, i, p) ? x[i] * s : 0.0f;
}

static void ref_zero(ops *o, void *p, size_t bytes) { memset(p, 0, bytes); }

// Sequential double sum: the order the tests and the CPU's chunked sum are held to.
static double ref_sumsq(ops *o, const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

static void ref_adamw(ops *o, float *p, const float *g, float *m, float *v, int64_t n, const adamw_args *a) {
    adamw_scalars s = adamw_scalars_of(a);
    for (int64_t i = 0; i < n; i++) adamw_elem(&p[i], &m[i], &v[i], g[i], &s);
}

ops *ops_ref_new(void) {
    ops *o = calloc(1, sizeof *o);
    if (!o) { ql_err(QL_ENOMEM, "ops_ref_new: out of memory"); return NULL; }
    *o = (ops){
        .name = "ref", .alloc = ref_alloc, .free = ref_free, .to_device = ref_copy, .to_host = ref_copy, .copy = ref_copy,
        .weight_upload = ref_weight_upload, .weight_release = ref_weight_release, .sync = ref_sync,
        .destroy = ref_destroy, .embed = ref_embed, .rmsnorm = ref_rmsnorm, .matmul = ref_matmul,
        .rope = ref_rope, .attention = ref_attention, .swiglu = ref_swiglu, .add = ref_add,
        .rmsnorm_backward = ref_rmsnorm_backward, .rope_backward = ref_rope_backward,
        .attention_train = ref_attention_train, .attention_backward = ref_attention_backward,
        .swiglu_backward = ref_swiglu_backward, .dropout = ref_dropout, .matmul_backward_input = ref_matmul_backward_input,
        .cross_entropy = ref_cross_entropy, .lora_forward = ref_lora_forward, .lora_backward = ref_lora_backward,
        .lora_shrink = ref_lora_shrink, .lora_expand = ref_lora_expand,
        .zero = ref_zero, .sumsq = ref_sumsq, .adamw = ref_adamw,
        .host_memory = 0,  // on purpose: callers copy host arrays in, as for a device
        .lora_half = 1,
    };
    return o;
}

void ops_delete(ops *o) {
    if (o) o->destroy(o);
}
