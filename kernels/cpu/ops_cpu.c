// ops_cpu.c: the CPU backend of kernels/ops.h: OpenMP threads, SIMD matmul
// (matmul_cpu.c) and BLAS for batches. Memory is ordinary host memory.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/err.h"
#include "../../common/log.h"
#include "../ops.h"
#include "blas_cpu.h"
#include "grad_cpu.h"
#include "lora_cpu.h"
#include "matmul_cpu.h"
#include "threads_cpu.h"

typedef struct {
    int n_threads;
    threads_fit fit;
} cpu_ctx;

static void *cpu_alloc(ops *o, size_t n) {
    void *p = NULL;
    n = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) return NULL;
    memset(p, 0, n);
    return p;
}
static void cpu_free(ops *o, void *p) { free(p); }
static void cpu_copy(ops *o, void *dst, const void *src, size_t n) { memcpy(dst, src, n); }
static int cpu_weight_upload(ops *o, qweight *w) { return QL_OK; }
static void cpu_weight_release(ops *o, qweight *w) {}
static void cpu_sync(ops *o) {}
// Only the GEMV steps (decoding) follow the free cores: they give the same bits
// for any thread count; a larger step's OpenBLAS tiles do not, and training and
// prompts must not change with the machine's load.
static void cpu_step_begin(ops *o, int n_tokens) {
    cpu_ctx *c = o->ctx;
    if (n_tokens < MATMUL_GEMM_MIN_N) threads_fit_step(&c->fit);
    else omp_set_num_threads(c->n_threads);
}
static void cpu_destroy(ops *o) {
    free(o->ctx);
    free(o);
}

static void cpu_embed(ops *o, float *out, const qweight *t, const int *tokens, int N) {
    int64_t C = t->cols;
    for (int n = 0; n < N; n++) {
        float *dst = out + (size_t)n * C;
        int64_t off = (int64_t)tokens[n] * C;
        if (t->type == DT_F32) memcpy(dst, (const float *)t->data + off, sizeof(float) * (size_t)C);
        else if (t->type == DT_F16) for (int64_t c = 0; c < C; c++) dst[c] = f16_to_f32(((const uint16_t *)t->data)[off + c]);
        else if (t->type == DT_BF16) for (int64_t c = 0; c < C; c++) dst[c] = bf16_to_f32(((const uint16_t *)t->data)[off + c]);
        else nf4_dequantize(dst, &t->nf4, off, C);
    }
}

static void cpu_rmsnorm(ops *o, float *out, const float *x, const float *w, int N, int C, float eps) {
    #pragma omp parallel for if (N > 1)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *orow = out + (size_t)n * C;
        float ss = 0;
        for (int c = 0; c < C; c++) ss += xr[c] * xr[c];
        float r = 1.0f / sqrtf(ss / C + eps);
        for (int c = 0; c < C; c++) orow[c] = xr[c] * r * w[c];
    }
}

static void cpu_matmul(ops *o, float *out, const float *x, const qweight *w, int N) { matmul_cpu(out, x, w, N); }

static void cpu_rope(ops *o, float *x, const int *pos, int N, int H, int D, const float *inv_freq) {
    int half = D / 2;
    #pragma omp parallel for if (N > 1)
    for (int n = 0; n < N; n++) {
        float cs[512], sn[512];  // D <= 1024 (checked by the caller's config limits below)
        for (int i = 0; i < half; i++) {
            float a = (float)pos[n] * inv_freq[i];  // HF computes the angle in fp32
            cs[i] = cosf(a), sn[i] = sinf(a);
        }
        for (int h = 0; h < H; h++) {
            float *v = x + ((size_t)n * H + h) * D;
            for (int i = 0; i < half; i++) {
                float x0 = v[i], x1 = v[i + half];
                v[i] = x0 * cs[i] - x1 * sn[i];
                v[i + half] = x1 * cs[i] + x0 * sn[i];
            }
        }
    }
}

static void cpu_attention(ops *o, float *out, const float *q, const float *k, const float *v, int N, int T0, int H,
                          int Hkv, int D) {
    int group = H / Hkv, T = T0 + N;
    float scale = 1.0f / sqrtf((float)D);
    #pragma omp parallel
    {
        float *sc = malloc(sizeof(float) * (size_t)T);
        QL_ASSERT(sc);
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int n = 0; n < N; n++)
            for (int h = 0; h < H; h++) {
                const float *qv = q + ((size_t)n * H + h) * D;
                int kh = h / group, last = T0 + n;
                float mx = -INFINITY;
                for (int t = 0; t <= last; t++) {
                    const float *kv = k + ((size_t)t * Hkv + kh) * D;
                    sc[t] = vec_dot(qv, kv, D) * scale;
                    if (sc[t] > mx) mx = sc[t];
                }
                float sum = 0;
                for (int t = 0; t <= last; t++) sum += (sc[t] = expf(sc[t] - mx));
                float inv = 1.0f / sum;
                float *ov = out + ((size_t)n * H + h) * D;
                memset(ov, 0, sizeof(float) * (size_t)D);
                for (int t = 0; t <= last; t++) {
                    const float *vv = v + ((size_t)t * Hkv + kh) * D;
                    vec_axpy(ov, sc[t] * inv, vv, D);
                }
            }
        free(sc);
    }
}

static void cpu_swiglu(ops *o, float *out, const float *gate, const float *up, int n) {
    #pragma omp parallel for if (n > 65536)
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static void cpu_add(ops *o, float *y, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += x[i];
}

static void cpu_dropout(ops *o, float *out, const float *x, int64_t n, float p, uint64_t key) {
    float s = 1.0f / (1.0f - p);
    #pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) out[i] = dropout_keep(key, i, p) ? x[i] * s : 0.0f;
}

static void cpu_zero(ops *o, void *p, size_t bytes) { memset(p, 0, bytes); }

// Double partial sums over fixed chunks, added in chunk order: the same result
// for any thread count.
#define SUMSQ_CHUNK 65536
static double cpu_sumsq(ops *o, const float *x, int64_t n) {
    int64_t nc = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    if (nc <= 1) {
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
        return s;
    }
    double *part = malloc(sizeof(double) * (size_t)nc);
    QL_ASSERT(part);
    #pragma omp parallel for
    for (int64_t c = 0; c < nc; c++) {
        int64_t e = (c + 1) * SUMSQ_CHUNK < n ? (c + 1) * SUMSQ_CHUNK : n;
        double s = 0;
        for (int64_t i = c * SUMSQ_CHUNK; i < e; i++) s += (double)x[i] * x[i];
        part[c] = s;
    }
    double s = 0;
    for (int64_t c = 0; c < nc; c++) s += part[c];
    free(part);
    return s;
}

static void cpu_adamw(ops *o, float *p, const float *g, float *m, float *v, int64_t n, const adamw_args *a) {
    adamw_scalars s = adamw_scalars_of(a);
    #pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) adamw_elem(&p[i], &m[i], &v[i], g[i], &s);
}

ops *ops_cpu_new(int n_threads) {
    ops *o = calloc(1, sizeof *o);
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!o || !c) {
        free(o), free(c);
        ql_err(QL_ENOMEM, "ops_cpu_new: out of memory");
        return NULL;
    }
    if (n_threads > 0) omp_set_num_threads(n_threads);
    // One thread pool: OpenMP. OpenBLAS runs single-threaded inside our parallel regions;
    // its own threads competing with OpenMP's spinning workers cost up to 30% on 2 cores
    // (training step at the TinyLlama shape: 21.4 -> 29.6 trained tok/s).
    openblas_set_num_threads(1);
    blas_check();
    c->n_threads = omp_get_max_threads();
    threads_fit_init(&c->fit, c->n_threads);
    log_debug("cpu backend: %d threads, SIMD %s, sgemm by %s, NF4 decoding %s", c->n_threads, matmul_cpu_simd(),
              blas_describe(), matmul_cpu_int8() ? "int8 (QLORA_MATMUL=int8)" : "exact fp32");
    *o = (ops){
        .name = "cpu", .ctx = c, .alloc = cpu_alloc, .free = cpu_free, .to_device = cpu_copy, .to_host = cpu_copy, .copy = cpu_copy,
        .weight_upload = cpu_weight_upload, .weight_release = cpu_weight_release, .sync = cpu_sync, .step_begin = cpu_step_begin,
        .destroy = cpu_destroy, .embed = cpu_embed, .rmsnorm = cpu_rmsnorm, .matmul = cpu_matmul, .rope = cpu_rope,
        .attention = cpu_attention, .swiglu = cpu_swiglu, .add = cpu_add,
        .rmsnorm_backward = cpu_rmsnorm_backward, .rope_backward = cpu_rope_backward,
        .attention_train = cpu_attention_train, .attention_backward = cpu_attention_backward,
        .swiglu_backward = cpu_swiglu_backward, .dropout = cpu_dropout, .matmul_backward_input = cpu_matmul_backward_input,
        .cross_entropy = cpu_cross_entropy, .lora_forward = cpu_lora_forward, .lora_backward = cpu_lora_backward,
        .lora_shrink = cpu_lora_shrink, .lora_expand = cpu_lora_expand,
        .zero = cpu_zero, .sumsq = cpu_sumsq, .adamw = cpu_adamw, .host_memory = 1, .lora_half = 1,
    };
    return o;
}
