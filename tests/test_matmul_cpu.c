// test_matmul_cpu.c: matmul_cpu (kernels/cpu) against the reference backend's
// matmul (kernels/ref, double accumulation over exact fp32 weights), for every
// weight dtype x every SIMD level this CPU has x shapes that hit each path:
// GEMV (N < 16; N > 7 in groups) and sgemm (N >= 16); NF4 rows that are whole 64-blocks
// (cols % 64 == 0, fused kernel), rows that start mid-block (cols = 172) and
// mid-byte (odd cols); one row; one column; 1 and 2 threads.
// Also nf4_dequantize_rows must equal the reference dequantization bit for bit,
// and the opt-in int8 NF4 GEMV must stay within its stated bound (test_int8).
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
    {300, 16}, {33, 32},  {9, 24},  // short rows (a LoRA B): 8 rows at a time, then the rest
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

// The opt-in int8 NF4 GEMV (matmul_cpu_int8_set): for NF4 weights of whole
// 64-blocks and N < 16, every output within the bound matmul_cpu.h states,
//   |y - y_exact| <= sum_b |absmax_b| * (E_T * sum_b |x| + 32 * d_b),  d_b = max_b |x| / 127,
// plus fp32 summation (the atol of run_group), on every SIMD level and 1 and 2
// threads; the levels agree with each other to fp32 summation order (the integer
// block sums are exact); the path is really taken (the result is not the exact
// one); and N >= 16 stays exact, bit for bit.
#define E_T 0.0036710680235089166  // max |round(127 v)/127 - v| over the NF4 table
static void test_int8(const char *filter, ops *ref, int64_t rows, int64_t cols, int N, uint64_t *seed) {
    char desc[160];
    snprintf(desc, sizeof desc, "int8(N=%d,rows=%lld,cols=%lld)", N, (long long)rows, (long long)cols);
    if (!matches(filter, desc)) return;
    test_weight ws;
    test_weight_init(&ws, DT_NF4, rows, cols, 0.5f, seed);
    const qweight *w = &ws.w;
    const nf4_data *q = &w->nf4;
    float *x = malloc((size_t)N * cols * sizeof(float)), *want = malloc((size_t)N * rows * sizeof(float));
    float *got = malloc((size_t)N * rows * sizeof(float)), *first = malloc((size_t)N * rows * sizeof(float));
    for (int64_t i = 0; i < (int64_t)N * cols; i++) x[i] = test_rand_uniform(seed) * (i % 7 == 0 ? 4.0f : 1.0f);
    ref->matmul(ref, want, x, w, N);
    // the bound of each output, and the fp32 summation allowance
    const int64_t nbr = cols / 64;
    double *bound = malloc(sizeof(double) * (size_t)N * rows);
    const double u = ldexp(1.0, -24);
    for (int n = 0; n < N; n++)
        for (int64_t r = 0; r < rows; r++) {
            double b = 0, S = 0;
            for (int64_t kb = 0; kb < nbr; kb++) {
                int64_t blk = r * nbr + kb;
                double a = fabs((double)NF4_CODE8[q->absmax_q[blk]] * q->absmax_scale[blk / NF4_BLOCK2] +
                                q->absmax_offset);
                double sx = 0, mx = 0;
                for (int j = 0; j < 64; j++) {
                    double v = fabs(x[n * cols + kb * 64 + j]);
                    sx += v, mx = fmax(mx, v);
                }
                b += a * (E_T * sx + 32.0 * mx / 127.0);
                S += a * sx;
            }
            bound[n * rows + r] = b + (double)(cols + 8) * u * S + u * fabs(want[n * rows + r]);
        }
    matmul_cpu_int8_set(1);
    int levels = 0;
    double worst = 0, moved = 0;
    for (size_t l = 0; l < 3; l++) {
        if (matmul_cpu_simd_set(LEVELS[l]) != QL_OK) continue;
        for (size_t th = 0; th < 2; th++) {
            omp_set_num_threads(THREADS[th]);
            matmul_cpu(got, x, w, N);
            for (int64_t i = 0; i < (int64_t)N * rows; i++) {
                double e = fabs((double)got[i] - want[i]);
                CHECKF(e <= bound[i], "%s %s threads=%d: output %lld off by %g, bound %g", desc, LEVELS[l],
                       THREADS[th], (long long)i, e, bound[i]);
                worst = fmax(worst, e / bound[i]), moved = fmax(moved, e);
            }
            if (levels++ == 0) memcpy(first, got, sizeof(float) * (size_t)N * rows);
            else {
                char what[200];
                snprintf(what, sizeof what, "%s %s threads=%d vs the first level", desc, LEVELS[l], THREADS[th]);
                check_close(what, got, first, (int64_t)N * rows, 1e-5, 1e-5);
            }
        }
    }
    CHECKF(moved > 0, "%s: the int8 path gave the exact result: was it taken?", desc);
    fprintf(stderr, "%s: worst error %.3f of the bound (%d level x thread runs)\n", desc, worst, levels);
    // N >= 16 (prompts) is the exact path whatever the setting
    matmul_cpu_simd_set(NULL);
    float *x16 = malloc(sizeof(float) * 16 * (size_t)cols), *a16 = malloc(sizeof(float) * 16 * (size_t)rows),
          *b16 = malloc(sizeof(float) * 16 * (size_t)rows);
    for (int64_t i = 0; i < 16 * cols; i++) x16[i] = test_rand_uniform(seed);
    matmul_cpu(a16, x16, w, 16);
    matmul_cpu_int8_set(0);
    matmul_cpu(b16, x16, w, 16);
    CHECKF(!memcmp(a16, b16, sizeof(float) * 16 * (size_t)rows), "%s: N=16 differs with int8 on", desc);
    free(x16), free(a16), free(b16);
    free(x), free(want), free(got), free(first), free(bound);
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
    const struct { int64_t rows, cols; } I8[] = {{172, 64}, {300, 256}, {33, 128}, {5, 4096}, {1, 64}};
    const int I8N[] = {1, 3, 7, 8, 15};
    for (size_t s = 0; s < sizeof I8 / sizeof *I8; s++)
        for (size_t i = 0; i < sizeof I8N / sizeof *I8N; i++) test_int8(filter, ref, I8[s].rows, I8[s].cols, I8N[i], &seed);
    CHECK(matmul_cpu_int8() == 0);  // left off
    ops_delete(ref);
    return test_finish("test_matmul_cpu");
}
