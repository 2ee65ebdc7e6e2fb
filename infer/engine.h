// engine.h: the batched generation engine. Requests, each with its own prompt,
// adapter and scale, sampling options and limits, run together: every step is one
// fwd_batch over the active sequences (a prompt chunk for those still in prefill,
// one token for the others); a finished sequence leaves the batch and frees its
// KV slot for the next request waiting.
//
// Two ways to drive it: engine_run takes a fixed list of requests and runs them
// all (the command-line front ends); engine_start / engine_step / engine_cancel
// let a caller add requests while others run (continuous batching: qlora serve's
// scheduler admits a new request into a free slot between two steps).
#ifndef QL_ENGINE_H
#define QL_ENGINE_H

#include "../model/forward.h"
#include "../common/tokenizer.h"
#include "sample.h"

#define ENGINE_MAX_STOPS 8   // a request's own and its chat template's
#define ENGINE_USER_STOPS 4  // stop strings a request may give (OpenAI's limit)

typedef struct {
    // in
    const int *prompt;             // token ids, BOS included
    int n_prompt;
    const lora_adapter *adapter;   // NULL: the base
    float scale;
    int max_tokens;
    int stop_at_eos;
    const char *stop[ENGINE_MAX_STOPS];  // stop strings (NULL-terminated list); not included in text
    sampler smp;
    int cached;                    // prompt[0..cached) is already in the KV cache (chat turns; one slot only)
    // Streams the text as it is decided (optional): a tail that could begin a stop
    // string is held back until it cannot.
    void (*on_text)(void *ctx, const char *txt, size_t len);
    void *on_text_ctx;
    // out
    int *ids;                      // generated ids (max_tokens), malloc'd by the engine
    int n_ids;
    char *text;                    // generated text, NUL-terminated, malloc'd by the engine
    size_t text_len;
    const char *finish;            // "stop" (EOS or a stop string), "length", "error" or "cancelled"
    char err[256];                 // when finish is "error"
    // engine state
    int slot, done_prompt, pos, active;
    size_t emitted;                // text bytes passed to on_text
    tok_stream *ss;
} eng_req;

typedef struct {
    int steps;                     // fwd_batch calls
    long long prompt_tokens, generated;
    double seconds;
} eng_stats;

// Runs every request to its end with at most f->n_slots in a batch and f->max_N
// tokens per step. A request that fails (its prompt longer than the context, say)
// gets finish "error" and the rest go on; the return value is an error only when
// the batch itself fails.
int engine_run(fwd_state *f, const tokenizer *tok, eng_req *r, int n, eng_stats *st);
void eng_req_free(eng_req *r);

// ---- stepping: requests join and leave between steps ----
typedef struct {
    fwd_state *f;
    const tokenizer *tok;
    eng_req **slot;        // (n_slots) the request in each KV slot, or NULL
    int *tokens, *in_batch;
    fwd_seq *seqs;
    float *logits;         // (n_slots, V)
    eng_stats st;          // totals since engine_init (seconds: inside engine_step)
    int last_batch;        // sequences in the last step
} engine;

int engine_init(engine *e, fwd_state *f, const tokenizer *tok);
void engine_free(engine *e);
// Slots free for engine_start, and requests active.
int engine_free_slots(const engine *e);
int engine_active(const engine *e);
// Starts r in the lowest free slot (there must be one). r then runs from the next
// engine_step, or is finished at once (finish "error" with err: an empty prompt or
// one the context cannot hold; "length" for max_tokens 0) and takes no slot. The
// return value is an error only for no memory.
int engine_start(engine *e, eng_req *r);
// One fwd_batch over every active request; a request that finishes leaves its slot
// (active 0, finish set) before this returns. QL_OK and nothing done when none is
// active; an error only when the batch itself fails.
int engine_step(engine *e);
// Takes an active r out of its slot with finish "cancelled" (no more text).
void engine_cancel(engine *e, eng_req *r);

#endif
