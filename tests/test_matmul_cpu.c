// test_matmul_cpu.c: matmul_cpu (kernels/cpu) against the reference backend's
// matmul (kernels/ref, double accumulation over exact fp32 weights), for every
// weight dtype x every SIMD level this CPU has x shapes that hit each path:
// GEMV (N < 16; N > 7 in groups) and sgemm (N >= 16); NF4 rows that are whole 64-blocks
// (cols % 64 == 0, fused kernel), rows that start mid-block (cols = 172) and
// mid-byte (odd cols); one row; one column; 1 and 2 threads.
// Also nf4_dequantize_rows must equal the reference dequantization bit for bit.
//
//   test_matmul_cpu [FILTER]   runs the cases whose descriptor contains FILTER,
//                              e.g. "nf4,avx2" or "N=1,rows=300"
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/cpu/matmul_cpu.h"
#include "kernels/ops.h"
#include "testutil.h"

static const int NS[] = {1, 3, 7, 8, 15, 16, 17, 64};
static const struct { int64_t rows, cols; } SHAPES[] = {
    {172, 64}, {64, 172}, {1, 64}, {1, 172}, {300, 65}, {300, 172}, {300, 256},
    {7, 65},   {33, 128}, {300, 1}, {16, 130}, {5, 4096}, {300, 251},
};
static const dtype DTYPES[] = {DT_F32, DT_F16, DT_BF16, DT_NF4};
static const char *LEVELS[] = {"generic", "avx2", "avx512"};
static const int THREADS[] = {1, 2};

#define GUARD 64  // floats checked on each side of the output
static const uint32_t GUARD_BITS = 0x7fa5a5a5u;  // a NaN pattern no kernel writes

static const char *dtype_str(dtype t) {
    switch (t) {
    case DT_F32: return "f32";
    case DT_F16: return "f16";
    case DT_BF16: return "bf16";
    default: return "nf4";
    }
}

static int matches(const char *filter, const char *desc) { return !filter || strstr(desc, filter); }

// One (dtype, shape, N) group: reference once, then every level x thread count.
static void run_group(const char *filter, ops *ref, dtype t, int64_t rows, int64_t cols, int N, uint64_t *seed) {
    char desc[160];
    int any = 0;
    for (size_t l = 0; l < 3; l++)
        for (size_t th = 0; th < 2; th++) {
            snprintf(desc, sizeof desc, "matmul(N=%d,rows=%lld,cols=%lld,%s,%s,threads=%d)", N, (long long)rows,
                     (long long)cols, dtype_str(t), LEVELS[l], THREADS[th]);
            any |= matches(filter, desc);
        }
    if (!any) return;

    test_weight ws;
    test_weight_init(&ws, t, rows, cols, 0.5f, seed);
    const qweight *w = &ws.w;
    float *x = malloc((size_t)N * cols * sizeof(float));
    for (int64_t i = 0; i < (int64_t)N * cols; i++) x[i] = test_rand_uniform(seed);

    // the reference, and W as exact fp32 for the error bound
    float *want = malloc((size_t)N * rows * sizeof(float));
    ref->matmul(ref, want, x, w, N);
    float *wf = malloc((size_t)rows * cols * sizeof(float));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) wf[r * cols + c] = qweight_get(w, r, c);
    // S = max over outputs of sum_k |W[r,k] x[n,k]|
    double S = 0;
    for (int n = 0; n < N; n++)
        for (int64_t r = 0; r < rows; r++) {
            double a = 0;
            for (int64_t c = 0; c < cols; c++) a += fabs((double)wf[r * cols + c] * x[n * cols + c]);
            if (a > S) S = a;
        }
    // Tolerance, the one rule |got - want| <= atol + rtol*|want|:
    //   atol = (cols + 2) * u * S: fp32 summation of cols products in any order,
    //          with or without FMA, errs by at most cols*u*sum|w*x| (Higham,
    //          Accuracy and Stability, 3.1); the fused NF4 kernel scales each
    //          64-block's sum by its absmax instead of each weight, which costs
    //          two more roundings of at most u*sum|w*x|. The weights themselves
    //          are exact in fp32 on both sides.
    //   rtol = u: the reference rounds its double sum to fp32 once.
    const double u = ldexp(1.0, -24);
    const double atol = (double)(cols + 2) * u * S, rtol = u;

    float *buf = malloc(((size_t)N * rows + 2 * GUARD) * sizeof(float));
    float *out = buf + GUARD;
    float *deq = malloc((size_t)rows * cols * sizeof(float));
    for (size_t l = 0; l < 3; l++) {
        if (matmul_cpu_simd_set(LEVELS[l]) != QL_OK) continue;  // not on this CPU
        // exact dequantization of a few row ranges
        const int64_t r0s[] = {0, rows / 3, rows - 1};
        for (int i = 0; i < 3; i++) {
            const int64_t r0 = r0s[i], nr = i == 0 ? rows : rows - r0;
            nf4_dequantize_rows(deq, w, r0, nr);
            CHECKF(memcmp(deq, wf + r0 * cols, (size_t)nr * cols * sizeof(float)) == 0,
                   "nf4_dequantize_rows(rows %lld..%lld of %lldx%lld %s, %s) differs from qweight_get",
                   (long long)r0, (long long)(r0 + nr), (long long)rows, (long long)cols, dtype_str(t), LEVELS[l]);
        }
        for (size_t th = 0; th < 2; th++) {
            snprintf(desc, sizeof desc, "matmul(N=%d,rows=%lld,cols=%lld,%s,%s,threads=%d)", N, (long long)rows,
                     (long long)cols, dtype_str(t), LEVELS[l], THREADS[th]);
            if (!matches(filter, desc)) continue;
            for (size_t i = 0; i < (size_t)N * rows + 2 * GUARD; i++) memcpy(&buf[i], &GUARD_BITS, 4);
            omp_set_num_threads(THREADS[th]);
            matmul_cpu(out, x, w, N);
            check_close(desc, out, want, (int64_t)N * rows, atol, rtol);  // also fails NaN/Inf (unwritten)
            int guard_ok = 1;
            for (size_t i = 0; i < GUARD; i++) {
                guard_ok &= memcmp(&buf[i], &GUARD_BITS, 4) == 0;
                guard_ok &= memcmp(&out[(size_t)N * rows + i], &GUARD_BITS, 4) == 0;
            }
            CHECKF(guard_ok, "%s wrote outside its output", desc);
        }
    }
    matmul_cpu_simd_set(NULL);
    free(x), free(want), free(wf), free(buf), free(deq);
    test_weight_free(&ws);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    ops *ref = ops_ref_new();
    if (!ref) {
        fprintf(stderr, "ops_ref_new: %s\n", ql_errmsg());
        return 1;
    }
    fprintf(stderr, "default SIMD level: %s\n", matmul_cpu_simd());
    // choosing a level: by name, by QLORA_SIMD, and refusals
    CHECK(matmul_cpu_simd_set("sse9") == QL_EINVAL);
    CHECK(matmul_cpu_simd_set("generic") == QL_OK && strcmp(matmul_cpu_simd(), "generic") == 0);
    setenv("QLORA_SIMD", "generic", 1);
    CHECK(matmul_cpu_simd_set(NULL) == QL_OK && strcmp(matmul_cpu_simd(), "generic") == 0);
    unsetenv("QLORA_SIMD");
    CHECK(matmul_cpu_simd_set("auto") == QL_OK);
    uint64_t seed = 12345;
    for (size_t d = 0; d < sizeof DTYPES / sizeof *DTYPES; d++)
        for (size_t s = 0; s < sizeof SHAPES / sizeof *SHAPES; s++)
            for (size_t i = 0; i < sizeof NS / sizeof *NS; i++)
                run_group(filter, ref, DTYPES[d], SHAPES[s].rows, SHAPES[s].cols, NS[i], &seed);
    ops_delete(ref);
    return test_finish("test_matmul_cpu");
}
