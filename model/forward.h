// forward.h: the Llama forward pass, written once against the ops interface
// (kernels/ops.h), with a KV cache. The same code runs on every backend.
#ifndef QL_FORWARD_H
#define QL_FORWARD_H

#include "../kernels/ops.h"
#include "../model/lora.h"
#include "model.h"

typedef struct {
    model *m;
    ops *o;
    int max_T;             // KV cache capacity per slot (positions)
    int max_N;             // tokens per call, all sequences together
    int n_slots;           // sequences that can hold a KV cache at once
    float **k_cache;       // [L] (n_slots*max_T, Hkv*D) backend memory; slot s at row s*max_T
    float **v_cache;       // [L] (n_slots*max_T, Hkv*D)
    float *x, *xb, *xb2;   // (max_N, C) residual stream and scratch
    float *q, *att;        // (max_N, H*D)
    float *kb, *vb;        // (max_N, Hkv*D) new keys and values of a batch, before the cache
    float *hb, *hb2;       // (max_N, F)
    float *logits;         // (max_N, V)
    float **norms;         // [2L+1] backend copies: attn_norm, ffn_norm per layer, then final
    float *inv_freq;       // host (D/2)
    int *pos;              // host (max_N)
    const lora_adapter *lora;  // fwd_forward's adapter when not NULL (fwd_set_adapter)
    float *xa;             // LoRA scratch: xa_cap floats
    size_t xa_cap;
    lora_seg *segs;        // host (max_N): one linear's LoRA segments
    // Backends whose memory is not host memory (ops.host_memory == 0) get a copy of
    // each adapter's pairs, made on first use and kept until fwd_forget_adapter,
    // fwd_free, or eviction (least recently used, beyond FWD_MAX_COPIES).
    struct fwd_copy *copies;
    int n_copies;
    uint64_t batches;      // fwd_batch calls so far: the copies' clock
    const lora_pair **seq_pairs;  // host (n_slots): the pairs each sequence of a batch uses
} fwd_state;

#define FWD_MAX_COPIES 16

// One sequence of a batch (fwd_batch). Its n tokens are rows [row0, row0+n) of the
// call, where row0 is the sum of n over the sequences before it.
typedef struct {
    int n;                        // tokens in this call, >= 1
    int pos;                      // position of the first of them in its KV cache slot
    int slot;                     // KV cache slot, 0..n_slots-1; distinct within a call
    const lora_adapter *adapter;  // NULL: the base alone
    float scale;                  // times the adapter's scaling; 0 gives the base exactly
} fwd_seq;

// Makes m usable by backend o: uploads every frozen weight and copies the norm
// weights into backend memory, *norms (2L+1): attn_norm and ffn_norm of each layer,
// then the final norm. model_release undoes it (and frees *norms).
int model_upload(model *m, ops *o, float ***norms);
void model_release(model *m, ops *o, float ***norms);

// Uploads the weights to the backend and allocates the caches (n_slots of max_T
// positions) and scratch for max_N tokens per call. fwd_init: one slot.
int fwd_init_slots(fwd_state *s, model *m, ops *o, int max_T, int max_N, int n_slots);
int fwd_init(fwd_state *s, model *m, ops *o, int max_T, int max_N);
void fwd_free(fwd_state *s);
// QL_OK when adapter a fits config c (layer count, every pair's shape), else an
// error naming the layer and module.
int fwd_check_adapter(const model_config *c, const lora_adapter *a);
// Apply adapter a (NULL: none) in fwd_forward from the next call on: every
// targeted linear becomes y = x W^T + scaling * (x A^T) B^T. a's weights must be in
// host memory (fwd_state copies it to the backend when needed) and outlive its use.
int fwd_set_adapter(fwd_state *s, const lora_adapter *a);
// Frees the backend copy of a's weights, if there is one. Call it after changing
// a's weights while s lives (the copy of the old ones would be used again), and
// when dropping a for good (else its copy waits for eviction or fwd_free). Copies
// are found by the adapter's serial, so a new adapter never meets an old copy.
void fwd_forget_adapter(fwd_state *s, const lora_adapter *a);
// Run tokens (N, host) at positions T0..T0+N-1 of the one sequence in slot 0.
// logits (host): (N,V) when all_logits, else (1,V) for the last token.
int fwd_forward(fwd_state *s, float *logits, const int *tokens, int N, int T0, int all_logits);
// Run a batch of sequences, each with its own slot, position and adapter: one base
// matmul per linear for all rows, then the LoRA terms by segments of rows that
// share an adapter (ops lora_shrink / lora_expand). tokens (host) holds the
// sequences' tokens one after another. logits (host): every row's (sum n, V) when
// all_logits, else one row per sequence, its last token's (nseq, V).
int fwd_batch(fwd_state *s, float *logits, const int *tokens, const fwd_seq *seqs, int nseq, int all_logits);

#endif
