// matmul_cpu.h: the CPU matmul for every frozen weight type (F32, F16, BF16, NF4).
//
//   out (N,rows) = x (N,cols) @ W^T          W (rows=out, cols=in), a qweight
//
// N < 16 (decoding, small batches): GEMV kernels that read W once per call
// (x in groups of <= 7 vectors against each cached chunk of rows); NF4 with
// cols % 64 == 0 is decoded in registers and never materialized.
// N >= 16 (prompts, batches, eval): tiles of W are dequantized to fp32 in a
// per-thread buffer and multiplied by OpenBLAS sgemm; F32 goes to sgemm as is.
//
// Threads: OpenMP over output rows with omp_get_max_threads() threads (the
// caller sets omp_set_num_threads). While the sgemm path runs, OpenBLAS is set
// to one thread (each OpenMP thread calls it on its own tiles) and its previous
// thread count is restored afterwards; do not run two matmul_cpu calls at once
// from threads that OpenMP does not know about.
//
// SIMD: chosen at run time from the CPU (avx512 > avx2 > generic C); the
// environment variable QLORA_SIMD=generic|avx2|avx512 forces a level.
#ifndef QL_MATMUL_CPU_H
#define QL_MATMUL_CPU_H

#include <stdint.h>

#include "../ops.h"

// N below this goes to the GEMV kernels. Their results are the same bits for any
// thread count (each output is one thread's sum in a fixed order); the sgemm path's
// are not (OpenBLAS sums a column by a kernel that depends on where it falls in
// the call, and the tiles follow the thread count).
#define MATMUL_GEMM_MIN_N 16

// out (N,rows) = x (N,cols) @ W^T, all fp32 row-major; out must not alias x.
void matmul_cpu(float *out, const float *x, const qweight *w, int N);

// out[n*ostride + i] = W[i,:] . x[n,:] for the nrows rows of W at w (row-major,
// type F32, F16 or BF16: converted as read, fp32 sums) and N vectors x (N,cols):
// the GEMV kernels on the calling thread alone, for callers that do their own
// threading (the LoRA ops of a resident adapter). Safe to call from several threads.
void matmul_cpu_dense_st(float *out, int64_t ostride, const void *w, dtype type, int64_t nrows, int64_t cols,
                         const float *x, int N);

// Decoding matmuls (N < 16) of NF4 weights whose rows are whole 64-blocks in
// int8, as llama.cpp's quantized dot products do: opt-in (QLORA_MATMUL=int8 in
// the environment, or matmul_cpu_int8_set(1)); the default is exact fp32. Each
// 64-block of x is quantized to int8 (d = max|x| / 127, q = round(x / d)), the
// NF4 values are taken as round(127 v) (NF4_Q8; at most 0.00367 from v), and
// each block's integer dot product is scaled by absmax / 127 * d. Per output,
//   |y - y_exact| <= sum over blocks b of absmax_b * (0.00367 * sum_b |x| + 32 * d_b)
// plus fp32 rounding (tests/test_matmul_cpu.c checks it). Prompts (N >= 16) and
// every other weight type stay exact.
int matmul_cpu_int8(void);
void matmul_cpu_int8_set(int on);

// Rows [row0, row0+nrows) of W as fp32: out (nrows, cols). Exact (bit-identical
// to nf4_dequantize / the dtype.h conversions) for every weight type, not only
// NF4 (a row of an NF4 weight may start mid-block or mid-byte). Single-threaded;
// safe to call from several threads at once.
void nf4_dequantize_rows(float *out, const qweight *w, int64_t row0, int64_t nrows);

// Bytes of the temporaries matmul_cpu takes during one call (malloc'd and freed
// inside it) for a weight (rows, cols) of type, N vectors and a team of nth
// threads, for the memory plan of a training run (train/plan.c).
size_t matmul_cpu_scratch_bytes(dtype type, int64_t rows, int64_t cols, int N, int nth);

// The SIMD level in use: "generic", "avx2" or "avx512".
const char *matmul_cpu_simd(void);

// Force a SIMD level ("generic", "avx2", "avx512"), or NULL / "auto" for the
// default (QLORA_SIMD, else the best the CPU has). Returns QL_OK, QL_EINVAL for
// an unknown name or QL_EUNSUP when this CPU lacks the instructions. For tests
// and benchmarks; not to be called while a matmul is running.
int matmul_cpu_simd_set(const char *name);

#endif
