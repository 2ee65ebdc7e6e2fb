// cuda_common.cuh: what every .cu file of the CUDA backend shares: the *Check
// helpers, the backend context, the device copy of a frozen weight, and small
// device helpers (reductions, NF4 decoding). Private to kernels/cuda; the
// public face of the backend is ops_cuda_new in kernels/ops.h (plain C).
//
// Errors. Functions that return a status (ops_cuda_new, weight_upload) use
// cudaCheck/cublasCheck: on failure they set ql_err(QL_EDEVICE,
// "file:line: statement: error") and return QL_EDEVICE. The compute ops of
// ops.h return void, so they have no status channel: a failure there (a bad
// launch, a faulting kernel, out of device memory for scratch) is fatal and
// uses the *CheckAbort forms, which log file:line and the statement, then
// abort(). Nothing here calls exit().
//
// Debug switch: QLORA_CUDA_SYNC=1 in the environment (read by ops_cuda_new)
// synchronizes the stream after every launch and cuBLAS call, so an illegal
// address is reported at the launch that caused it.
#ifndef QL_CUDA_COMMON_CUH
#define QL_CUDA_COMMON_CUH

// The C headers are included before the extern "C" block so that libstdc++'s
// wrappers of them never end up with C linkage.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

extern "C" {
#include "../../common/err.h"
#include "../../common/log.h"
#include "../ops.h"
#include "cuda_sizes.h"
}

// ---- check helpers ----

// Logs "file:line: what: msg" and aborts. For the void ops, which cannot return a status.
[[noreturn]] void cuda_fatal(const char *file, int line, const char *what, const char *msg);

// In a function returning an ql status: set ql_err and return QL_EDEVICE.
#define cudaCheck(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    cudaGetLastError(); /* clear a non-sticky error so later checks do not see it */ \
    return ql_err(QL_EDEVICE, "%s:%d: %s: %s (%s)", __FILE__, __LINE__, #call, \
                  cudaGetErrorString(e_), cudaGetErrorName(e_)); } } while (0)
#define cublasCheck(call) do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) \
    return ql_err(QL_EDEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call, cublasGetStatusString(s_)); } while (0)

// In a void op: log file:line and abort.
#define cudaCheckAbort(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) \
    cuda_fatal(__FILE__, __LINE__, #call, cudaGetErrorString(e_)); } while (0)
#define cublasCheckAbort(call) do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) \
    cuda_fatal(__FILE__, __LINE__, #call, cublasGetStatusString(s_)); } while (0)

// ---- the backend ----

// A device buffer that only grows (scratch).
typedef struct {
    void *p;
    size_t cap;  // bytes
} cuda_buf;

#define NF4_TABLES_LEN CUDA_NF4_TABLES_LEN  // NF4_TABLE then NF4_CODE8, as one device array (cuda_sizes.h)

typedef struct {
    int device;
    cudaDeviceProp prop;
    cudaStream_t stream;        // every op is queued here; cuBLAS and cuRAND are bound to it
    cublasHandle_t blas;
    float *nf4_tables;          // device (NF4_TABLES_LEN): uploaded once, staged into shared memory by kernels
    cuda_buf tile;              // weight rows dequantized to fp16/fp32 for the tensor-core matmul
    cuda_buf xconv;             // activations converted to fp16/bf16 for the tensor-core matmul
    cuda_buf args;              // per-call copies of host arrays (tokens, positions, inv_freq)
    cuda_buf work;              // per-op device workspace (reductions, ...); not kept across ops
    double *sumsq_acc;          // device double for sumsq, with a pinned host twin below
    double *sumsq_host;         // pinned (cudaMallocHost)
    size_t tile_budget;         // bytes of one dequantized tile (env QLORA_CUDA_TILE_BYTES, default CUDA_TILE_BUDGET_DEFAULT)
    int sync_debug;             // QLORA_CUDA_SYNC=1
} cuda_ctx;

// The device copy of a qweight (qweight.dev). Passed to kernels by value.
typedef struct {
    dtype type;
    int64_t rows, cols;          // (out, in)
    const void *data;            // F32/F16/BF16: (rows, cols) row-major
    const uint8_t *codes;        // NF4: (rows*cols+1)/2 bytes, padded with zeros to a multiple of 16
    const uint8_t *absmax_q;     // NF4: nf4_nblocks(rows*cols)
    const float *absmax_scale;   // NF4: nf4_ngroups(rows*cols)
    float absmax_offset;         // NF4
} cuda_weight;

static inline cuda_ctx *cuda_ctx_of(ops *o) { return (cuda_ctx *)o->ctx; }

// After a launch: a bad configuration is fatal at once; with sync_debug a fault
// inside the kernel is too.
void cuda_launch_check(cuda_ctx *c, const char *file, int line);
#define cudaLaunchCheck(c) cuda_launch_check((c), __FILE__, __LINE__)

// Makes b at least `bytes` large (contents are lost when it grows). Returns QL_OK
// or QL_ENOMEM with ql_err set. The Abort form is for the void ops.
int cuda_buf_reserve(cuda_buf *b, size_t bytes, const char *what);
void *cuda_buf_reserve_abort(cuda_buf *b, size_t bytes, const char *what, const char *file, int line);

// Dequantized-tile geometry of the tensor-core matmul, shared by weight_upload
// (which reserves the tile) and matmul (which uses it): rows per tile and
// bytes per element of the tile; 0 rows when the weight needs no tile.
void cuda_matmul_tile_shape(const cuda_ctx *c, const cuda_weight *w, int64_t *rows_per_tile, size_t *elem_bytes);
// Rows per fp32 tile of matmul_backward_input (non-F32 weights), within tile_budget.
int64_t cuda_matmul_bwd_tile_rows(const cuda_ctx *c, const cuda_weight *w);

// The ops implemented outside ops_cuda.cu; contracts in kernels/ops.h.
// matmul_cuda.cu
void cuda_matmul(ops *o, float *out, const float *x, const qweight *w, int N);
void cuda_matmul_backward_input(ops *o, float *dx, const float *dy, const qweight *w, int N, int accumulate);
// attention_cuda.cu: inference and training attention share one forward kernel
void cuda_attention(ops *o, float *out, const float *q, const float *k, const float *v, int N, int T0, int H,
                    int Hkv, int D);
void cuda_attention_train(ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                          const int *seg_start, int N, int H, int Hkv, int D);
void cuda_attention_backward(ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q,
                             const float *k, const float *v, const float *out, const float *lse, const int *seg_start,
                             int N, int H, int Hkv, int D);
// grad_cuda.cu: the element-wise and per-row training ops and the optimizer
void cuda_rmsnorm_backward(ops *o, float *dx, float *dw, const float *dy, const float *x, const float *w, int N, int C,
                           float eps);
void cuda_rope_backward(ops *o, float *dx, const int *pos, int N, int H, int D, const float *inv_freq);
void cuda_swiglu_backward(ops *o, float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                          int n);
void cuda_cross_entropy(ops *o, float *loss, float *dlogits, const float *logits, const int *targets, int N, int V,
                        float scale);
void cuda_dropout(ops *o, float *out, const float *x, int64_t n, float p, uint64_t key);
double cuda_sumsq(ops *o, const float *x, int64_t n);
void cuda_adamw(ops *o, float *p, const float *g, float *m, float *v, int64_t n, const adamw_args *a);
// lora_cuda.cu: LoRA with cuBLAS (training pair, multi-adapter shrink/expand)
void cuda_lora_forward(ops *o, float *y, float *xa, const float *x, const float *A, const float *B, int N, int in,
                       int out, int R, float scaling);
void cuda_lora_backward(ops *o, float *dA, float *dB, float *dx, float *dxa, const float *dy, const float *x,
                        const float *xa, const float *A, const float *B, int N, int in, int out, int R, float scaling);
void cuda_lora_shrink(ops *o, float *xa, const float *x, const lora_seg *seg, int nseg, int in);
void cuda_lora_expand(ops *o, float *y, const float *xa, const lora_seg *seg, int nseg, int out);

// Copies n host arrays (src[i], bytes[i]) into the backend's per-call argument
// buffer (stream-ordered, so a later call cannot overwrite what an earlier kernel
// still reads) and returns their device addresses in dst[i]. For host arrays an op
// receives (positions, targets, seg_start, ...). Aborts when out of device memory.
void cuda_upload_args(cuda_ctx *c, int n, const void *const *src, const size_t *bytes, void **dst);

// ---- device helpers ----

template <typename T> __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, m));
    return v;
}

// Sum (or max) over a 1-D block whose size is a multiple of 32; every thread gets
// the result. s_red: shared, >= 32 elements of T. Contains the barriers that make
// the caller's earlier shared-memory writes visible, and may be called back to back.
// block_sum in double keeps exact sums of squares and probabilities (grad_cuda.cu).
template <typename T> __device__ __forceinline__ T block_sum(T v, T *s_red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) s_red[warp] = v;
    __syncthreads();
    T r = s_red[0];
    for (int i = 1; i < nwarps; i++) r += s_red[i];
    __syncthreads();
    return r;
}

__device__ __forceinline__ float block_max(float v, float *s_red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) s_red[warp] = v;
    __syncthreads();
    float r = s_red[0];
    for (int i = 1; i < nwarps; i++) r = fmaxf(r, s_red[i]);
    __syncthreads();
    return r;
}

// Dequantized absmax of one 64-block (nf4.h): NF4_CODE8[q8]*scale2 + offset in
// fp32 without a fused multiply-add, bit-exact with nf4.c. code8: NF4_CODE8.
__device__ __forceinline__ float nf4_block_absmax(const float *code8, uint8_t q8, float scale2, float offset) {
    return __fadd_rn(__fmul_rn(code8[q8], scale2), offset);
}

// The 8 NF4 values coded in a little-endian 32-bit word of codes, element order:
// t[k] = s_tab[code of element k]. The nibbles become byte offsets (code*4) four
// at a time, then one byte-permute per element picks its offset: 1.5 integer
// ops per element instead of a shift, a mask and an address add.
__device__ __forceinline__ void nf4_lookup8(uint32_t word, const float *s_tab, float *t) {
    const uint32_t hi = (word >> 2) & 0x3C3C3C3Cu;  // byte i: 4 * high nibble of byte i (element 2i)
    const uint32_t lo = (word << 2) & 0x3C3C3C3Cu;  // byte i: 4 * low nibble of byte i (element 2i+1)
    const char *base = (const char *)s_tab;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        t[2 * i] = *(const float *)(base + __byte_perm(hi, 0, 0x4440 + i));
        t[2 * i + 1] = *(const float *)(base + __byte_perm(lo, 0, 0x4440 + i));
    }
}

__device__ __forceinline__ uint32_t u4_word(const uint4 &v, int s) {
    return s == 0 ? v.x : s == 1 ? v.y : s == 2 ? v.z : v.w;
}

// Element e of the flattened weight as fp32, exact. tables: NF4_TABLES_LEN floats
// (shared memory in the kernels), only read for NF4.
__device__ __forceinline__ float weight_elem(const cuda_weight &w, const float *tables, int64_t e) {
    switch (w.type) {
    case DT_F32: return ((const float *)w.data)[e];
    case DT_F16: return __half2float(__ushort_as_half(((const unsigned short *)w.data)[e]));
    case DT_BF16: return __uint_as_float((uint32_t)((const unsigned short *)w.data)[e] << 16);
    default: {  // DT_NF4
        const uint8_t byte = w.codes[e >> 1];
        const int code = (e & 1) ? (byte & 15) : (byte >> 4);
        const int64_t b = e / NF4_BLOCK;
        const float am = nf4_block_absmax(tables + 16, w.absmax_q[b], w.absmax_scale[b / NF4_BLOCK2], w.absmax_offset);
        return __fmul_rn(tables[code], am);
    }
    }
}

// Copies the NF4 tables from global to shared memory; all threads of the block
// must call it (it ends with a barrier).
__device__ __forceinline__ void nf4_tables_to_shared(float *s_tab, const float *tables) {
    const int tid = threadIdx.x + threadIdx.y * blockDim.x, nthr = blockDim.x * blockDim.y;
    for (int i = tid; i < NF4_TABLES_LEN; i += nthr) s_tab[i] = tables[i];
    __syncthreads();
}

static inline unsigned grid_1d(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

// Blocks of 256 threads for an element-wise grid-stride kernel over n elements:
// one per 256 elements, at most 8 per SM (the rest is the stride loop).
static inline unsigned elementwise_blocks(const cuda_ctx *c, int64_t n) {
    const int64_t cap = (int64_t)c->prop.multiProcessorCount * 8, b = (n + 255) / 256;
    return (unsigned)(b < cap ? b : cap);
}

#endif
