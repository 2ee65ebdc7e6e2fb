// generate.h: text generation with a base model: encode, prefill, decode.
#ifndef QL_GENERATE_H
#define QL_GENERATE_H

#include <stdio.h>

#include "../model/forward.h"
#include "../common/tokenizer.h"
#include "../datasets/dataset.h"
#include "sample.h"

typedef struct {
    int max_tokens;   // tokens to generate at most
    int stop_at_eos;  // stop when EOS is sampled
    int max_prefill;  // prompt tokens per forward call
} gen_options;

typedef struct {
    int prompt_tokens, generated;
    double prefill_s, decode_s;
} gen_stats;

// Encode text with the model's rule for BOS. *ids_out malloc'd.
int tokenize_prompt(const model *m, const tokenizer *tok, const char *text, int **ids_out, int *n_out);
// Rendering options for a conversation prompt (ds_render_prompt) to this model:
// template t with the model's BOS rule and ids.
void prompt_options(dataset_options *o /* out */, const model *m, ds_template t);
// Generate from prompt ids; streams decoded text to out (may be NULL), and the
// generated ids to ids_out (optional, capacity opt->max_tokens).
int generate(fwd_state *f, const tokenizer *tok, sampler *smp, const gen_options *opt, const int *prompt, int n_prompt,
             FILE *out, int *ids_out, gen_stats *st);

#endif
