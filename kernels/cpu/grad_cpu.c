// grad_cpu.c: the CPU backend's training ops (see grad_cpu.h and the contracts
// in kernels/ops.h). fp32 arithmetic, as the forward ops in ops_cpu.c; sums of
// many exponentials are kept in double.
#include "grad_cpu.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/err.h"
#include "matmul_cpu.h"

void cpu_rmsnorm_backward(ops *o, float *dx, float *dw, const float *dy, const float *x, const float *w, int N, int C,
                          float eps) {
    float *rs = mallocCheck(sizeof(float) * (size_t)(N > 0 ? N : 1));  // r per row, for dw
#pragma omp parallel for if (N > 1)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C, *g = dy + (size_t)n * C;
        float *d = dx + (size_t)n * C;
        float ss = 0;
        for (int c = 0; c < C; c++) ss += xr[c] * xr[c];
        float r = 1.0f / sqrtf(ss / C + eps), dot = 0;
        for (int c = 0; c < C; c++) dot += g[c] * w[c] * xr[c];
        dot *= r / C;  // mean(dy*w*xn)
        for (int c = 0; c < C; c++) d[c] += r * (g[c] * w[c] - xr[c] * r * dot);
        rs[n] = r;
    }
    if (dw) {
#pragma omp parallel for if (C > 256)
        for (int c = 0; c < C; c++) {
            float acc = 0;
            for (int n = 0; n < N; n++) acc += dy[(size_t)n * C + c] * x[(size_t)n * C + c] * rs[n];
            dw[c] += acc;
        }
    }
    free(rs);
}

void cpu_rope_backward(ops *o, float *dx, const int *pos, int N, int H, int D, const float *inv_freq) {
    int half = D / 2;
    QL_ASSERT(half <= 512);
#pragma omp parallel for if (N > 1)
    for (int n = 0; n < N; n++) {
        float cs[512], sn[512];
        for (int i = 0; i < half; i++) {
            float a = (float)pos[n] * inv_freq[i];  // the same fp32 angle as cpu_rope
            cs[i] = cosf(a), sn[i] = sinf(a);
        }
        for (int h = 0; h < H; h++) {
            float *v = dx + ((size_t)n * H + h) * D;
            for (int i = 0; i < half; i++) {  // rotation by -angle: the transpose of rope's
                float x0 = v[i], x1 = v[i + half];
                v[i] = x0 * cs[i] + x1 * sn[i];
                v[i + half] = x1 * cs[i] - x0 * sn[i];
            }
        }
    }
}

// Dot product, vectorized: `omp simd reduction` lets the compiler reassociate the sum
// (ISO C alone forbids it), and target_clones picks AVX-512/AVX2 at run time.
__attribute__((target_clones("avx512f", "avx2", "default"))) float vec_dot_simd(const float *a, const float *b, int D) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < D; i++) s += a[i] * b[i];
    return s;
}

// y (D) += a * x (D)
__attribute__((target_clones("avx512f", "avx2", "default"))) void vec_axpy_simd(float *y, float a, const float *x, int D) {
#pragma omp simd
    for (int i = 0; i < D; i++) y[i] += a * x[i];
}

#define dotf vec_dot

void cpu_attention_train(ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                         const int *seg_start, int N, int H, int Hkv, int D) {
    int group = H / Hkv;
    float scale = 1.0f / sqrtf((float)D);
#pragma omp parallel
    {
        float *sc = mallocCheck(sizeof(float) * (size_t)(N > 0 ? N : 1));
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int n = 0; n < N; n++)
            for (int h = 0; h < H; h++) {
                const float *qv = q + ((size_t)n * H + h) * D;
                int kh = h / group, s0 = seg_start[n];
                QL_ASSERT(s0 >= 0 && s0 <= n);
                float mx = -INFINITY;
                for (int t = s0; t <= n; t++) {
                    sc[t] = dotf(qv, k + ((size_t)t * Hkv + kh) * D, D) * scale;
                    if (sc[t] > mx) mx = sc[t];
                }
                double sum = 0;
                for (int t = s0; t <= n; t++) sum += (sc[t] = expf(sc[t] - mx));
                float inv = (float)(1.0 / sum);
                float *ov = out + ((size_t)n * H + h) * D;
                memset(ov, 0, sizeof(float) * (size_t)D);
                for (int t = s0; t <= n; t++) {
                    const float *vv = v + ((size_t)t * Hkv + kh) * D;
                    float p = sc[t] * inv;
                    vec_axpy(ov, p, vv, D);
                }
                lse[(size_t)n * H + h] = mx + (float)log(sum);
            }
        free(sc);
    }
}

// Two passes, no atomics: dq by query (n,h), then dk/dv by key (t,kv head), each
// recomputing P = exp(scale q.k - lse) and dP = dout.v (twice the score work of
// the forward, and no (N,N) buffer).
void cpu_attention_backward(ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *out, const float *lse, const int *seg_start, int N, int H,
                            int Hkv, int D) {
    int group = H / Hkv;
    float scale = 1.0f / sqrtf((float)D);
    float *delta = mallocCheck(sizeof(float) * ((size_t)N * H + 1));  // dout . out per (n,h)
#pragma omp parallel for if (N > 1)
    for (int n = 0; n < N; n++) {
        QL_ASSERT(seg_start[n] >= 0 && seg_start[n] <= n);
        for (int h = 0; h < H; h++) {
            size_t qo = ((size_t)n * H + h) * D;
            delta[(size_t)n * H + h] = dotf(dout + qo, out + qo, D);
        }
    }
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            size_t qo = ((size_t)n * H + h) * D;
            int kh = h / group;
            float l = lse[(size_t)n * H + h], dl = delta[(size_t)n * H + h];
            float *d = dq + qo;
            memset(d, 0, sizeof(float) * (size_t)D);
            for (int t = seg_start[n]; t <= n; t++) {
                const float *kv = k + ((size_t)t * Hkv + kh) * D;
                float p = expf(dotf(q + qo, kv, D) * scale - l);
                float ds = p * (dotf(dout + qo, v + ((size_t)t * Hkv + kh) * D, D) - dl) * scale;
                vec_axpy(d, ds, kv, D);
            }
        }
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int t = 0; t < N; t++)
        for (int kh = 0; kh < Hkv; kh++) {
            size_t ko = ((size_t)t * Hkv + kh) * D;
            float *dkk = dk + ko, *dvv = dv + ko;
            memset(dkk, 0, sizeof(float) * (size_t)D);
            memset(dvv, 0, sizeof(float) * (size_t)D);
            for (int n = t; n < N; n++) {
                if (seg_start[n] > t) continue;  // t is outside n's sample
                for (int h = kh * group; h < (kh + 1) * group; h++) {
                    size_t qo = ((size_t)n * H + h) * D;
                    float p = expf(dotf(q + qo, k + ko, D) * scale - lse[(size_t)n * H + h]);
                    float ds = p * (dotf(dout + qo, v + ko, D) - delta[(size_t)n * H + h]) * scale;
                    vec_axpy(dvv, p, dout + qo, D);
                    vec_axpy(dkk, ds, q + qo, D);
                }
            }
        }
    free(delta);
}

void cpu_swiglu_backward(ops *o, float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                         int n) {
#pragma omp parallel for if (n > 65536)
    for (int i = 0; i < n; i++) {
        float g = gate[i], u = up[i], s = 1.0f / (1.0f + expf(-g));
        dgate[i] = dout[i] * u * s * (1.0f + g * (1.0f - s));
        dup[i] = dout[i] * g * s;
    }
}

#define BWD_TILE_FLOATS (1 << 22)  // 16 MiB of dequantized W per sgemm

void cpu_matmul_backward_input(ops *o, float *dx, const float *dy, const qweight *w, int N, int accumulate) {
    const int64_t rows = w->rows, cols = w->cols;
    QL_ASSERT(N >= 0 && rows >= 0 && cols >= 0);
    if (N == 0 || cols == 0) return;
    if (rows == 0) {
        if (!accumulate) memset(dx, 0, sizeof(float) * (size_t)N * cols);
        return;
    }
    // One thread pool at a time: OpenBLAS runs single-threaded inside OpenMP regions
    // that split dx by rows (each thread: its rows of dy times all of the chunk of W).
    // Letting OpenBLAS thread the sgemm while OpenMP's workers spin-wait costs ~20%
    // on 2 cores (TinyLlama training step, docs/benchmarks.md).
    const int blas_threads = openblas_get_num_threads();
    if (blas_threads != 1) openblas_set_num_threads(1);
    const int nth = omp_get_max_threads();
    const int nsplit = N >= 2 * nth ? nth : 1, per_n = (N + nsplit - 1) / nsplit;
    if (w->type == DT_F32) {  // dx (N,cols) = dy (N,rows) @ W (rows,cols)
#pragma omp parallel for num_threads(nsplit) if (nsplit > 1)
        for (int s = 0; s < nsplit; s++) {
            int n0 = s * per_n, nn = N - n0 < per_n ? N - n0 : per_n;
            if (nn > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nn, (int)cols, (int)rows, 1.0f,
                            dy + (size_t)n0 * rows, (int)rows, (const float *)w->data, (int)cols,
                            accumulate ? 1.0f : 0.0f, dx + (size_t)n0 * cols, (int)cols);
        }
        if (blas_threads != 1) openblas_set_num_threads(blas_threads);
        return;
    }
    // Chunks of rows of W (the reduction dimension), dequantized by all threads into
    // one buffer, then dx[n-slice] += dy[n-slice, r0:r0+nr] @ chunk per thread.
    int64_t tr = BWD_TILE_FLOATS / cols;
    if (tr < 16) tr = 16;
    if (tr > rows) tr = rows;
    float *buf = mallocCheck(sizeof(float) * (size_t)(tr * cols));
    for (int64_t r0 = 0; r0 < rows; r0 += tr) {
        int64_t nr = rows - r0 < tr ? rows - r0 : tr;
        int64_t per = 4;  // rows per dequantization task
#pragma omp parallel for schedule(dynamic, 1) if (nr * cols > 65536)
        for (int64_t i = 0; i < nr; i += per)
            nf4_dequantize_rows(buf + i * cols, w, r0 + i, nr - i < per ? nr - i : per);
#pragma omp parallel for num_threads(nsplit) if (nsplit > 1)
        for (int s = 0; s < nsplit; s++) {
            int n0 = s * per_n, nn = N - n0 < per_n ? N - n0 : per_n;
            if (nn > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nn, (int)cols, (int)nr, 1.0f,
                            dy + (size_t)n0 * rows + r0, (int)rows, buf, (int)cols,
                            (r0 == 0 && !accumulate) ? 0.0f : 1.0f, dx + (size_t)n0 * cols, (int)cols);
        }
    }
    free(buf);
    if (blas_threads != 1) openblas_set_num_threads(blas_threads);
}

void cpu_cross_entropy(ops *o, float *loss, float *dlogits, const float *logits, const int *targets, int N, int V,
                       float scale) {
#pragma omp parallel for schedule(dynamic, 1) if (N > 1)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float *d = dlogits ? dlogits + (size_t)n * V : NULL;
        int t = targets[n];
        QL_ASSERT(t < V);
        if (t < 0) {
            loss[n] = 0;
            if (d) memset(d, 0, sizeof(float) * (size_t)V);
            continue;
        }
        float mx = -INFINITY;
        for (int i = 0; i < V; i++) mx = l[i] > mx ? l[i] : mx;
        double sum = 0;
        for (int i = 0; i < V; i++) sum += expf(l[i] - mx);
        float lse = mx + (float)log(sum), lt = l[t];  // lt read before d (may alias l) is written
        loss[n] = lse - lt;
        if (d) {
            for (int i = 0; i < V; i++) d[i] = scale * expf(l[i] - lse);
            d[t] -= scale;
        }
    }
}

void cpu_lora_forward(ops *o, float *y, float *xa, const float *x, const float *A, const float *B, int N, int in,
                      int out, int R, float scaling) {
    if (N == 0) return;
    // xa (N,R) = x (N,in) @ A^T;  y (N,out) += scaling * xa @ B^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, R, in, 1.0f, x, in, A, in, 0.0f, xa, R);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, R, scaling, xa, R, B, R, 1.0f, y, out);
}

void cpu_lora_backward(ops *o, float *dA, float *dB, float *dx, float *dxa, const float *dy, const float *x,
                       const float *xa, const float *A, const float *B, int N, int in, int out, int R, float scaling) {
    if (N == 0) return;
    // dxa (N,R) = scaling * dy (N,out) @ B (out,R)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, R, out, scaling, dy, out, B, R, 0.0f, dxa, R);
    // dB (out,R) += scaling * dy^T @ xa
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, R, N, scaling, dy, out, xa, R, 1.0f, dB, R);
    // dA (R,in) += dxa^T @ x
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, in, N, 1.0f, dxa, R, x, in, 1.0f, dA, in);
    // dx (N,in) += dxa @ A (R,in)
    if (dx) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, R, 1.0f, dxa, R, A, in, 1.0f, dx, in);
}
