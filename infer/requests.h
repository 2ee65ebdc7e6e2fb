// requests.h: qlora infer --requests FILE.jsonl: many prompts, each with its own
// adapter and sampling options, run in batches; one JSONL result per request, in
// input order. A line per request (blank lines are skipped):
//   {"id": any, "prompt": "..." | "messages": [{"role","content"}...],
//    "adapter": "name" (a folder of --adapter-dir; absent, null or "" is the base),
//    "scale": x, "max_tokens": n, "temperature": x, "top_p": x, "top_k": n,
//    "seed": n, "stop": "..." | ["...", ...] (at most 4), "n": answers (1 to
//    REQUESTS_MAX_N, each with seed + k), repetition_penalty, frequency_penalty,
//    presence_penalty, min_p}
// "messages" are rendered in the chat template the adapter was trained in (its
// training_record.json), else tmpl; with tmpl_given, in tmpl (and a warning).
// Its result:
//   {"id", "adapter", "text", "tokens", "prompt_tokens", "finish_reason"}
// or with "n" > 1 {"id", "adapter", "prompt_tokens", "choices": [{"index", "text",
// "tokens", "finish_reason"}, ...]}
// or, for a line that cannot run, {"id", "adapter", "error", "finish_reason": "error"}
// with the file, line and field in the error; the other lines still run.
#ifndef QL_REQUESTS_H
#define QL_REQUESTS_H

#include "../model/model.h"
#include "../common/tokenizer.h"
#include "../datasets/dataset.h"
#include "../kernels/ops.h"
#include "sample.h"

typedef struct {
    const char *path;          // the JSONL file
    const char *out;           // results file (written atomically), or "" for stdout
    const char *adapter_dir;   // the LoRA store
    const char *adapters;      // a subset to load ("" loads the adapters the requests name)
    int batch;                 // sequences in one batch at most
    int ctx;                   // context per sequence; 0: the longest prompt + max_tokens
    ds_template tmpl;          // for "messages" (of the base, and of adapters with no recorded template)
    // defaults for fields a line leaves out
    int max_tokens, top_k, seed, stop_at_eos;
    float temperature, top_p;
    int follow_symlinks;       // links in the store may point out of it (--follow-symlinks)
    sample_penalties pen;      // defaults of repetition_penalty, frequency_penalty, presence_penalty, min_p
    int n_choices;             // default of "n" (0 is 1)
    int tmpl_given;            // tmpl was asked for (--chat-template): it overrides adapters' recorded templates
} requests_opts;

#define REQUESTS_MAX_N 16

// One line of a requests file, parsed and checked (private to requests.c).
typedef struct req_line req_line;

// Parses text (len bytes of a requests file; path names it in messages) into *q, one
// entry per non-blank line: a runnable request (prompt tokenized with tok and m's BOS
// rule) or, for a line that cannot run, its error (requests_line_error). Returns
// QL_ENOMEM, or QL_EFORMAT when every line is blank; *q then is NULL. Free with
// requests_lines_free.
int requests_parse(req_line **q /* out */, int *n /* out */, const char *text, size_t len, const char *path,
                   const model *m, const tokenizer *tok, const requests_opts *ro);
void requests_lines_free(req_line *q, int n);
// "" when line i can run, else why not (file:line: ...).
const char *requests_line_error(const req_line *q, int i);

// Runs every request and writes the results. Returns an error for a file that
// cannot be read or written, or a batch that fails; lines that fail are counted in
// *n_failed (their results say why).
int requests_run(const model *m, const tokenizer *tok, ops *o, const requests_opts *ro, int *n_failed);

#endif
