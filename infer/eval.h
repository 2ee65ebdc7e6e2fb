// eval.h: mean token loss and perplexity of a base model, with or without a LoRA
// adapter, on a text or JSONL file.
#ifndef QL_EVAL_H
#define QL_EVAL_H

#include "../model/forward.h"
#include "../common/tokenizer.h"

typedef struct {
    double loss;       // mean negative log-likelihood per predicted token (nats)
    double ppl;        // exp(loss)
    long long tokens;  // predicted tokens
    int samples;
    int truncated;     // samples cut at max_position_embeddings
} eval_result;

// Samples: each non-empty line of a text file, or each "text" of a .jsonl file.
// Each sample is BOS + its tokens, cut at the context; every token after the
// first is predicted. The KV cache is sized to the longest sample.
// adapter: NULL, or a LoRA adapter applied to the base (fwd_set_adapter).
int eval_file(model *m, ops *o, const tokenizer *tok, const char *path, const lora_adapter *adapter, eval_result *r);
// The loss of one sample (ids, n >= 2): sum of NLL over its n-1 predictions.
int eval_sample(fwd_state *f, const int *ids, int n, double *nll_sum);

#endif
