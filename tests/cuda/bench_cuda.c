// bench_cuda.c: the CUDA backend's matmul at real Llama shapes, against the
// peer measured in the same run: cuBLAS (cublasGemmEx, fp32 accumulation) with
// plain fp16 weights and fp16 x of the same shape.
//
//   bench_cuda [N ...]      token counts to measure (default: 1 512)
//
// Timing: CUDA events around each call on the backend's stream, after warm-up
// calls; the median of REPS_GEMV (N <= 8) or REPS_GEMM calls. Before the timed
// calls a large memset is queued so that the CPU runs ahead of the GPU and the
// calls run back to back (launch latency is not measured). Weights rotate among
// enough copies to exceed 3x the L2 cache, so every call reads them from DRAM.
// Reported: GEMV (N <= 8) in us and GB/s of weight bytes read (NF4: codes,
// absmax codes and scales); N > 8 in us and TFLOP/s (2*N*rows*cols); speedup =
// peer time / our time. Ours includes everything the op does (for N > 8 with
// NF4: rounding x to fp16, dequantizing W to an fp16 tile, the GEMM); the peer's
// x is already fp16.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"
#include "tests/testutil.h"

#define REPS_GEMV 50
#define REPS_GEMM 20
#define WARMUP 3
#define MAX_ROT 64
#define FILLER_BYTES ((size_t)2 << 30)  // queued before the timed calls: ~0.7 ms of memset on an H100

#define CUDA_OK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); exit(1); } } while (0)
#define CUBLAS_OK(call) do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) { \
    fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cublasGetStatusString(s_)); exit(1); } } while (0)

typedef struct {
    int rows, cols;  // W (out, in)
    dtype type;      // what the backend runs; the peer always runs fp16
    const char *what;
} bench_shape;

static const bench_shape SHAPES[] = {
    {4096, 4096, DT_NF4, "7B q,k,v,o"},
    {11008, 4096, DT_NF4, "7B gate,up"},
    {4096, 11008, DT_NF4, "7B down"},
    {32000, 4096, DT_F16, "7B lm_head"},
    {2048, 2048, DT_NF4, "1.1B q,o"},
    {5632, 2048, DT_NF4, "1.1B gate,up"},
};

typedef struct {
    char shape[32], type[8], what[16];
    int N;
    double us, rate, peer_us, peer_rate;  // rate: GB/s (GEMV) or TFLOP/s
} result;

static result results[sizeof SHAPES / sizeof SHAPES[0] * 16];
static int nresults;

// ---- timing ----

typedef void (*bench_fn)(void *arg, int rot);

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_us(cudaStream_t s, bench_fn fn, void *arg, int nrot, int reps, void *filler) {
    for (int i = 0; i < WARMUP; i++) fn(arg, i % nrot);
    CUDA_OK(cudaStreamSynchronize(s));
    cudaEvent_t *ev = malloc(sizeof(cudaEvent_t) * 2 * (size_t)reps);
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int i = 0; i < 2 * reps; i++) CUDA_OK(cudaEventCreate(&ev[i]));
    CUDA_OK(cudaMemsetAsync(filler, 0, FILLER_BYTES, s));
    for (int r = 0; r < reps; r++) {
        CUDA_OK(cudaEventRecord(ev[2 * r], s));
        fn(arg, (WARMUP + r) % nrot);
        CUDA_OK(cudaEventRecord(ev[2 * r + 1], s));
    }
    CUDA_OK(cudaEventSynchronize(ev[2 * reps - 1]));
    for (int r = 0; r < reps; r++) {
        float ms;
        CUDA_OK(cudaEventElapsedTime(&ms, ev[2 * r], ev[2 * r + 1]));
        t[r] = ms * 1000.0;
    }
    for (int i = 0; i < 2 * reps; i++) cudaEventDestroy(ev[i]);
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    double med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    free(ev);
    free(t);
    return med;
}

// ---- ours: the backend's matmul ----

typedef struct {
    ops *o;
    qweight *w;  // nrot uploaded copies
    const float *x;
    float *out;
    int N;
} ours_arg;

static void ours_call(void *p, int rot) {
    ours_arg *a = p;
    a->o->matmul(a->o, a->out, a->x, &a->w[rot], a->N);
}

// ---- the peer: cuBLAS with fp16 weights ----

typedef struct {
    cublasHandle_t h;
    void **w16;  // nrot copies (rows,cols) fp16
    const void *x16;
    float *out;
    int rows, cols, N;
} peer_arg;

static void peer_call(void *p, int rot) {
    peer_arg *a = p;
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_OK(cublasGemmEx(a->h, CUBLAS_OP_T, CUBLAS_OP_N, a->rows, a->N, a->cols, &one, a->w16[rot], CUDA_R_16F,
                           a->cols, a->x16, CUDA_R_16F, a->cols, &zero, a->out, CUDA_R_32F, a->rows, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT));
}

static int rotations(size_t bytes, size_t l2) {
    size_t n = (3 * l2 + bytes - 1) / bytes;
    return n < 1 ? 1 : n > MAX_ROT ? MAX_ROT : (int)n;
}

static void bench_shape_run(const bench_shape *sh, const int *Ns, int nN, ops *o, cublasHandle_t h, size_t l2,
                            void *filler) {
    const int rows = sh->rows, cols = sh->cols;
    const int64_t n = (int64_t)rows * cols;
    cudaStream_t s = (cudaStream_t)ops_cuda_stream(o);
    uint64_t seed = 0x5eed + (uint64_t)n;
    int maxN = 1;
    for (int i = 0; i < nN; i++) maxN = Ns[i] > maxN ? Ns[i] : maxN;

    // host weights: values do not matter for timing, only the format
    float *f = mallocCheck(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) f[i] = 0.02f * test_rand_uniform(&seed);
    uint16_t *h16 = mallocCheck(sizeof(uint16_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) h16[i] = f32_to_f16(f[i]);
    qweight hw = {.type = sh->type, .rows = rows, .cols = cols};
    uint8_t *codes = NULL, *aq = NULL;
    float *asc = NULL;
    if (sh->type == DT_NF4) {
        codes = mallocCheck((size_t)(n + 1) / 2);
        aq = mallocCheck((size_t)nf4_nblocks(n));
        asc = mallocCheck(sizeof(float) * (size_t)nf4_ngroups(n));
        float off;
        nf4_quantize(codes, aq, asc, &off, f, n);
        hw.nf4 = (nf4_data){.n = n, .codes = codes, .absmax_q = aq, .absmax_scale = asc, .absmax_offset = off};
    } else {
        hw.data = h16;  // DT_F16
    }
    const size_t wbytes = qweight_bytes(&hw), w16bytes = (size_t)n * 2;
    const int nrot = rotations(wbytes, l2), nrot16 = rotations(w16bytes, l2);
    qweight *w = mallocCheck(sizeof(qweight) * (size_t)nrot);
    for (int r = 0; r < nrot; r++) {
        w[r] = hw;
        w[r].dev = NULL;
        if (o->weight_upload(o, &w[r]) != QL_OK) {
            fprintf(stderr, "weight_upload (%d,%d): %s\n", rows, cols, ql_errmsg());
            exit(1);
        }
    }
    void **w16 = mallocCheck(sizeof(void *) * (size_t)nrot16);
    for (int r = 0; r < nrot16; r++) {
        CUDA_OK(cudaMalloc(&w16[r], w16bytes));
        CUDA_OK(cudaMemcpy(w16[r], h16, w16bytes, cudaMemcpyHostToDevice));
    }
    // activations for the largest N, fp32 for ours and fp16 for the peer
    const size_t nx = (size_t)maxN * cols;
    float *hx = mallocCheck(sizeof(float) * nx);
    uint16_t *hx16 = mallocCheck(sizeof(uint16_t) * nx);
    for (size_t i = 0; i < nx; i++) {
        hx[i] = test_rand_uniform(&seed);
        hx16[i] = f32_to_f16(hx[i]);
    }
    float *dx = o->alloc(o, sizeof(float) * nx), *dout = o->alloc(o, sizeof(float) * (size_t)maxN * rows);
    void *dx16;
    CUDA_OK(cudaMalloc(&dx16, sizeof(uint16_t) * nx));
    if (!dx || !dout) {
        fprintf(stderr, "alloc: %s\n", ql_errmsg());
        exit(1);
    }
    o->to_device(o, dx, hx, sizeof(float) * nx);
    CUDA_OK(cudaMemcpy(dx16, hx16, sizeof(uint16_t) * nx, cudaMemcpyHostToDevice));
    o->sync(o);

    for (int i = 0; i < nN; i++) {
        const int N = Ns[i], gemv = N <= OPS_CUDA_GEMV_MAX_N, reps = gemv ? REPS_GEMV : REPS_GEMM;
        ours_arg oa = {o, w, dx, dout, N};
        peer_arg pa = {h, w16, dx16, dout, rows, cols, N};
        result *res = &results[nresults++];
        memset(res, 0, sizeof *res);
        snprintf(res->shape, sizeof res->shape, "%dx%d", rows, cols);
        snprintf(res->type, sizeof res->type, "%s", sh->type == DT_NF4 ? "nf4" : "f16");
        snprintf(res->what, sizeof res->what, "%s", sh->what);
        res->N = N;
        res->us = median_us(s, ours_call, &oa, nrot, reps, filler);
        res->peer_us = median_us(s, peer_call, &pa, nrot16, reps, filler);
        if (gemv) {
            res->rate = wbytes / (res->us * 1e3);  // bytes/us/1e3 = GB/s
            res->peer_rate = w16bytes / (res->peer_us * 1e3);
        } else {
            const double flop = 2.0 * N * (double)rows * cols;
            res->rate = flop / (res->us * 1e6);  // TFLOP/s
            res->peer_rate = flop / (res->peer_us * 1e6);
        }
        printf("bench=matmul shape=%s type=%s N=%d us=%.2f %s=%.1f peer=cublas_f16 peer_us=%.2f peer_%s=%.1f "
               "speedup=%.2f rot=%d peer_rot=%d\n",
               res->shape, res->type, N, res->us, gemv ? "GBps" : "TFLOPs", res->rate, res->peer_us,
               gemv ? "GBps" : "TFLOPs", res->peer_rate, res->peer_us / res->us, nrot, nrot16);
        fflush(stdout);
    }

    for (int r = 0; r < nrot; r++) o->weight_release(o, &w[r]);
    for (int r = 0; r < nrot16; r++) cudaFree(w16[r]);
    o->free(o, dx);
    o->free(o, dout);
    cudaFree(dx16);
    free(w);
    free(w16);
    free(f);
    free(h16);
    free(codes);
    free(aq);
    free(asc);
    free(hx);
    free(hx16);
}

int main(int argc, char **argv) {
    int Ns[16], nN = 0;
    for (int i = 1; i < argc && nN < 16; i++) {
        char *end;
        long v = strtol(argv[i], &end, 10);
        if (*end || v < 1 || v > 65536) {
            fprintf(stderr, "usage: bench_cuda [N ...]   (token counts, 1..65536; default 1 512)\n");
            return 2;
        }
        Ns[nN++] = (int)v;
    }
    if (!nN) {
        Ns[nN++] = 1;
        Ns[nN++] = 512;
    }
    if (getenv("QLORA_CUDA_SYNC")) fprintf(stderr, "warning: QLORA_CUDA_SYNC is set: timings include a sync per launch\n");
    ops *o = ops_cuda_new(0);
    if (!o) {
        fprintf(stderr, "bench_cuda: %s\n", ql_errmsg());
        return 1;
    }
    struct cudaDeviceProp prop;
    CUDA_OK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, sm_%d%d, %d SMs, %.0f GiB, L2 %.0f MiB; cuBLAS peer: fp16 weights and x, fp32 accumulation\n",
           prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0,
           prop.l2CacheSize / 1048576.0);
    cublasHandle_t h;
    CUBLAS_OK(cublasCreate(&h));
    CUBLAS_OK(cublasSetStream(h, (cudaStream_t)ops_cuda_stream(o)));
    void *filler;
    CUDA_OK(cudaMalloc(&filler, FILLER_BYTES));

    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++)
        bench_shape_run(&SHAPES[i], Ns, nN, o, h, (size_t)prop.l2CacheSize, filler);

    printf("\n%-12s %-12s %-4s %6s | %10s %15s | %10s %15s | %7s\n", "shape", "layer", "type", "N", "ours us",
           "ours rate", "cuBLAS us", "cuBLAS rate", "speedup");
    for (int i = 0; i < nresults; i++) {
        const result *r = &results[i];
        const char *unit = r->N <= OPS_CUDA_GEMV_MAX_N ? "GB/s" : "TFLOP/s";
        printf("%-12s %-12s %-4s %6d | %10.2f %7.1f %-7s | %10.2f %7.1f %-7s | %6.2fx\n", r->shape, r->what, r->type,
               r->N, r->us, r->rate, unit, r->peer_us, r->peer_rate, unit, r->peer_us / r->us);
    }
    cudaFree(filler);
    cublasDestroy(h);
    ops_delete(o);
    return 0;
}
