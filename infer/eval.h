// eval.h: mean loss and perplexity of a base model, alone and with LoRA adapters,
// on held-out data in any training format, with the loss training reports.
//
// The loss is training's: the mean over every trained target token (mask 1,
// datasets/dataset.h) of -log p(target | the tokens before it in its sample), in
// nats. Samples are scored one at a time from position 0 (never packed), so a
// sample sees only itself, as in training's packed rows.
//
// Typical use:
//   dataset_options o; eval_options(&o, m, tmpl, seq_len, train_on_inputs);
//   dataset d; eval_load(&d, "held-out.jsonl", tok, &o);   // QL_EFORMAT names file:line:column
//   eval_target t[2] = {{NULL, 0}, {&adapter, 1.0f}};        // the base and one adapter
//   eval_result r[2]; eval_run(r, m, ops, &d, t, 2);
//   dataset_free(&d);
#ifndef QL_EVAL_H
#define QL_EVAL_H

#include "../common/tokenizer.h"
#include "../datasets/dataset.h"
#include "../model/forward.h"

typedef struct {
    double loss;       // mean negative log-likelihood per trained target token (nats)
    double ppl;        // exp(loss)
    long long tokens;  // trained target tokens (mask 1) scored
    int samples;       // samples with at least one trained target
    int truncated;     // samples cut at the sequence length (eval_file only; eval_run leaves d->stats)
} eval_result;

// One model to score: the base alone (adapter NULL) or the base with an adapter
// at scale times its own scaling (1: as trained).
typedef struct {
    const lora_adapter *adapter;
    float scale;
} eval_target;

// The options training renders data with (train/train_cmd.c) for model m:
// template t, the model's BOS rule and ids, seq_len, train_on_inputs.
void eval_options(dataset_options *o /* out */, const model *m, ds_template t, int seq_len, int train_on_inputs);

// Reads path into d, one sample per record, with ids and loss mask:
//  - a path ending in .jsonl: dataset_load(path, tok, opt): every training format
//    (text, prompt/completion, messages, alpaca, sharegpt), chat templates, masks,
//    truncation at opt->seq_len; a bad line is QL_EFORMAT "path:line:column: ...".
//  - any other file: plain text, each line that is not blank one sample: BOS (when
//    opt->add_bos and there is a BOS id) then tok_encode(line), every token but the
//    first trained, no EOS; cut at opt->seq_len (d->stats.truncated counts them); a
//    line of fewer than 2 tokens is left out. d->format is DS_FORMAT_NONE.
// QL_EFORMAT when no sample has a trained token. On failure *d is empty.
int eval_load(dataset *d /* out */, const char *path, const tokenizer *tok, const dataset_options *opt);

// Targets scored side by side in one pass over the data: as many KV slots
// (fp32, sized to the longest sample) as fit in EVAL_KV_BUDGET bytes, at most
// EVAL_MAX_SLOTS; more targets take more passes.
#define EVAL_KV_BUDGET (1024.0 * 1024 * 1024)
#define EVAL_MAX_SLOTS 16

// Scores every sample of d under each of the nt targets: r[j] for t[j]. Each
// sample runs through a pass's targets in one fwd_batch per chunk (one KV slot
// per target), so the base's weights are read once for all of them; every row
// sees only its own target's adapter, so r[j] is what eval_run with t[j] alone
// gives (up to the order of fp32 sums in a matmul over more rows). Adapters must
// fit m (fwd_check_adapter). QL_EFORMAT when d has no trained token.
int eval_run(eval_result *r /* out, (nt) */, model *m, ops *o, const dataset *d, const eval_target *t, int nt);

// eval_load with eval_options(template llama2, seq_len = max_position_embeddings,
// no train_on_inputs), then eval_run of the base (adapter NULL) or adapter at scale 1.
int eval_file(model *m, ops *o, const tokenizer *tok, const char *path, const lora_adapter *adapter, eval_result *r);

#endif
