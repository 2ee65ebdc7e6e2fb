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

// One segment of a multi-adapter batch (lora_shrink, lora_expand): rows
// [row0, row0+n) of x use adapter pair A (rank,in), B (out,rank) in backend memory,
// with factor scale (the adapter's scaling times the user's scale). A and B are
// of types tA and tB: DT_F32, or DT_F16 / DT_BF16 (a resident adapter, read and
// converted as it goes, fp32 sums); a backend without half kernels is given fp32.
typedef struct {
    int row0, n, rank;
    float scale;
    const void *A, *B;
    dtype tA, tB;
} lora_seg;

// One AdamW step's settings (ops adamw). PyTorch's torch.optim.AdamW:
//   g = grad * clip; p *= 1 - lr*weight_decay; m = b1*m + (1-b1)*g;
//   v = b2*v + (1-b2)*g^2; p -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps)
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int step;    // 1-based, for the bias corrections
    float clip;  // gradient multiplier from global-norm clipping; 1 = none
} adamw_args;

// The scalars every backend's adamw uses, computed once on the host the same way
// (bias corrections in double, as PyTorch), so backends differ only in rounding
// inside the element loop.
typedef struct {
    float decay, b1, b2, one_minus_b1, one_minus_b2, step_size, bc2_sqrt, eps, clip;
} adamw_scalars;
adamw_scalars adamw_scalars_of(const adamw_args *a);  // kernels/backend.c

// One parameter's AdamW update: the element loop of the host backends' adamw.
static inline void adamw_elem(float *p, float *m, float *v, float grad, const adamw_scalars *s) {
    float g = grad * s->clip;
    *p *= s->decay;
    *m = s->b1 * *m + s->one_minus_b1 * g;
    *v = s->b2 * *v + s->one_minus_b2 * g * g;
    *p -= s->step_size * *m / (__builtin_sqrtf(*v) / s->bc2_sqrt + s->eps);
}

typedef struct ops ops;
struct ops {
    const char *name;  // "ref", "cpu", "cuda"
    void *ctx;         // backend state
    // 1 when backend memory is plain host memory that callers may read and write
    // directly (cpu): host arrays such as an adapter's weights are used in place.
    // 0 (cuda, and ref on purpose, so the tests run the copies a device needs):
    // callers copy them in with alloc + to_device.
    int host_memory;
    // 1 when lora_shrink / lora_expand read F16 and BF16 segments (ref, cpu); 0:
    // a resident adapter's copy in backend memory is converted to fp32 (cuda).
    int lora_half;

    // Memory for activations and caches. alloc returns zeroed memory or NULL.
    void *(*alloc)(ops *o, size_t bytes);
    void (*free)(ops *o, void *p);  // free(NULL) is a no-op
    void (*to_device)(ops *o, void *dst, const void *src_host, size_t bytes);
    void (*to_host)(ops *o, void *dst_host, const void *src, size_t bytes);
    // Backend memory to backend memory; the ranges must not overlap.
    void (*copy)(ops *o, void *dst, const void *src, size_t bytes);
    // Make w usable by this backend (upload for CUDA; no-op on the CPU). Returns QL_OK or an error.
    int (*weight_upload)(ops *o, qweight *w);
    void (*weight_release)(ops *o, qweight *w);
    void (*sync)(ops *o);
    // Optional (NULL: nothing to do): a forward step over n_tokens rows begins. The
    // CPU backend fits its thread count to the cores other programs leave free, for
    // steps whose results do not depend on it (kernels/cpu/threads_cpu.h).
    void (*step_begin)(ops *o, int n_tokens);
    void (*destroy)(ops *o);  // frees the backend itself; called by ops_delete
    // Zero `bytes` of backend memory at p.
    void (*zero)(ops *o, void *p, size_t bytes);

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

    // ---- Multi-adapter inference (issue 4): LoRA over a batch whose rows use ----
    // different adapters, as shrink then expand (the SGMV split of Punica and vLLM):
    // each segment g (seg[g], host array; segments do not overlap; rows in none get
    // no LoRA term) has its own pair and rank, with no padding to a common rank.
    //   lora_shrink: xa_g (n_g,R_g) = x[rows of g] (n_g,in) @ A_g^T, where xa_g starts
    //                at xa + sum over earlier segments of n*R (packed, in seg order)
    //   lora_expand: y[rows of g] (n_g,out) += scale_g * xa_g @ B_g^T
    // Every backend has them (ref, cpu, cuda); callers still check for NULL.
    void (*lora_shrink)(ops *o, float *xa, const float *x, const lora_seg *seg, int nseg, int in);
    void (*lora_expand)(ops *o, float *y, const float *xa, const lora_seg *seg, int nseg, int out);

    // ---- Training (issue 3): forwards that save state, and backwards ----
    // Letters as above, plus R (LoRA rank). Gradients are fp32 in backend memory.
    // Each op says whether it OVERWRITES its gradient outputs (=) or ACCUMULATES
    // into them (+=). The frozen base gets no weight gradients: only dx flows.
    // Every backend has them (ref, cpu, cuda); trainer_init checks for NULL.

    // Backward of rmsnorm (y = x * r * w, r = rsqrt(mean(x^2) + eps)) given dy (N,C):
    //   dx (N,C) += r * (dy*w - xn * mean(dy*w*xn)),  xn = x*r   (accumulates: the
    //               residual stream's gradient is passed in as dx)
    //   dw (C)   += sum_n dy*xn; dw may be NULL (the base norms are frozen)
    // dx must not alias dy or x.
    void (*rmsnorm_backward)(ops *o, float *dx, float *dw, const float *dy, const float *x, const float *w, int N,
                             int C, float eps);
    // Backward of rope: dx (N,H,D) rotated in place by -angle (same pos, inv_freq).
    void (*rope_backward)(ops *o, float *dx, const int *pos, int N, int H, int D, const float *inv_freq);
    // Causal grouped-query attention over a packed batch, saving what backward needs.
    // q (N,H,D); k, v (N,Hkv,D) (the same N tokens); out (N,H,D) =; lse (N,H) = the
    // natural log-sum-exp of token n's scaled scores (scale 1/sqrt(D)).
    // seg_start (N) on the host: token n attends to tokens [seg_start[n], n] only
    // (0 <= seg_start[n] <= n), so packed samples never see each other; all zeros
    // is plain causal attention (equal to attention() with T0 = 0).
    void (*attention_train)(ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                            const int *seg_start, int N, int H, int Hkv, int D);
    // Backward of attention_train given dout (N,H,D) and its saved out (N,H,D) and lse (N,H):
    // dq (N,H,D) =, dk (N,Hkv,D) =, dv (N,Hkv,D) =; the gradients of a kv head shared by
    // H/Hkv query heads are summed. Outputs must not alias inputs.
    void (*attention_backward)(ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const float *out, const float *lse,
                               const int *seg_start, int N, int H, int Hkv, int D);
    // Backward of swiglu (out = silu(gate) * up) given dout (n): dgate (n) =, dup (n) =.
    // dgate may alias gate and dup may alias up (each element is read before written).
    void (*swiglu_backward)(ops *o, float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                            int n);
    // Input gradient of a frozen linear: dx (N,cols) = dy (N,rows) @ W, or += when
    // accumulate != 0 (q, k, v share their input; so do gate and up). W (rows,cols) in
    // any dtype, NF4 included, dequantized on the fly; no gradient for W.
    void (*matmul_backward_input)(ops *o, float *dx, const float *dy, const qweight *w, int N, int accumulate);
    // Fused log-softmax + negative log-likelihood + its gradient, per token.
    // logits (N,V); targets (N) on the host, < 0 = not trained (prompt, padding).
    // loss (N) = -log softmax(logits[n])[targets[n]], 0 where not trained.
    // dlogits (N,V) = scale * (softmax(logits[n]) - onehot(targets[n])), 0 rows where not
    // trained; the trainer passes scale = 1 / (trained tokens over all accumulated
    // micro-batches). dlogits may be NULL (loss only) or alias logits (in place).
    void (*cross_entropy)(ops *o, float *loss, float *dlogits, const float *logits, const int *targets, int N, int V,
                          float scale);
    // LoRA on a linear of shape (out,in): A (R,in), B (out,R) fp32 master weights.
    // xa (N,R) = x (N,in) @ A^T (saved for backward); y (N,out) += scaling * xa @ B^T.
    // (Dropout on the adapter input is the caller's: pass the dropped-out x.)
    void (*lora_forward)(ops *o, float *y, float *xa, const float *x, const float *A, const float *B, int N, int in,
                         int out, int R, float scaling);
    // Backward of lora_forward given dy (N,out), its x (N,in) and saved xa (N,R):
    //   dxa (N,R) = scaling * dy @ B            (scratch the caller provides)
    //   dB (out,R) += scaling * dy^T @ xa,  dA (R,in) += dxa^T @ x   (accumulate over micro-batches)
    //   dx (N,in) += dxa @ A   (the LoRA part of the input gradient); dx may be NULL.
    void (*lora_backward)(ops *o, float *dA, float *dB, float *dx, float *dxa, const float *dy, const float *x,
                          const float *xa, const float *A, const float *B, int N, int in, int out, int R,
                          float scaling);
    // Inverted dropout with a reproducible mask: out (n) = x * keep_i / (1-p), keep_i = 0 with
    // probability p, drawn from dropout_keep(key, i). The same call on a gradient is its
    // backward. out may alias x.
    void (*dropout)(ops *o, float *out, const float *x, int64_t n, float p, uint64_t key);

    // ---- Optimizer (issue 6): the trainer keeps every LoRA weight, gradient and ----
    // moment in one flat fp32 array each, in backend memory, so a step is two calls.
    // Sum of x[i]^2 over n, accumulated in double (waits for the backend; returns on the host).
    double (*sumsq)(ops *o, const float *x, int64_t n);
    // One AdamW step (adamw_args) over n parameters p with gradients g and moments m, v
    // (all updated in place but g).
    void (*adamw)(ops *o, float *p, const float *g, float *m, float *v, int64_t n, const adamw_args *a);
};

// The dropout mask bit for element i under key: 1 (keep) with probability 1-p.
// A counter-based hash (splitmix64 of key and i), so any backend draws the same mask.
static inline int dropout_keep(uint64_t key, int64_t i, float p) {
    uint64_t z = key + 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0) >= p;
}

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
// Rows [r0, r0+nr) of a host weight as fp32 (NF4 dequantized), into out (nr*cols).
void qweight_rows_f32(const qweight *w, int64_t r0, int64_t nr, float *out);

#endif
