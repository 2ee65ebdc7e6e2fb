// bench_matmul_cpu.c: microbenchmark of matmul_cpu (not a test; CMake does
// not build it). Times out (N,rows) = x (N,cols) @ W^T for one weight dtype and
// prints machine-parsable lines, with OpenBLAS on the same fp32 weights as the
// peer (sgemv for N = 1, sgemm otherwise) measured in the same run.
//
//   bench_matmul_cpu [rows cols N dtype threads simd reps]
//   defaults:         4096 4096 1  nf4   2       auto 50
//   dtype: f32 f16 bf16 nf4; simd: auto generic avx2 avx512
//
// Build (from the repository root, after building qlora_lib in build/):
//   cc -std=c11 -O2 -I. -I/usr/include/x86_64-linux-gnu/openblas-pthread -fopenmp
//      tests/bench_matmul_cpu.c build/libqlora_lib.a -lopenblas -lsentencepiece -lstdc++ -lm
// Times are the fastest of reps calls (robust on a shared machine) and the median.
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "kernels/cpu/matmul_cpu.h"
#include "kernels/ops.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// fastest and median of reps timed calls, in ms
static void time_calls(double *best, double *median, int reps, void (*fn)(void *), void *arg) {
    double *t = malloc(reps * sizeof(double));
    fn(arg);  // warm up
    for (int r = 0; r < reps; r++) {
        double t0 = time_now();
        fn(arg);
        t[r] = (time_now() - t0) * 1e3;
    }
    qsort(t, reps, sizeof(double), cmp_double);
    *best = t[0], *median = t[reps / 2];
    free(t);
}

typedef struct {
    float *out;
    const float *x, *wf;
    const qweight *w;
    int N;
} call;

static void call_matmul(void *p) {
    call *c = p;
    matmul_cpu(c->out, c->x, c->w, c->N);
}

static void call_openblas(void *p) {
    call *c = p;
    const int rows = (int)c->w->rows, cols = (int)c->w->cols;
    if (c->N == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, c->wf, cols, c->x, 1, 0.0f, c->out, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->N, rows, cols, 1.0f, c->x, cols, c->wf, cols, 0.0f,
                    c->out, rows);
}

static float frand(uint64_t *s) {
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return (float)((*s * 0x2545F4914F6CDD1DULL) >> 40) * (1.0f / 8388608.0f) - 1.0f;
}

int main(int argc, char **argv) {
    const int64_t rows = argc > 1 ? atoll(argv[1]) : 4096, cols = argc > 2 ? atoll(argv[2]) : 4096;
    const int N = argc > 3 ? atoi(argv[3]) : 1;
    const char *dt = argc > 4 ? argv[4] : "nf4";
    const int threads = argc > 5 ? atoi(argv[5]) : 2;
    const char *simd = argc > 6 ? argv[6] : "auto";
    const int reps = argc > 7 ? atoi(argv[7]) : 50;
    if (rows <= 0 || cols <= 0 || N <= 0 || threads <= 0 || reps <= 0) {
        fprintf(stderr, "bench_matmul_cpu: bad arguments (see the comment at the top of the file)\n");
        return 2;
    }
    if (matmul_cpu_simd_set(simd) != QL_OK) {
        fprintf(stderr, "bench_matmul_cpu: %s\n", ql_errmsg());
        return 2;
    }
    const int64_t n = rows * cols;
    uint64_t s = 88172645463325252ULL;
    float *wf = malloc(n * sizeof(float)), *x = malloc((size_t)N * cols * sizeof(float));
    float *out = malloc((size_t)N * rows * sizeof(float));
    for (int64_t i = 0; i < n; i++) wf[i] = 0.05f * frand(&s);
    for (int64_t i = 0; i < (int64_t)N * cols; i++) x[i] = frand(&s);

    qweight w = {.rows = rows, .cols = cols};
    void *store = NULL;
    uint8_t *q8 = NULL;
    float *s2 = NULL;
    if (!strcmp(dt, "f32")) {
        w.type = DT_F32, w.data = wf;
    } else if (!strcmp(dt, "f16") || !strcmp(dt, "bf16")) {
        uint16_t *h = malloc(n * 2);
        for (int64_t i = 0; i < n; i++) h[i] = dt[0] == 'f' ? f32_to_f16(wf[i]) : f32_to_bf16(wf[i]);
        w.type = dt[0] == 'f' ? DT_F16 : DT_BF16, w.data = store = h;
    } else if (!strcmp(dt, "nf4")) {
        uint8_t *codes = malloc((n + 1) / 2);
        q8 = malloc(nf4_nblocks(n)), s2 = malloc(nf4_ngroups(n) * sizeof(float));
        float offset;
        nf4_quantize(codes, q8, s2, &offset, wf, n);
        w.type = DT_NF4, store = codes;
        w.nf4 = (nf4_data){.n = n, .codes = codes, .absmax_q = q8, .absmax_scale = s2, .absmax_offset = offset};
    } else {
        fprintf(stderr, "bench_matmul_cpu: dtype '%s': expected f32, f16, bf16 or nf4\n", dt);
        return 2;
    }

    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    call c = {.out = out, .x = x, .wf = wf, .w = &w, .N = N};
    double ms, ms_med, peer, peer_med;
    time_calls(&ms, &ms_med, reps, call_matmul, &c);
    time_calls(&peer, &peer_med, reps, call_openblas, &c);  // OpenBLAS on fp32 W, its own threads

    const double wbytes = (double)qweight_bytes(&w), flop = 2.0 * N * rows * cols;
    printf("bench=matmul_cpu rows=%lld cols=%lld N=%d dtype=%s simd=%s threads=%d ms=%.4f ms_median=%.4f "
           "weight_GB/s=%.2f GFLOP/s=%.2f\n",
           (long long)rows, (long long)cols, N, dt, matmul_cpu_simd(), threads, ms, ms_med, wbytes / ms * 1e-6,
           flop / ms * 1e-6);
    printf("bench=openblas_f32 rows=%lld cols=%lld N=%d threads=%d ms=%.4f ms_median=%.4f weight_GB/s=%.2f "
           "GFLOP/s=%.2f\n",
           (long long)rows, (long long)cols, N, threads, peer, peer_med, (double)n * 4 / peer * 1e-6,
           flop / peer * 1e-6);
    free(wf), free(x), free(out), free(store), free(q8), free(s2);
    return 0;
}
