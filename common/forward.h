// forward.h: the Llama forward pass, written once against the ops interface
// (kernels/ops.h), with a KV cache. The same code runs on every backend.
#ifndef QL_FORWARD_H
#define QL_FORWARD_H

#include "../kernels/ops.h"
#include "../train/lora.h"
#include "model.h"

typedef struct {
    model *m;
    ops *o;
    int max_T;             // KV cache capacity (positions)
    int max_N;             // tokens per call
    float **k_cache;       // [L] (max_T, Hkv*D) backend memory
    float **v_cache;       // [L] (max_T, Hkv*D)
    float *x, *xb, *xb2;   // (max_N, C) residual stream and scratch
    float *q, *att;        // (max_N, H*D)
    float *hb, *hb2;       // (max_N, F)
    float *logits;         // (max_N, V)
    float **norms;         // [2L+1] backend copies: attn_norm, ffn_norm per layer, then final
    float *inv_freq;       // host (D/2)
    int *pos;              // host (max_N)
    const lora_adapter *lora;  // applied when not NULL (fwd_set_adapter)
    float *xa;             // (max_N, R) LoRA scratch
} fwd_state;

// Makes m usable by backend o: uploads every frozen weight and copies the norm
// weights into backend memory, *norms (2L+1): attn_norm and ffn_norm of each layer,
// then the final norm. model_release undoes it (and frees *norms).
int model_upload(model *m, ops *o, float ***norms);
void model_release(model *m, ops *o, float ***norms);

// Uploads the weights to the backend and allocates the cache and scratch.
int fwd_init(fwd_state *s, model *m, ops *o, int max_T, int max_N);
void fwd_free(fwd_state *s);
// Apply adapter a (NULL: none) from the next call on: every targeted linear
// becomes y = x W^T + scaling * (x A^T) B^T. a's weights must be in backend
// memory (host memory for the CPU backends) and outlive its use.
int fwd_set_adapter(fwd_state *s, const lora_adapter *a);
// Run tokens (N, host) at positions T0..T0+N-1 of the one sequence in the cache.
// logits (host): (N,V) when all_logits, else (1,V) for the last token.
int fwd_forward(fwd_state *s, float *logits, const int *tokens, int N, int T0, int all_logits);

#endif
