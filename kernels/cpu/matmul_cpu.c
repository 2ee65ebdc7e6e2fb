// matmul_cpu.c: matmul_cpu and nf4_dequantize_rows (see matmul_cpu.h): the
// run-time choice of SIMD kernels, the generic C kernels, OpenMP threading and
// the dequantize-tile + OpenBLAS sgemm path.
#include "matmul_cpu.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/err.h"
#include "../../common/log.h"
#include "matmul_kernels.h"

// ---- generic C kernels (any x86-64 or other CPU) ----

#define DEFINE_GEMV_GENERIC(NAME, T, CVT)                                                    \
    static void NAME(float *out, int64_t ostride, const T *w, int64_t nrows, int64_t cols,   \
                     const float *x, int N) {                                                \
        for (int64_t i = 0; i < nrows; i++) {                                                \
            const T *wr = w + i * cols;                                                      \
            for (int n = 0; n < N; n++) {                                                    \
                const float *xn = x + n * cols;                                              \
                float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;                            \
                int64_t k = 0;                                                               \
                for (; k + 4 <= cols; k += 4) {                                              \
                    s0 += CVT(wr[k]) * xn[k];                                                \
                    s1 += CVT(wr[k + 1]) * xn[k + 1];                                        \
                    s2 += CVT(wr[k + 2]) * xn[k + 2];                                        \
                    s3 += CVT(wr[k + 3]) * xn[k + 3];                                        \
                }                                                                            \
                for (; k < cols; k++) s0 += CVT(wr[k]) * xn[k];                              \
                out[n * ostride + i] = (s0 + s1) + (s2 + s3);                                \
            }                                                                                \
        }                                                                                    \
    }

static inline float cvt_id(float v) { return v; }
DEFINE_GEMV_GENERIC(gemv_f32_generic, float, cvt_id)
DEFINE_GEMV_GENERIC(gemv_f16_generic, uint16_t, f16_to_f32)
DEFINE_GEMV_GENERIC(gemv_bf16_generic, uint16_t, bf16_to_f32)

// NF4, cols % 64 == 0, x as is: per block, sum of table values times x, then
// one multiply by the block's absmax.
static void gemv_nf4_generic(float *out, int64_t ostride, const nf4_data *w, int64_t r0, int64_t nrows,
                             int64_t cols, const float *x, int N) {
    const int64_t nbr = cols / NF4_BLOCK;
    for (int64_t i = 0; i < nrows; i++) {
        const int64_t bfirst = (r0 + i) * nbr;
        for (int n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int64_t kb = 0; kb < nbr; kb++) {
                const int64_t b = bfirst + kb;
                const uint8_t *cp = w->codes + b * (NF4_BLOCK / 2);
                const float *xb = x + n * cols + kb * NF4_BLOCK;
                float s0 = 0.0f, s1 = 0.0f;
                for (int j = 0; j < NF4_BLOCK / 2; j++) {
                    s0 += NF4_TABLE[cp[j] >> 4] * xb[2 * j];
                    s1 += NF4_TABLE[cp[j] & 15] * xb[2 * j + 1];
                }
                const float t = NF4_CODE8[w->absmax_q[b]] * w->absmax_scale[b / NF4_BLOCK2];
                acc += (s0 + s1) * (t + w->absmax_offset);
            }
            out[n * ostride + i] = acc;
        }
    }
}

const int8_t NF4_Q8[16] = {-127, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127};

void nf4_quantize_x8(int8_t *xq, float *xd, const float *x, int N, int64_t cols) {
    const int64_t nb = cols / NF4_BLOCK;
    for (int64_t b = 0; b < (int64_t)N * nb; b++) {
        const float *xb = x + b * NF4_BLOCK;
        int8_t *q = xq + b * NF4_BLOCK;
        float m = 0.0f;
        for (int j = 0; j < NF4_BLOCK; j++) m = fmaxf(m, fabsf(xb[j]));
        const float d = m / 127.0f, inv = m > 0.0f ? 127.0f / m : 0.0f;
        xd[b] = d;
        for (int j = 0; j < NF4_BLOCK / 2; j++) {
            q[j] = (int8_t)lrintf(xb[2 * j] * inv);
            q[NF4_BLOCK / 2 + j] = (int8_t)lrintf(xb[2 * j + 1] * inv);
        }
    }
}

static void gemv_nf4_q8_generic(float *out, int64_t ostride, const nf4_data *w, int64_t r0, int64_t nrows,
                                int64_t cols, const int8_t *xq, const float *xd, int N) {
    const int64_t nbr = cols / NF4_BLOCK;
    for (int64_t i = 0; i < nrows; i++) {
        const int64_t bfirst = (r0 + i) * nbr;
        for (int n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int64_t kb = 0; kb < nbr; kb++) {
                const int64_t b = bfirst + kb;
                const uint8_t *cp = w->codes + b * (NF4_BLOCK / 2);
                const int8_t *q = xq + n * cols + kb * NF4_BLOCK;
                int32_t s = 0;
                for (int j = 0; j < NF4_BLOCK / 2; j++)
                    s += NF4_Q8[cp[j] >> 4] * q[j] + NF4_Q8[cp[j] & 15] * q[NF4_BLOCK / 2 + j];
                const float a = NF4_CODE8[w->absmax_q[b]] * w->absmax_scale[b / NF4_BLOCK2] + w->absmax_offset;
                acc += (float)s * (a * (1.0f / 127.0f) * xd[n * nbr + kb]);
            }
            out[n * ostride + i] = acc;
        }
    }
}

static void nf4_blocks_generic(float *out, const nf4_data *w, int64_t b0, int64_t nblocks) {
    nf4_dequantize(out, w, b0 * NF4_BLOCK, nblocks * NF4_BLOCK);
}

static void cvt_f16_generic(float *out, const uint16_t *in, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = f16_to_f32(in[i]);
}

static void cvt_bf16_generic(float *out, const uint16_t *in, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = bf16_to_f32(in[i]);
}

static const matmul_kernels KERNELS_GENERIC = {
    .name = "generic",
    .gemv_f32 = gemv_f32_generic,
    .gemv_f16 = gemv_f16_generic,
    .gemv_bf16 = gemv_bf16_generic,
    .gemv_nf4 = gemv_nf4_generic,
    .xgroup = 0,
    .gemv_nf4_q8 = gemv_nf4_q8_generic,
    .nf4_blocks = nf4_blocks_generic,
    .cvt_f16 = cvt_f16_generic,
    .cvt_bf16 = cvt_bf16_generic,
};

void nf4_permute_x(float *xp, const float *x, int N, int64_t cols, int g) {
    for (int64_t base = 0; base < (int64_t)N * cols; base += 2 * g)
        for (int j = 0; j < g; j++) {
            xp[base + j] = x[base + 2 * j];
            xp[base + g + j] = x[base + 2 * j + 1];
        }
}

// ---- choosing the kernels ----

static const matmul_kernels *g_kernels;  // read and written with __atomic builtins

static const matmul_kernels *kernels_by_name(const char *name, int *known) {
    *known = 1;
    if (strcmp(name, "generic") == 0) return &KERNELS_GENERIC;
    if (strcmp(name, "avx2") == 0) return matmul_kernels_avx2();
    if (strcmp(name, "avx512") == 0) return matmul_kernels_avx512();
    *known = 0;
    return NULL;
}

static const matmul_kernels *kernels_auto(void) {
    const char *env = getenv("QLORA_SIMD");
    if (env && *env && strcmp(env, "auto") != 0) {
        int known;
        const matmul_kernels *k = kernels_by_name(env, &known);
        if (k) return k;
        log_warn("QLORA_SIMD=%s: %s; using the best level this CPU has", env,
                 known ? "not supported by this CPU" : "unknown (expected generic, avx2, avx512 or auto)");
    }
    const matmul_kernels *k = matmul_kernels_avx512();
    if (!k) k = matmul_kernels_avx2();
    return k ? k : &KERNELS_GENERIC;
}

static const matmul_kernels *kernels(void) {
    const matmul_kernels *k = __atomic_load_n(&g_kernels, __ATOMIC_ACQUIRE);
    if (!k) {
        k = kernels_auto();
        __atomic_store_n(&g_kernels, k, __ATOMIC_RELEASE);
    }
    return k;
}

const char *matmul_cpu_simd(void) { return kernels()->name; }

int matmul_cpu_simd_set(const char *name) {
    const matmul_kernels *k;
    if (!name || !*name || strcmp(name, "auto") == 0) {
        k = kernels_auto();
    } else {
        int known;
        k = kernels_by_name(name, &known);
        if (!known) return ql_err(QL_EINVAL, "SIMD level '%s': expected generic, avx2, avx512 or auto", name);
        if (!k) return ql_err(QL_EUNSUP, "SIMD level '%s': this CPU lacks the instructions", name);
    }
    __atomic_store_n(&g_kernels, k, __ATOMIC_RELEASE);
    return QL_OK;
}

// ---- exact dequantization of any element range / rows ----

// Elements [start, start+count) of an NF4 weight into out. Runs of whole
// 64-blocks go to the SIMD kernel; a block cut by the range is dequantized
// whole into a temporary; the tensor's last, partial block goes element by
// element (its codes may end before a full block's 32 bytes).
static void nf4_range(const matmul_kernels *k, float *out, const nf4_data *w, int64_t start, int64_t count) {
    const int64_t end = start + count;
    int64_t e = start;
    while (e < end) {
        const int64_t b = e / NF4_BLOCK, bs = b * NF4_BLOCK;
        if (e == bs && bs + NF4_BLOCK <= end) {
            const int64_t nfull = (end - bs) / NF4_BLOCK;
            k->nf4_blocks(out + (e - start), w, b, nfull);
            e += nfull * NF4_BLOCK;
            continue;
        }
        const int64_t seg_end = bs + NF4_BLOCK < end ? bs + NF4_BLOCK : end;
        if (bs + NF4_BLOCK <= w->n) {
            float tmp[NF4_BLOCK];
            k->nf4_blocks(tmp, w, b, 1);
            memcpy(out + (e - start), tmp + (e - bs), (size_t)(seg_end - e) * sizeof(float));
        } else {
            nf4_dequantize(out + (e - start), w, e, seg_end - e);
        }
        e = seg_end;
    }
}

static void dequant_rows(const matmul_kernels *k, float *out, const qweight *w, int64_t row0, int64_t nrows) {
    const int64_t cols = w->cols, start = row0 * cols, count = nrows * cols;
    switch (w->type) {
    case DT_F32: memcpy(out, (const float *)w->data + start, (size_t)count * sizeof(float)); break;
    case DT_F16: k->cvt_f16(out, (const uint16_t *)w->data + start, count); break;
    case DT_BF16: k->cvt_bf16(out, (const uint16_t *)w->data + start, count); break;
    case DT_NF4: nf4_range(k, out, &w->nf4, start, count); break;
    default: QL_ASSERT(!"nf4_dequantize_rows: unsupported weight dtype");
    }
}

void nf4_dequantize_rows(float *out, const qweight *w, int64_t row0, int64_t nrows) {
    QL_ASSERT(row0 >= 0 && nrows >= 0 && row0 + nrows <= w->rows);
    dequant_rows(kernels(), out, w, row0, nrows);
}

// ---- GEMV path: N < MATMUL_GEMM_MIN_N ----

// Below this N the GEMV kernels (W read once, x in groups of <= 7 vectors)
// beat dequantize + sgemm: OpenBLAS is slow for so few rows of x. Measured on
// the 2-core AVX-512 workstation, 2048x2048, one thread: NF4 N=8 0.96 ms vs
// 2.78 ms, N=12 1.9 vs 2.9, N=16 2.7 vs 3.0, N=24 4.1 vs 3.4 (GEMV vs sgemm).
// (MATMUL_GEMM_MIN_N, matmul_cpu.h)

#define GEMV_CHUNK 16         // rows per OpenMP work item
#define PAR_MIN_WORK 65536    // N*rows*cols below which one thread is faster than a fork

// Rows [r0, r0+nr) of out for all N vectors, in equal groups of at most
// MATMUL_GEMV_MAX_N vectors; the chunk of W stays in cache between groups.
static void gemv_chunk(const matmul_kernels *k, float *out, const float *x, const float *xp, const qweight *w,
                       int N, int64_t r0, int64_t nr, float *buf) {
    const int64_t rows = w->rows, cols = w->cols;
    if (w->type == DT_NF4 && cols % NF4_BLOCK != 0) {
        // rows start mid-block (and mid-byte when cols is odd): dequantize the
        // chunk exactly into buf, then an F32 GEMV
        nf4_range(k, buf, &w->nf4, r0 * cols, nr * cols);
    }
    const int ngroups = (N + MATMUL_GEMV_MAX_N - 1) / MATMUL_GEMV_MAX_N;
    const int gsize = (N + ngroups - 1) / ngroups;
    for (int n0 = 0; n0 < N; n0 += gsize) {
        const int nn = N - n0 < gsize ? N - n0 : gsize;
        float *o = out + n0 * rows + r0;
        const float *xn = x + (int64_t)n0 * cols;
        switch (w->type) {
        case DT_F32: k->gemv_f32(o, rows, (const float *)w->data + r0 * cols, nr, cols, xn, nn); break;
        case DT_F16: k->gemv_f16(o, rows, (const uint16_t *)w->data + r0 * cols, nr, cols, xn, nn); break;
        case DT_BF16: k->gemv_bf16(o, rows, (const uint16_t *)w->data + r0 * cols, nr, cols, xn, nn); break;
        case DT_NF4:
            if (buf) k->gemv_f32(o, rows, buf, nr, cols, xn, nn);
            else k->gemv_nf4(o, rows, &w->nf4, r0, nr, cols, xp + (int64_t)n0 * cols, nn);
            break;
        default: QL_ASSERT(!"matmul_cpu: unsupported weight dtype");
        }
    }
}

// ---- the int8 NF4 GEMV (opt-in) ----

static int g_int8 = -1;  // -1: not decided yet (QLORA_MATMUL); read and written with __atomic builtins

int matmul_cpu_int8(void) {
    int v = __atomic_load_n(&g_int8, __ATOMIC_ACQUIRE);
    if (v < 0) {
        const char *env = getenv("QLORA_MATMUL");
        v = env && !strcmp(env, "int8");
        if (env && *env && !v && strcmp(env, "exact"))
            log_warn("QLORA_MATMUL=%s: unknown (expected exact or int8); using exact", env);
        __atomic_store_n(&g_int8, v, __ATOMIC_RELEASE);
    }
    return v;
}

void matmul_cpu_int8_set(int on) { __atomic_store_n(&g_int8, on ? 1 : 0, __ATOMIC_RELEASE); }

// Rows [r0, r0+nr) of out for all N vectors, in groups of at most MATMUL_GEMV_MAX_N
static void gemv_chunk_q8(const matmul_kernels *k, float *out, const int8_t *xq, const float *xd, const qweight *w,
                          int N, int64_t r0, int64_t nr) {
    const int64_t rows = w->rows, cols = w->cols, nb = cols / NF4_BLOCK;
    const int ngroups = (N + MATMUL_GEMV_MAX_N - 1) / MATMUL_GEMV_MAX_N;
    const int gsize = (N + ngroups - 1) / ngroups;
    for (int n0 = 0; n0 < N; n0 += gsize) {
        const int nn = N - n0 < gsize ? N - n0 : gsize;
        k->gemv_nf4_q8(out + n0 * rows + r0, rows, &w->nf4, r0, nr, cols, xq + (int64_t)n0 * cols, xd + n0 * nb, nn);
    }
}

static void gemv_q8(const matmul_kernels *k, float *out, const float *x, const qweight *w, int N) {
    const int64_t rows = w->rows, cols = w->cols, nb = cols / NF4_BLOCK;
    const int64_t nchunks = (rows + GEMV_CHUNK - 1) / GEMV_CHUNK;
    size_t qb = ((size_t)N * cols + 63) & ~(size_t)63;
    int8_t *xq = aligned_alloc(64, qb);
    if (!xq) xq = mallocCheck(qb);
    float *xd = mallocCheck(sizeof(float) * (size_t)N * nb);
    nf4_quantize_x8(xq, xd, x, N, cols);
#pragma omp parallel for schedule(static) if (N * rows * cols >= PAR_MIN_WORK)
    for (int64_t c = 0; c < nchunks; c++) {
        const int64_t r0 = c * GEMV_CHUNK, nr = rows - r0 < GEMV_CHUNK ? rows - r0 : GEMV_CHUNK;
        gemv_chunk_q8(k, out, xq, xd, w, N, r0, nr);
    }
    free(xq), free(xd);
}

static void gemv(const matmul_kernels *k, float *out, const float *x, const qweight *w, int N) {
    const int64_t rows = w->rows, cols = w->cols;
    if (w->type == DT_NF4 && cols % NF4_BLOCK == 0 && k->gemv_nf4_q8 && matmul_cpu_int8()) {
        gemv_q8(k, out, x, w, N);
        return;
    }
    const int64_t nchunks = (rows + GEMV_CHUNK - 1) / GEMV_CHUNK;
    const int par = N * rows * cols >= PAR_MIN_WORK;
    const int fused_nf4 = w->type == DT_NF4 && cols % NF4_BLOCK == 0;
    const int general_nf4 = w->type == DT_NF4 && !fused_nf4;

    // fused NF4: codes are decoded in registers against x reordered to match them
    const float *xp = x;
    float *xbuf = NULL;
    if (fused_nf4 && k->xgroup) {
        // on a 64-byte line: malloc's 16-byte alignment can put it at 16 mod 64,
        // where every vector load splits a cache line (a 30% slower GEMV, measured)
        size_t nb = ((size_t)N * cols * sizeof(float) + 63) & ~(size_t)63;
        xbuf = aligned_alloc(64, nb);
        if (!xbuf) xbuf = mallocCheck(nb);
        nf4_permute_x(xbuf, x, N, cols, k->xgroup);
        xp = xbuf;
    }
#pragma omp parallel if (par)
    {
        float *buf = general_nf4 ? mallocCheck((size_t)GEMV_CHUNK * cols * sizeof(float)) : NULL;
#pragma omp for schedule(static)
        for (int64_t c = 0; c < nchunks; c++) {
            const int64_t r0 = c * GEMV_CHUNK, nr = rows - r0 < GEMV_CHUNK ? rows - r0 : GEMV_CHUNK;
            gemv_chunk(k, out, x, xp, w, N, r0, nr, buf);
        }
        free(buf);
    }
    free(xbuf);
}

// ---- sgemm path: N >= MATMUL_GEMM_MIN_N ----

#define TILE_FLOATS (1 << 20)  // 4 MiB fp32 tile per thread: OpenBLAS repacks x for every
                               // call, so fewer, larger calls win (11008x4096, N=128, one
                               // thread: 186 ms vs 218 ms with 1 MiB and 335 ms with 256 KiB)

// Rows of W per tile of gemm with nth threads.
static int64_t gemm_tile_rows(dtype type, int64_t rows, int64_t cols, int nth) {
    const int64_t per_thread = (rows + nth - 1) / nth;
    if (type == DT_F32) return per_thread;  // no copy: one sgemm per thread on its rows of W
    int64_t tr = TILE_FLOATS / cols;
    if (tr < 16) tr = 16;
    return tr > per_thread ? per_thread : tr;
}

static void gemm(const matmul_kernels *k, float *out, const float *x, const qweight *w, int N) {
    const int64_t rows = w->rows, cols = w->cols;
    const int64_t tr = gemm_tile_rows(w->type, rows, cols, omp_get_max_threads());  // rows per tile
    const int64_t ntiles = (rows + tr - 1) / tr;

    // One thread pool at a time: OpenBLAS runs single-threaded inside ours.
    const int blas_threads = openblas_get_num_threads();
    if (blas_threads != 1) openblas_set_num_threads(1);
#pragma omp parallel if (ntiles > 1)
    {
        float *buf = w->type == DT_F32 ? NULL : mallocCheck((size_t)tr * cols * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < ntiles; t++) {
            const int64_t r0 = t * tr, nr = rows - r0 < tr ? rows - r0 : tr;
            const float *wt;
            if (w->type == DT_F32) {
                wt = (const float *)w->data + r0 * cols;
            } else {
                dequant_rows(k, buf, w, r0, nr);
                wt = buf;
            }
            // out[:, r0:r0+nr] (N,nr) = x (N,cols) @ wt (nr,cols)^T
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, (int)nr, (int)cols, 1.0f, x, (int)cols, wt,
                        (int)cols, 0.0f, out + r0, (int)rows);
        }
        free(buf);
    }
    if (blas_threads != 1) openblas_set_num_threads(blas_threads);
}

void matmul_cpu_dense_st(float *out, int64_t ostride, const void *w, dtype type, int64_t nrows, int64_t cols,
                         const float *x, int N) {
    QL_ASSERT(type == DT_F32 || type == DT_F16 || type == DT_BF16);
    const matmul_kernels *k = kernels();
    for (int n0 = 0; n0 < N; n0 += MATMUL_GEMV_MAX_N) {
        const int nn = N - n0 < MATMUL_GEMV_MAX_N ? N - n0 : MATMUL_GEMV_MAX_N;
        float *o = out + n0 * ostride;
        const float *xn = x + (int64_t)n0 * cols;
        switch (type) {
        case DT_F32: k->gemv_f32(o, ostride, w, nrows, cols, xn, nn); break;
        case DT_F16: k->gemv_f16(o, ostride, w, nrows, cols, xn, nn); break;
        default: k->gemv_bf16(o, ostride, w, nrows, cols, xn, nn); break;
        }
    }
}

void matmul_cpu(float *out, const float *x, const qweight *w, int N) {
    QL_ASSERT(N >= 0 && w->rows >= 0 && w->cols >= 0);
    QL_ASSERT(w->type == DT_F32 || w->type == DT_F16 || w->type == DT_BF16 || w->type == DT_NF4);
    if (N == 0 || w->rows == 0) return;
    if (w->cols == 0) {
        memset(out, 0, (size_t)N * w->rows * sizeof(float));
        return;
    }
    const matmul_kernels *k = kernels();
    if (N < MATMUL_GEMM_MIN_N) gemv(k, out, x, w, N);
    else gemm(k, out, x, w, N);
}

size_t matmul_cpu_scratch_bytes(dtype type, int64_t rows, int64_t cols, int N, int nth) {
    if (N <= 0 || rows <= 0 || cols <= 0) return 0;
    const matmul_kernels *k = kernels();
    if (N >= MATMUL_GEMM_MIN_N) {  // gemm: a tile per thread of the team (one thread for one tile)
        if (type == DT_F32) return 0;
        const int64_t tr = gemm_tile_rows(type, rows, cols, nth), ntiles = (rows + tr - 1) / tr;
        return (ntiles > 1 ? (size_t)nth : 1) * (size_t)tr * (size_t)cols * sizeof(float);
    }
    // gemv and gemv_q8, as they choose
    const size_t x64 = ((size_t)N * cols * sizeof(float) + 63) & ~(size_t)63;
    if (type == DT_NF4 && cols % NF4_BLOCK == 0 && k->gemv_nf4_q8 && matmul_cpu_int8())
        return (((size_t)N * cols + 63) & ~(size_t)63) + sizeof(float) * (size_t)N * (size_t)(cols / NF4_BLOCK);
    const int fused_nf4 = type == DT_NF4 && cols % NF4_BLOCK == 0, general_nf4 = type == DT_NF4 && !fused_nf4;
    const int par = (int64_t)N * rows * cols >= PAR_MIN_WORK;
    return (fused_nf4 && k->xgroup ? x64 : 0) +
           (general_nf4 ? (par ? (size_t)nth : 1) * (size_t)GEMV_CHUNK * (size_t)cols * sizeof(float) : 0);
}
