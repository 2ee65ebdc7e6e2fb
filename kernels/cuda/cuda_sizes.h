// cuda_sizes.h: how much device memory the CUDA backend takes for itself
// besides what callers allocate: the padding of uploaded weights, the
// dequantization tiles, the growth rules of its scratch buffers. Plain C with no
// CUDA header, so that the memory planner (train/plan.c) computes the same
// numbers on a machine without CUDA or a GPU; the .cu files size their buffers
// with these same functions, so the two cannot drift apart.
#ifndef QL_CUDA_SIZES_H
#define QL_CUDA_SIZES_H

#include <stddef.h>
#include <stdint.h>

#include "../../common/dtype.h"

#define CUDA_TILE_BUDGET_DEFAULT ((size_t)64 << 20)  // bytes of one dequantized tile (QLORA_CUDA_TILE_BYTES)
#define CUDA_ARGS_INITIAL ((size_t)1 << 20)  // the per-call argument buffer, reserved when the backend starts
#define CUDA_ARGS_ALIGN 256                  // offsets inside the argument buffer
#define CUDA_NF4_TABLES_LEN (16 + 256)       // NF4_TABLE then NF4_CODE8, as one device array of floats
#define CUDA_SUMSQ_THREADS 256
#define CUDA_SUMSQ_MAX_BLOCKS 1024           // fixed by n alone, so the summation order is too

// Device bytes of one array of `bytes` uploaded by weight_upload: rounded up to a
// multiple of 16 (16-byte loads never run past the end), at least 16.
static inline size_t cuda_upload_bytes(size_t bytes) {
    size_t padded = (bytes + 15) / 16 * 16;
    return padded ? padded : 16;
}

// Rows of W (rows, cols) per dequantized tile of esz bytes per element within
// `budget` bytes: a multiple of 64 when at least 64 fit (tile offsets in the output
// stay aligned for cuBLAS), at least 1, at most rows.
static inline int64_t cuda_tile_rows(size_t budget, int64_t rows, int64_t cols, size_t esz) {
    int64_t tr = (int64_t)(budget / ((size_t)cols * esz));
    if (tr >= 64) tr = tr / 64 * 64;
    if (tr < 1) tr = 1;
    if (tr > rows) tr = rows;
    return tr;
}

// Bytes per element of the forward matmul's dequantized tile of a weight of this
// type (tensor cores, N > OPS_CUDA_GEMV_MAX_N): fp16 for NF4, fp32 for BF16 on GPUs
// without bf16 tensor cores (compute capability major < 8); 0 when cuBLAS reads
// the weight as stored (F32, F16, BF16 from sm_80).
static inline size_t cuda_fwd_tile_esz(dtype type, int cc_major) {
    if (type == DT_NF4) return 2;
    if (type == DT_BF16 && cc_major < 8) return 4;
    return 0;
}

// Partial sums (blocks) of sumsq over n values.
static inline int cuda_sumsq_blocks(int64_t n) {
    const int64_t want = (n + CUDA_SUMSQ_THREADS - 1) / CUDA_SUMSQ_THREADS;
    return (int)(want < CUDA_SUMSQ_MAX_BLOCKS ? want : CUDA_SUMSQ_MAX_BLOCKS);
}

// Bytes one argument upload of a piece of `bytes` takes in the argument buffer.
static inline size_t cuda_args_piece(size_t bytes) {
    return (bytes + CUDA_ARGS_ALIGN - 1) / CUDA_ARGS_ALIGN * CUDA_ARGS_ALIGN;
}

#endif
