// ops_cuda.h: what the CUDA backend shows beyond kernels/ops.h, for its tests
// and benchmarks. Plain C, no CUDA headers.
#ifndef QL_OPS_CUDA_H
#define QL_OPS_CUDA_H

#include "../ops.h"

// matmul with N <= OPS_CUDA_GEMV_MAX_N tokens runs the fused GEMV kernels (fp32
// weights as stored or dequantized exactly, fp32 x, fp32 accumulation). Above it,
// tensor cores: x is rounded to fp16 (F16 and NF4 weights, NF4 dequantized to
// fp16) or bf16 (BF16 weights), fp32 accumulation; F32 weights use fp32 SGEMM.
#define OPS_CUDA_GEMV_MAX_N 8

// The device memory a backend o ("cuda") can still allocate, and the device's
// total (cudaMemGetInfo), in bytes: what the memory plan of a run is held to
// (train/plan.h). Returns QL_OK, or QL_EDEVICE / QL_EUNSUP (built without CUDA).
int ops_cuda_mem_info(ops *o, size_t *free_bytes /* out */, size_t *total_bytes /* out */);

// The stream every op of a CUDA backend is queued on (a cudaStream_t).
struct CUstream_st;
struct CUstream_st *ops_cuda_stream(ops *o);

#endif
