// grad_ref.h: the plain-C reference of the training ops in kernels/ops.h.
//
// Each op is written once, in fp64 (the ref64_* functions: forward and
// backward), so that tests/test_grad.c can check every backward against
// central finite differences of the very same forward. The ref_* functions are
// the fp32 entries of the "ref" ops table: they convert to double, call the
// ref64_* function and round the results once.
//
// Shapes and overwrite (=) / accumulate (+=) rules are those of kernels/ops.h;
// W below is a dense (rows,cols) matrix in fp64.
#ifndef QL_GRAD_REF_H
#define QL_GRAD_REF_H

#include "../ops.h"

// ---- fp64 reference ----
// out (N,C) = x * rsqrt(mean(x^2) + eps) * w
void ref64_rmsnorm(double *out, const double *x, const double *w, int N, int C, double eps);
// dx (N,C) +=, dw (C) += (dw may be NULL)
void ref64_rmsnorm_backward(double *dx, double *dw, const double *dy, const double *x, const double *w, int N, int C,
                            double eps);
// x (N,H,D) rotated in place by +angle (inverse = 0: rope) or -angle (inverse = 1: its backward);
// angle = pos[n] * inv_freq[i] for the pair (i, i+D/2)
void ref64_rope(double *x, const int *pos, int N, int H, int D, const double *inv_freq, int inverse);
// out (N,H,D) =, lse (N,H) =; k, v (N,Hkv,D); token n attends to [seg_start[n], n]
void ref64_attention_train(double *out, double *lse, const double *q, const double *k, const double *v,
                           const int *seg_start, int N, int H, int Hkv, int D);
// dq (N,H,D) =, dk, dv (N,Hkv,D) =
void ref64_attention_backward(double *dq, double *dk, double *dv, const double *dout, const double *q, const double *k,
                              const double *v, const double *out, const double *lse, const int *seg_start, int N,
                              int H, int Hkv, int D);
// out (n) = silu(gate) * up
void ref64_swiglu(double *out, const double *gate, const double *up, int n);
// dgate (n) =, dup (n) =
void ref64_swiglu_backward(double *dgate, double *dup, const double *dout, const double *gate, const double *up,
                           int n);
// out (N,rows) = x (N,cols) @ W^T, W (rows,cols)
void ref64_matmul(double *out, const double *x, const double *W, int N, int rows, int cols);
// dx (N,cols) = dy (N,rows) @ W, or += when accumulate
void ref64_matmul_backward_input(double *dx, const double *dy, const double *W, int N, int rows, int cols,
                                 int accumulate);
// loss (N) =, dlogits (N,V) = (may be NULL; must not alias logits here)
void ref64_cross_entropy(double *loss, double *dlogits, const double *logits, const int *targets, int N, int V,
                         double scale);
// xa (N,R) = x @ A^T; y (N,out) += scaling * xa @ B^T
void ref64_lora_forward(double *y, double *xa, const double *x, const double *A, const double *B, int N, int in,
                        int out, int R, double scaling);
// dxa (N,R) =, dA (R,in) +=, dB (out,R) +=, dx (N,in) += (dx may be NULL)
void ref64_lora_backward(double *dA, double *dB, double *dx, double *dxa, const double *dy, const double *x,
                         const double *xa, const double *A, const double *B, int N, int in, int out, int R,
                         double scaling);

// ---- fp32 entries of the "ref" ops table (contracts in kernels/ops.h) ----
// forwards that share their fp64 maths with the backwards above
void ref_rmsnorm(ops *o, float *out, const float *x, const float *w, int N, int C, float eps);
void ref_rope(ops *o, float *x, const int *pos, int N, int H, int D, const float *inv_freq);
void ref_swiglu(ops *o, float *out, const float *gate, const float *up, int n);
void ref_rmsnorm_backward(ops *o, float *dx, float *dw, const float *dy, const float *x, const float *w, int N, int C,
                          float eps);
void ref_rope_backward(ops *o, float *dx, const int *pos, int N, int H, int D, const float *inv_freq);
void ref_attention_train(ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                         const int *seg_start, int N, int H, int Hkv, int D);
void ref_attention_backward(ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *out, const float *lse, const int *seg_start, int N, int H,
                            int Hkv, int D);
void ref_swiglu_backward(ops *o, float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                         int n);
void ref_matmul_backward_input(ops *o, float *dx, const float *dy, const qweight *w, int N, int accumulate);
void ref_cross_entropy(ops *o, float *loss, float *dlogits, const float *logits, const int *targets, int N, int V,
                       float scale);
void ref_lora_forward(ops *o, float *y, float *xa, const float *x, const float *A, const float *B, int N, int in,
                      int out, int R, float scaling);
void ref_lora_backward(ops *o, float *dA, float *dB, float *dx, float *dxa, const float *dy, const float *x,
                       const float *xa, const float *A, const float *B, int N, int in, int out, int R, float scaling);

#endif
