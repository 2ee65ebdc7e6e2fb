// gemm_providers.c: the fp32 GEMM of qlora's prefill and training shapes through
// one provider (issue 13, part 0: pick the matrix products by measurement, not by
// whether a BLAS knows the CPU's model). Not part of the build or of ctest: built
// once per provider and run side by side by tests/bench/gemm_providers.sh, which
// prints key=value lines and the ratio of each provider to OpenBLAS in the same run.
//
// The product is what the CPU backend asks of its BLAS: C (n, rows) = X (n, cols)
// times W (rows, cols) transposed, row-major, fp32 (kernels/cpu/blas_cpu.c).
//
//   cc -O2 -DPROVIDER_OPENBLAS gemm_providers.c -lopenblas            (cblas_sgemm)
//   cc -O2 -DPROVIDER_BLIS -I/usr/include/x86_64-linux-gnu/blis-openmp gemm_providers.c \
//      -L/usr/lib/x86_64-linux-gnu/blis-openmp -lblis -fopenmp        (bli_sgemm)
//   cc -O2 -DPROVIDER_DNNL gemm_providers.c -ldnnl                   (dnnl_sgemm, oneDNN)
//
// usage: gemm_providers THREADS REPS n:rows:cols [n:rows:cols ...]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(PROVIDER_OPENBLAS)
#include <cblas.h>
extern char *openblas_get_corename(void);
extern void openblas_set_num_threads(int);
static const char *provider(void) { return "openblas"; }
static const char *detail(void) { return openblas_get_corename(); }
static void set_threads(int t) { openblas_set_num_threads(t); }
static void sgemm(int n, int rows, int cols, const float *x, const float *w, float *c) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, cols, 1.0f, x, cols, w, cols, 0.0f, c, rows);
}
#elif defined(PROVIDER_BLIS)
#include <blis.h>
static const char *provider(void) { return "blis"; }
static const char *detail(void) { return bli_arch_string(bli_arch_query_id()); }
static void set_threads(int t) { bli_thread_set_num_threads(t); }
static void sgemm(int n, int rows, int cols, const float *x, const float *w, float *c) {
    float one = 1.0f, zero = 0.0f;
    // row-major: row stride cols (X), cols (W, read transposed), rows (C); column stride 1
    bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_TRANSPOSE, n, rows, cols, &one, (float *)x, cols, 1, (float *)w, cols, 1, &zero,
              c, rows, 1);
}
#elif defined(PROVIDER_DNNL)
#include <dnnl.h>
static const char *provider(void) { return "onednn"; }
static const char *detail(void) {
    static char b[64];
    const dnnl_version_t *v = dnnl_version();
    snprintf(b, sizeof b, "%d.%d.%d-%s", v->major, v->minor, v->patch, dnnl_get_effective_cpu_isa() ==
             dnnl_cpu_isa_avx2 ? "avx2" : "isa-other");
    return b;
}
static void set_threads(int t) { (void)t; }  // OMP_NUM_THREADS (oneDNN's OpenMP runtime)
static void sgemm(int n, int rows, int cols, const float *x, const float *w, float *c) {
    dnnl_sgemm('N', 'T', n, rows, cols, 1.0f, x, cols, w, cols, 0.0f, c, rows);
}
#else
#error "define PROVIDER_OPENBLAS, PROVIDER_BLIS or PROVIDER_DNNL"
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s THREADS REPS n:rows:cols ...\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]), reps = atoi(argv[2]);
    set_threads(threads);
    for (int a = 3; a < argc; a++) {
        int n, rows, cols;
        if (sscanf(argv[a], "%d:%d:%d", &n, &rows, &cols) != 3 || n < 1 || rows < 1 || cols < 1 || reps < 1) {
            fprintf(stderr, "bad shape '%s'\n", argv[a]);
            return 2;
        }
        float *x = malloc(sizeof(float) * (size_t)n * cols), *w = malloc(sizeof(float) * (size_t)rows * cols),
              *c = malloc(sizeof(float) * (size_t)n * rows);
        double *t = malloc(sizeof(double) * (size_t)reps);
        if (!x || !w || !c || !t) return 1;
        uint64_t s = 88172645463325252ULL;
        for (size_t i = 0; i < (size_t)n * cols; i++) s ^= s << 13, s ^= s >> 7, s ^= s << 17, x[i] = (float)(s % 2001) / 1000.0f - 1.0f;
        for (size_t i = 0; i < (size_t)rows * cols; i++) s ^= s << 13, s ^= s >> 7, s ^= s << 17, w[i] = (float)(s % 2001) / 50000.0f - 0.02f;
        sgemm(n, rows, cols, x, w, c);  // warm-up (threads, packing buffers)
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            sgemm(n, rows, cols, x, w, c);
            t[r] = now() - t0;
        }
        double check = 0;  // C[0][0] against a plain dot product: the call computed what was asked
        for (int k = 0; k < cols; k++) check += (double)x[k] * w[k];
        qsort(t, (size_t)reps, sizeof *t, cmp);
        double flop = 2.0 * n * rows * cols;
        printf("gemm provider=%s detail=%s threads=%d shape=%d:%d:%d best_ms=%.3f median_ms=%.3f best_GFLOPs=%.2f "
               "c00_err=%.2e\n", provider(), detail(), threads, n, rows, cols, t[0] * 1e3, t[reps / 2] * 1e3,
               flop / t[0] * 1e-9, c[0] - check);
        free(x), free(w), free(c), free(t);
    }
    return 0;
}
