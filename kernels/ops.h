// ops.h: the ops interface. The model is written once, against this table of
// function pointers; each backend (kernels/cpu, kernels/cuda) fills one in.
// kernels/ref holds the plain-C reference of every op, always compiled, that
// the tests hold each backend to.
//
// Letters (docs/conventions.md): N tokens in a call, C channels (hidden size),
// H heads, Hkv key/value heads, D head dim, T positions in the KV cache,
// V vocabulary. All activations are fp32, row-major, in backend memory.
// Weights are (out,in) = (rows,cols) row-major, as in Hugging Face checkpoints.
#ifndef QL_OPS_H
#define QL_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "../common/dtype.h"
#include "nf4.h"

// A frozen weight matrix, W (rows=out, cols=in), in any base dtype.
typedef struct {
    dtype type;          // DT_F32, DT_F16, DT_BF16 or DT_NF4
    int64_t rows, cols;  // (out, in)
    const void *data;    // F32/F16/BF16: rows*cols elements (host)
    nf4_data nf4;        // DT_NF4 only (host)
    void *dev;           // backend-private copy (CUDA); NULL on the CPU
} qweight;

typedef struct ops ops;
struct ops {
    const char *name;  // "ref", "cpu", "cuda"
    void *ctx;         // backend state

    // Memory for activations and caches. alloc returns zeroed memory or NULL.
    void *(*alloc)(ops *o, size_t bytes);
    void (*free)(ops *o, void *p);  // free(NULL) is a no-op
    void (*to_device)(ops *o, void *dst, const void *src_host, size_t bytes);
    void (*to_host)(ops *o, void *dst_host, const void *src, size_t bytes);
    // Make w usable by this backend (upload for CUDA; no-op on the CPU). Returns QL_OK or an error.
    int (*weight_upload)(ops *o, qweight *w);
    void (*weight_release)(ops *o, qweight *w);
    void (*sync)(ops *o);
    void (*destroy)(ops *o);  // frees the backend itself; called by ops_delete

    // out (N,C) = rows tokens[i] of table (V,C); tokens on the host
    void (*embed)(ops *o, float *out, const qweight *table, const int *tokens, int N);
    // out (N,C) = x * rsqrt(mean(x^2) + eps) * w; w (C) fp32 on the device
    void (*rmsnorm)(ops *o, float *out, const float *x, const float *w, int N, int C, float eps);
    // out (N,rows) = x (N,cols) @ W^T
    void (*matmul)(ops *o, float *out, const float *x, const qweight *w, int N);
    // x (N,H,D) rotated in place, Hugging Face rotate_half convention:
    // pairs (i, i+D/2) by angle pos[n]*inv_freq[i]; pos (N) and inv_freq (D/2) on the host
    void (*rope)(ops *o, float *x, const int *pos, int N, int H, int D, const float *inv_freq);
    // Causal grouped-query attention for one sequence.
    // q (N,H,D) holds positions T0..T0+N-1; k, v (T0+N,Hkv,D) hold positions 0..T0+N-1;
    // out (N,H,D). Query head h reads kv head h/(H/Hkv). Scale 1/sqrt(D).
    void (*attention)(ops *o, float *out, const float *q, const float *k, const float *v,
                      int N, int T0, int H, int Hkv, int D);
    // out (n) = silu(gate) * up
    void (*swiglu)(ops *o, float *out, const float *gate, const float *up, int n);
    // y (n) += x (n)
    void (*add)(ops *o, float *y, const float *x, int n);
};

// Backends. Each returns NULL (with ql_errmsg set) when unavailable.
ops *ops_ref_new(void);   // kernels/ref: plain C, single thread, the reference
ops *ops_cpu_new(int n_threads);   // kernels/cpu: SIMD + OpenMP + BLAS; n_threads <= 0: all cores
ops *ops_cuda_new(int device);     // kernels/cuda; NULL when built without CUDA or no GPU
void ops_delete(ops *o);
// By name: "auto" (CUDA when a GPU is present, else CPU), "cpu", "cuda", "ref".
ops *ops_new(const char *name, int n_threads);

// Element (r,c) of any weight as fp32, exact (reference path; slow).
float qweight_get(const qweight *w, int64_t r, int64_t c);
// Bytes of a weight's storage in memory.
size_t qweight_bytes(const qweight *w);

#endif
