// grad_cpu.h: the CPU backend's training ops (contracts in kernels/ops.h):
// OpenMP over rows / (token, head) pairs for the element-wise ops and
// attention, OpenBLAS sgemm for the input gradient of frozen linears (tiles of
// W dequantized to fp32 on the fly) and for the LoRA matmuls.
#ifndef QL_GRAD_CPU_H
#define QL_GRAD_CPU_H

#include "../ops.h"

void cpu_rmsnorm_backward(ops *o, float *dx, float *dw, const float *dy, const float *x, const float *w, int N, int C,
                          float eps);
void cpu_rope_backward(ops *o, float *dx, const int *pos, int N, int H, int D, const float *inv_freq);
void cpu_attention_train(ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                         const int *seg_start, int N, int H, int Hkv, int D);
void cpu_attention_backward(ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *out, const float *lse, const int *seg_start, int N, int H,
                            int Hkv, int D);
void cpu_swiglu_backward(ops *o, float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                         int n);
void cpu_matmul_backward_input(ops *o, float *dx, const float *dy, const qweight *w, int N, int accumulate);
void cpu_cross_entropy(ops *o, float *loss, float *dlogits, const float *logits, const int *targets, int N, int V,
                       float scale);
void cpu_lora_forward(ops *o, float *y, float *xa, const float *x, const float *A, const float *B, int N, int in,
                      int out, int R, float scaling);
void cpu_lora_backward(ops *o, float *dA, float *dB, float *dx, float *dxa, const float *dy, const float *x,
                       const float *xa, const float *A, const float *B, int N, int in, int out, int R, float scaling);

// Bytes of the temporaries these ops take during one call (malloc'd and freed
// inside it), for the memory plan of a training run (train/plan.c):
// attention_backward over N tokens and H heads with a team of nth threads (the
// forward takes less), and matmul_backward_input of a weight (rows, cols) of type.
size_t cpu_attention_scratch_bytes(int N, int H, int nth);
size_t cpu_matmul_backward_scratch_bytes(dtype type, int64_t rows, int64_t cols);

// Vectorized helpers (also used by the inference attention in ops_cpu.c); short
// vectors stay inline, where a call through the run-time dispatch costs more than it saves.
float vec_dot_simd(const float *a, const float *b, int D);
void vec_axpy_simd(float *y, float a, const float *x, int D);
static inline float vec_dot(const float *a, const float *b, int D) {
    if (D >= 32) return vec_dot_simd(a, b, D);
    float s = 0;
    for (int i = 0; i < D; i++) s += a[i] * b[i];
    return s;
}
static inline void vec_axpy(float *y, float a, const float *x, int D) {
    if (D >= 32) { vec_axpy_simd(y, a, x, D); return; }
    for (int i = 0; i < D; i++) y[i] += a * x[i];
}

#endif
