// matmul_kernels.h: private to kernels/cpu. One table of inner kernels per SIMD
// level (generic C in matmul_cpu.c, AVX2 in matmul_avx2.c, AVX-512 in
// matmul_avx512.c); matmul_cpu.c picks a table at run time and does the
// threading, tiling and BLAS calls around it.
//
// Every kernel works on a range of whole rows of a weight W (rows,cols)
// row-major and never reads past what it is given. Dequantization and
// conversion are exact (the same fp32 operations as nf4_dequantize and
// common/dtype.h); dot products are not (their summation order differs).
#ifndef QL_MATMUL_KERNELS_H
#define QL_MATMUL_KERNELS_H

#include <stdint.h>

#include "../nf4.h"

// The most x vectors one GEMV kernel call takes (matmul_cpu.c groups larger N).
#define MATMUL_GEMV_MAX_N 7

// FN(args..., NN) with NN = N (1..MATMUL_GEMV_MAX_N) as a compile-time constant,
// so that SIMD kernels written for a constant NN keep their accumulators in registers.
#define MATMUL_SWITCH_N(N, FN, ...)             \
    switch (N) {                                \
    case 1: FN(__VA_ARGS__, 1); break;          \
    case 2: FN(__VA_ARGS__, 2); break;          \
    case 3: FN(__VA_ARGS__, 3); break;          \
    case 4: FN(__VA_ARGS__, 4); break;          \
    case 5: FN(__VA_ARGS__, 5); break;          \
    case 6: FN(__VA_ARGS__, 6); break;          \
    default: FN(__VA_ARGS__, 7); break;         \
    }

// ---- the int8 NF4 GEMV (opt-in: matmul_cpu_int8_set; not exact) ----
// NF4_Q8[c] = round(127 * NF4_TABLE[c]): the table in int8.
extern const int8_t NF4_Q8[16];
// x (N,cols), cols % 64 == 0 -> xq (N,cols) int8 and xd (N,cols/64): per 64-block
// of each row, d = max|x| / 127 and q = round(x / d) (0 for an all-zero block);
// within the block the 32 even elements come first, then the 32 odd ones, which
// line up with the high and the low nibbles of the block's 32 code bytes.
void nf4_quantize_x8(int8_t *xq, float *xd, const float *x, int N, int64_t cols);
// The AVX2 kernel, which the AVX-512 table uses too (NULL-safe only after the
// CPU check of matmul_kernels_avx2).
void gemv_nf4_q8_avx2(float *out, int64_t ostride, const nf4_data *w, int64_t r0, int64_t nrows, int64_t cols,
                      const int8_t *xq, const float *xd, int N);

typedef struct {
    const char *name;  // "generic", "avx2", "avx512"

    // GEMV over nrows rows of W (its first row at w) against N <= MATMUL_GEMV_MAX_N
    // vectors x (N,cols): out[n*ostride + i] = sum_k W[i,k] * x[n,k].
    void (*gemv_f32)(float *out, int64_t ostride, const float *w, int64_t nrows, int64_t cols,
                     const float *x, int N);
    void (*gemv_f16)(float *out, int64_t ostride, const uint16_t *w, int64_t nrows, int64_t cols,
                     const float *x, int N);
    void (*gemv_bf16)(float *out, int64_t ostride, const uint16_t *w, int64_t nrows, int64_t cols,
                      const float *x, int N);

    // Fused NF4 GEMV over rows [r0, r0+nrows) of w, for cols % 64 == 0 (every
    // row is whole 64-blocks). xp is x (N,cols) reordered by nf4_permute_x with
    // this table's xgroup; out as above.
    void (*gemv_nf4)(float *out, int64_t ostride, const nf4_data *w, int64_t r0, int64_t nrows,
                     int64_t cols, const float *xp, int N);
    // Bytes of codes per group in the reordered x layout (0: x is used as is).
    int xgroup;
    // The int8 NF4 GEMV over rows [r0, r0+nrows), cols % 64 == 0, against x
    // quantized by nf4_quantize_x8: per block b, the integer dot product of the
    // codes' NF4_Q8 values with xq, times absmax_b / 127 * xd[n][b], summed in fp32.
    void (*gemv_nf4_q8)(float *out, int64_t ostride, const nf4_data *w, int64_t r0, int64_t nrows, int64_t cols,
                        const int8_t *xq, const float *xd, int N);

    // Dequantize the nblocks full 64-blocks b0.. of w into out (64*nblocks floats). Exact.
    void (*nf4_blocks)(float *out, const nf4_data *w, int64_t b0, int64_t nblocks);
    // Exact conversions of n elements.
    void (*cvt_f16)(float *out, const uint16_t *in, int64_t n);
    void (*cvt_bf16)(float *out, const uint16_t *in, int64_t n);
} matmul_kernels;

// x (N,cols), cols % 64 == 0 -> xp (N,cols): within each group of 2*g elements
// (g bytes of codes), the even elements first, then the odd ones. The high
// nibbles of g code bytes then line up with the first g floats, the low nibbles
// with the next g.
void nf4_permute_x(float *xp, const float *x, int N, int64_t cols, int g);

// NULL when this CPU (or this compiler) lacks the instructions.
const matmul_kernels *matmul_kernels_avx2(void);
const matmul_kernels *matmul_kernels_avx512(void);

#endif
