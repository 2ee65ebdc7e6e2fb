// chat.h: qlora chat: an interactive conversation through a chat template, with
// the adapters of a LoRA store one command away:
//   /adapter NAME   answer with that adapter from now on (base: none)
//   /adapters       list the store, marking the one in use
//   /load NAME|PATH[:scale]   hot-load one more adapter (a folder of the store with
//                   --adapter-dir, else a path)
//   /unload NAME    drop one (the base and the others are untouched)
//   /reset          forget the conversation (the system prompt stays)
//   /pick K         with --n N: keep answer K of the last turn instead of answer 1
//   /quit           leave (so does end of input)
// A turn is rendered in the chat template the answering adapter was trained in
// (its training_record.json), unless --chat-template is given.
// Each turn renders the whole conversation (datasets' ds_render_prompt) and runs
// only the tokens past what the KV cache already holds: the prefix is reused
// while the adapter stays the same. The oldest turns are dropped when the
// conversation outgrows the context.
#ifndef QL_CHAT_H
#define QL_CHAT_H

#include <stdio.h>

#include "../model/model.h"
#include "../common/tokenizer.h"
#include "../datasets/dataset.h"
#include "../kernels/ops.h"
#include "sample.h"

typedef struct {
    const char *adapter_dir, *adapters;  // the store (either may be empty)
    const char *adapter;                 // the adapter to start with; "" is the base
    const char *system;                  // a system prompt, or ""
    ds_template tmpl;                    // the base's turns (and adapters' without a recorded template)
    int tmpl_given;                      // tmpl was asked for: it overrides adapters' recorded templates
    int n_choices;                       // answers a turn (--n; 0 is 1)
    int max_tokens, top_k, seed, ctx;
    int follow_symlinks;                 // links in the store may point out of it
    float temperature, top_p;
    sample_penalties pen;
} chat_opts;

// Reads user lines from in until /quit or end of input; answers go to out as
// "NAME> text" lines (NAME: the adapter, or base).
int chat_run(model *m, const tokenizer *tok, ops *o, const chat_opts *co, FILE *in, FILE *out);

#endif
