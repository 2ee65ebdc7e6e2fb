// trainer.h: one training micro-batch through the frozen base with LoRA:
// forward with saved activations, cross-entropy, and backward into the
// adapter's gradients only. Written once against the ops interface.
//
// A micro-batch is N = B*T tokens laid out as B packed rows of T
// (datasets/dataset.h ds_batch): tokens, targets (-1 = not trained), positions
// restarting at 0 for each packed sample, and segment ids (-1 = padding).
#ifndef QL_TRAINER_H
#define QL_TRAINER_H

#include <stdint.h>

#include "../model/model.h"
#include "../model/lora.h"
#include "optim.h"

// Activations of one block, (N, ...) in backend memory.
typedef struct {
    float *x_in;           // (N,C) the block's input (the residual stream)
    float *xn1, *xn2;      // (N,C) rmsnorm outputs
    float *q, *k, *v;      // (N,H*D), (N,Hkv*D) x2, after RoPE for q and k
    float *att, *lse;      // (N,H*D), (N,H)
    float *x_mid;          // (N,C) after the attention residual
    float *gate, *up;      // (N,F)
    float *hact;           // (N,F) silu(gate)*up
    float *xa[LORA_NMODULES];    // (N,R) x A^T of each targeted module
    float *xdrop[LORA_NMODULES]; // (N,in) the adapter's dropped-out input (dropout > 0 only)
} block_acts;

typedef struct {
    model *m;
    ops *o;
    lora_adapter *a;
    int B, T, N;           // rows, tokens per row, N = B*T tokens per micro-batch
    int checkpoint;        // recompute block activations in backward (--grad-checkpoint)
    block_acts *acts;      // [L] (or [1] when checkpointing)
    float **x_saved;       // [L] block inputs when checkpointing
    float *x_final, *xn_final, *logits, *loss_tok;  // (N,C) x2, (N,V), (N)
    // gradients and scratch
    float *dx, *dmid, *dxn, *dh, *dgate, *dup, *datt, *dq, *dk, *dv, *dxa, *tmp;
    // The adapter's trainable state, each one flat fp32 array in backend memory, in
    // the order module i = l*7+k of every targeted module: A (R,in), then B (out,R).
    int64_t n_params;
    float *params, *grads, *adam_m, *adam_v;  // (n_params) weights, gradients, AdamW moments
    lora_pair *w;          // [L*7] the adapter's pairs with A/B in params (A NULL: not targeted)
    float **dA, **dB;      // [L*7] into grads: (R,in), (out,R) accumulated over micro-batches
    float **norms;         // [2L+1] backend copies: attn_norm, ffn_norm per layer, then final
    float *inv_freq;       // host (D/2)
    int *pos, *seg_start, *targets;  // host (N)
    uint64_t dropout_seed;
} trainer;

int trainer_init(trainer *t, model *m, ops *o, lora_adapter *a, int B, int T, int grad_checkpoint);
void trainer_free(trainer *t);
void trainer_zero_grads(trainer *t);
// One micro-batch: forward, loss, backward. tokens/targets/pos/seg (N) on the host.
// Gradients of scale * sum(NLL over trained tokens) accumulate into dA/dB;
// *nll_sum receives sum(NLL) (unscaled), *n_trained the trained tokens.
// dropout_key makes the dropout masks reproducible (step and micro-batch).
int trainer_step(trainer *t, const int *tokens, const int *targets, const int *pos, const int *seg, float scale,
                 uint64_t dropout_key, double *nll_sum, long *n_trained);
// Loss only (validation): sum of NLL and trained tokens, no gradients.
int trainer_eval(trainer *t, const int *tokens, const int *targets, const int *pos, const int *seg, double *nll_sum,
                 long *n_trained);

// The host adapter a and the trainer's copy in backend memory: trainer_init copies
// a in (and zeroes gradients and moments); train_update changes only the copy.
// trainer_pull copies the weights back to a (before saving it); trainer_push copies a
// in again (after changing it on the host).
void trainer_pull(trainer *t);
void trainer_push(trainer *t);
// Checkpoints: weights and AdamW moments as flat host arrays of n_params floats
// (the order above). trainer_set_state also updates a.
void trainer_get_state(trainer *t, float *w, float *m, float *v);
void trainer_set_state(trainer *t, const float *w, const float *m, const float *v);
// Optimizer step after the micro-batches of one step, on the backend: global-norm
// clipping (clip = min(1, max_norm / (norm + 1e-6)), as PyTorch's clip_grad_norm_),
// AdamW with step (1-based) and lr. Returns the gradient norm before clipping.
double train_update(trainer *t, const adamw_config *c, int step, float lr);

#endif
