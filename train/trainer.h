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

// ---- the trainer's buffers in backend memory ----
// Two tables that trainer_init, trainer_free and the memory plan (train/plan.c)
// all walk, so the plan lists what is allocated: X(field, floats) and
// X(field, floats, part), with d a train_dims (sizes in elements) and part the
// plan's line the buffer counts in. Every buffer is fp32.
typedef struct {
    size_t N;                  // tokens of a micro-batch, B*T
    size_t C, F, H, HD, KV, V; // dim, hidden_dim, heads, H*D, Hkv*D, vocabulary
    size_t R;                  // LoRA rank
    size_t WIDE;               // max(C, F, HD): the widest activation row
} train_dims;

train_dims train_dims_of(const model_config *c, int B, int T, int rank);

// One block's activations, kept for its backward (with --grad-checkpoint, one
// block's, recomputed from the block's saved input). Beside them in block_acts:
// x_in (N,C) without checkpointing; per targeted module xa (N,R) and, with
// dropout, xdrop (N,in).
#define BLOCK_ACTS(X, d)                                         \
    X(xn1, (d).N * (d).C)    /* rmsnorm before attention */      \
    X(xn2, (d).N * (d).C)    /* rmsnorm before the MLP */        \
    X(q, (d).N * (d).HD)     /* after RoPE */                    \
    X(k, (d).N * (d).KV)     /* after RoPE */                    \
    X(v, (d).N * (d).KV)                                         \
    X(att, (d).N * (d).HD)   /* attention output */              \
    X(lse, (d).N * (d).H)    /* its log-sum-exp per (n, head) */ \
    X(x_mid, (d).N * (d).C)  /* after the attention residual */  \
    X(gate, (d).N * (d).F)                                       \
    X(up, (d).N * (d).F)                                         \
    X(hact, (d).N * (d).F)   /* silu(gate) * up */

// The head, the loss and the backward's scratch: one of each per trainer.
#define TRAINER_BUFS(X, d)                                                       \
    X(x_final, (d).N * (d).C, "final norm input, output")                      \
    X(xn_final, (d).N * (d).C, "final norm input, output")                     \
    X(logits, (d).N * (d).V, "logits (and their gradient)")                    \
    X(loss_tok, (d).N, "loss per token")                                       \
    X(dx, (d).N * (d).C, "gradient scratch")  /* d(residual stream) */         \
    X(dmid, (d).N * (d).C, "gradient scratch")                                 \
    X(dxn, (d).N * (d).C, "gradient scratch")                                  \
    X(dh, (d).N * (d).F, "gradient scratch")                                   \
    X(dgate, (d).N * (d).F, "gradient scratch")                                \
    X(dup, (d).N * (d).F, "gradient scratch")                                  \
    X(datt, (d).N * (d).HD, "gradient scratch")                                \
    X(dq, (d).N * (d).HD, "gradient scratch")                                  \
    X(dk, (d).N * (d).KV, "gradient scratch")                                  \
    X(dv, (d).N * (d).KV, "gradient scratch")                                  \
    X(dxa, (d).N * (d).R, "gradient scratch")  /* LoRA's dxa */                \
    X(tmp, (d).N * (d).WIDE, "gradient scratch")  /* the dropout's input gradient */

// Activations of one block, (N, ...) in backend memory (BLOCK_ACTS).
typedef struct {
    float *x_in;           // (N,C) the block's input (the residual stream); NULL with checkpointing
#define X(field, floats) float *field;  // the sizes are the table's business, not the struct's
    BLOCK_ACTS(X, _)
#undef X
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
    float **x_saved;       // [L+1] block inputs (the last: the final norm's) when checkpointing
    // the head, loss and gradient scratch (TRAINER_BUFS): x_final, xn_final, logits,
    // loss_tok, dx, dmid, dxn, dh, dgate, dup, datt, dq, dk, dv, dxa, tmp
#define X(field, floats, part) float *field;
    TRAINER_BUFS(X, _)
#undef X
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
    size_t backend_bytes;  // allocated through o->alloc by trainer_init (the norms are model_upload's)
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
