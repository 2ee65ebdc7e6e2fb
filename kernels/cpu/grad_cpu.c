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

// ---- causal attention for training, in blocks of queries or keys ----
// Each task multiplies a block of rows by all the keys it can see with OpenBLAS
// (single-threaded inside our OpenMP regions), so every head width runs at GEMM
// speed instead of one short dot product per (query, key) pair: at stories260K's
// head width 8 the per-pair loops were 75% of a training step.

#define ATT_BLOCK 64  // queries (forward, dq) or keys (dk, dv) per task

// P (nq,L) = exp(S - lse) where visible (query n0+i sees keys [seg[n0+i], n0+i];
// column j is key t0+j), else 0.
static void att_probs(float *S, int nq, int L, int n0, int t0, int h, int H, const float *lse, const int *seg) {
    for (int i = 0; i < nq; i++) {
        const int n = n0 + i;
        float *row = S + (size_t)i * L, l = lse[(size_t)n * H + h];
        int j0 = seg[n] - t0, j1 = n - t0;  // visible columns, clipped to [0, L)
        j0 = j0 < 0 ? 0 : j0 > L ? L : j0;
        j1 = j1 >= L ? L - 1 : j1;
        if (j1 < j0) {
            memset(row, 0, sizeof(float) * (size_t)L);
            continue;
        }
        memset(row, 0, sizeof(float) * (size_t)j0);
        for (int j = j0; j <= j1; j++) row[j] = expf(row[j] - l);
        memset(row + j1 + 1, 0, sizeof(float) * (size_t)(L - 1 - j1));
    }
}

// dS = P * (dP - delta[n]) * scale, in place of dP.
static void att_dscores(float *dP, const float *P, int nq, int L, int n0, int h, int H, const float *delta,
                        float scale) {
    for (int i = 0; i < nq; i++) {
        float dl = delta[(size_t)(n0 + i) * H + h];
        float *d = dP + (size_t)i * L;
        const float *p = P + (size_t)i * L;
        for (int j = 0; j < L; j++) d[j] = p[j] * (d[j] - dl) * scale;
    }
}

// First key any query in [n0, n1) sees.
static int att_first_key(const int *seg_start, int n0, int n1) {
    int t0 = n1 - 1;
    for (int n = n0; n < n1; n++) t0 = seg_start[n] < t0 ? seg_start[n] : t0;
    return t0;
}

// The backward's temporaries: delta (N,H), then P and dP (ATT_BLOCK,N) per thread of
// the team; more than the forward's S (ATT_BLOCK,N) per thread.
size_t cpu_attention_scratch_bytes(int N, int H, int nth) {
    const size_t team = N > 1 ? (size_t)nth : 1, rows = (size_t)(N > 0 ? N : 1);
    return sizeof(float) * ((size_t)N * H + 1) + team * 2 * sizeof(float) * ATT_BLOCK * rows;
}

void cpu_attention_train(ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                         const int *seg_start, int N, int H, int Hkv, int D) {
    const int group = H / Hkv, nb = (N + ATT_BLOCK - 1) / ATT_BLOCK, ldq = H * D, ldk = Hkv * D;
    const float scale = 1.0f / sqrtf((float)D);
    for (int n = 0; n < N; n++) QL_ASSERT(seg_start[n] >= 0 && seg_start[n] <= n);
#pragma omp parallel if (N > 1)
    {
        float *S = mallocCheck(sizeof(float) * ATT_BLOCK * (size_t)(N > 0 ? N : 1));
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int h = 0; h < H; h++)
            for (int b = 0; b < nb; b++) {
                const int n0 = b * ATT_BLOCK, n1 = N - n0 < ATT_BLOCK ? N : n0 + ATT_BLOCK, nq = n1 - n0;
                const int t0 = att_first_key(seg_start, n0, n1), L = n1 - t0, kh = h / group;
                const float *kb = k + ((size_t)t0 * Hkv + kh) * D, *vb = v + ((size_t)t0 * Hkv + kh) * D;
                // S (nq,L) = scale * Q_block K^T
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, L, D, scale, q + ((size_t)n0 * H + h) * D,
                            ldq, kb, ldk, 0.0f, S, L);
                for (int i = 0; i < nq; i++) {  // softmax over the visible keys; the sum in double
                    const int n = n0 + i, j0 = seg_start[n] - t0, j1 = n - t0;
                    float *row = S + (size_t)i * L, mx = -INFINITY;
                    for (int j = j0; j <= j1; j++) mx = row[j] > mx ? row[j] : mx;
                    double sum = 0;
                    for (int j = j0; j <= j1; j++) sum += (row[j] = expf(row[j] - mx));
                    const float inv = (float)(1.0 / sum);
                    memset(row, 0, sizeof(float) * (size_t)j0);
                    for (int j = j0; j <= j1; j++) row[j] *= inv;
                    memset(row + j1 + 1, 0, sizeof(float) * (size_t)(L - 1 - j1));
                    lse[(size_t)n * H + h] = mx + (float)log(sum);
                }
                // out_block (nq,D) = P V
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, D, L, 1.0f, S, L, vb, ldk, 0.0f,
                            out + ((size_t)n0 * H + h) * D, ldq);
            }
        free(S);
    }
}

// Two passes, no atomics: dq by blocks of queries (h, block), then dk/dv by blocks
// of keys (kv head, block), each recomputing P = exp(scale q.k - lse) and
// dP = dout.v with GEMMs (twice the score work of the forward; no (N,N) buffer).
void cpu_attention_backward(ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *out, const float *lse, const int *seg_start, int N, int H,
                            int Hkv, int D) {
    const int group = H / Hkv, nb = (N + ATT_BLOCK - 1) / ATT_BLOCK, ldq = H * D, ldk = Hkv * D;
    const float scale = 1.0f / sqrtf((float)D);
    float *delta = mallocCheck(sizeof(float) * ((size_t)N * H + 1));  // dout . out per (n,h)
    for (int n = 0; n < N; n++) QL_ASSERT(seg_start[n] >= 0 && seg_start[n] <= n);
#pragma omp parallel for if (N > 1)
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            size_t qo = ((size_t)n * H + h) * D;
            delta[(size_t)n * H + h] = vec_dot(dout + qo, out + qo, D);
        }
#pragma omp parallel if (N > 1)
    {
        float *P = mallocCheck(sizeof(float) * ATT_BLOCK * (size_t)(N > 0 ? N : 1));
        float *dP = mallocCheck(sizeof(float) * ATT_BLOCK * (size_t)(N > 0 ? N : 1));
        // dq: a block of queries against every key they see.
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int h = 0; h < H; h++)
            for (int b = 0; b < nb; b++) {
                const int n0 = b * ATT_BLOCK, n1 = N - n0 < ATT_BLOCK ? N : n0 + ATT_BLOCK, nq = n1 - n0;
                const int t0 = att_first_key(seg_start, n0, n1), L = n1 - t0, kh = h / group;
                const size_t qo = ((size_t)n0 * H + h) * D;
                const float *kb = k + ((size_t)t0 * Hkv + kh) * D, *vb = v + ((size_t)t0 * Hkv + kh) * D;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, L, D, scale, q + qo, ldq, kb, ldk, 0.0f, P,
                            L);
                att_probs(P, nq, L, n0, t0, h, H, lse, seg_start);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, L, D, 1.0f, dout + qo, ldq, vb, ldk, 0.0f,
                            dP, L);
                att_dscores(dP, P, nq, L, n0, h, H, delta, scale);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, D, L, 1.0f, dP, L, kb, ldk, 0.0f,
                            dq + qo, ldq);
            }
        // dk, dv: a block of keys against every query that sees one of them, summed
        // over the query heads that share the kv head.
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int kh = 0; kh < Hkv; kh++)
            for (int b = 0; b < nb; b++) {
                const int t0 = b * ATT_BLOCK, t1 = N - t0 < ATT_BLOCK ? N : t0 + ATT_BLOCK, nk = t1 - t0;
                int n1 = t0;  // queries [t0, n1) are the only ones that may see keys [t0, t1)
                for (int n = t0; n < N; n++)
                    if (seg_start[n] < t1) n1 = n + 1;
                const int L = n1 - t0;
                const size_t ko = ((size_t)t0 * Hkv + kh) * D;
                for (int h = kh * group; h < (kh + 1) * group; h++) {
                    const size_t qo = ((size_t)t0 * H + h) * D;
                    const float beta = h == kh * group ? 0.0f : 1.0f;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, nk, D, scale, q + qo, ldq, k + ko, ldk,
                                0.0f, P, nk);
                    att_probs(P, L, nk, t0, t0, h, H, lse, seg_start);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, nk, D, 1.0f, dout + qo, ldq, v + ko, ldk,
                                0.0f, dP, nk);
                    att_dscores(dP, P, L, nk, t0, h, H, delta, scale);
                    // dk_block (nk,D) += dS^T Q;  dv_block (nk,D) += P^T dout
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, D, L, 1.0f, dP, nk, q + qo, ldq, beta,
                                dk + ko, ldk);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, D, L, 1.0f, P, nk, dout + qo, ldq, beta,
                                dv + ko, ldk);
                }
            }
        free(P);
        free(dP);
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

// Rows of W (rows, cols) per dequantized chunk of matmul_backward_input.
static int64_t bwd_tile_rows(int64_t rows, int64_t cols) {
    int64_t tr = BWD_TILE_FLOATS / cols;
    if (tr < 16) tr = 16;
    return tr > rows ? rows : tr;
}

size_t cpu_matmul_backward_scratch_bytes(dtype type, int64_t rows, int64_t cols) {
    if (type == DT_F32 || rows <= 0 || cols <= 0) return 0;  // F32 goes to sgemm as stored
    return sizeof(float) * (size_t)(bwd_tile_rows(rows, cols) * cols);
}

void cpu_matmul_backward_input(ops *o, float *dx, const float *dy, const qweight *w, int N, int accumulate) {
    const int64_t rows = w->rows, cols = w->cols;
    QL_ASSERT(N >= 0 && rows >= 0 && cols >= 0);
    if (N == 0 || cols == 0) return;
    if (rows == 0) {
        if (!accumulate) memset(dx, 0, sizeof(float) * (size_t)N * cols);
        return;
    }
    // One thread pool at a time: OpenBLAS runs single-threaded inside OpenMP regions
    // that split dx by columns (each thread: all of dy times its columns of the chunk
    // of W). Letting OpenBLAS thread the sgemm while OpenMP's workers spin-wait costs
    // ~20% on 2 cores; splitting by rows of dy instead made every thread pack the
    // whole chunk of W (12% of a TinyLlama training step).
    const int blas_threads = openblas_get_num_threads();
    if (blas_threads != 1) openblas_set_num_threads(1);
    const int nth = omp_get_max_threads();
    const int64_t nsplit = cols >= 64 * nth ? nth : 1, per_c = (cols / nsplit + 15) / 16 * 16;
    if (w->type == DT_F32) {  // dx (N,cols) = dy (N,rows) @ W (rows,cols)
#pragma omp parallel for num_threads(nsplit) if (nsplit > 1)
        for (int64_t s = 0; s < nsplit; s++) {
            int64_t c0 = s * per_c, nc = cols - c0 < per_c ? cols - c0 : per_c;
            if (nc > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, (int)nc, (int)rows, 1.0f, dy, (int)rows,
                            (const float *)w->data + c0, (int)cols, accumulate ? 1.0f : 0.0f, dx + c0, (int)cols);
        }
        if (blas_threads != 1) openblas_set_num_threads(blas_threads);
        return;
    }
    // Chunks of rows of W (the reduction dimension), dequantized by all threads into
    // one buffer, then dx[:, column slice] += dy[:, r0:r0+nr] @ chunk[:, slice] per thread.
    const int64_t tr = bwd_tile_rows(rows, cols);
    float *buf = mallocCheck(sizeof(float) * (size_t)(tr * cols));
    for (int64_t r0 = 0; r0 < rows; r0 += tr) {
        int64_t nr = rows - r0 < tr ? rows - r0 : tr;
        int64_t per = 4;  // rows per dequantization task
#pragma omp parallel for schedule(dynamic, 1) if (nr * cols > 65536)
        for (int64_t i = 0; i < nr; i += per)
            nf4_dequantize_rows(buf + i * cols, w, r0 + i, nr - i < per ? nr - i : per);
#pragma omp parallel for num_threads(nsplit) if (nsplit > 1)
        for (int64_t s = 0; s < nsplit; s++) {
            int64_t c0 = s * per_c, nc = cols - c0 < per_c ? cols - c0 : per_c;
            if (nc > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, (int)nc, (int)nr, 1.0f, dy + r0, (int)rows,
                            buf + c0, (int)cols, (r0 == 0 && !accumulate) ? 0.0f : 1.0f, dx + c0, (int)cols);
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
