// dataset.h: training data from JSONL files (issue 3). A file is read once,
// every line parsed with jsmn (common/json.h), checked, rendered through a chat
// template into token ids plus a loss mask, and kept in memory as samples.
// Samples are then shuffled (seeded), split for validation and packed into
// rows of seq_len tokens for the trainer. docs/datasets.md gives the formats
// and each template's exact token layout.
//
// Typical use:
//   dataset_options o; dataset_options_default(&o); o.seq_len = 256;
//   dataset d, val;
//   dataset_load(&d, "data.jsonl", tok, &o);          // QL_EFORMAT names file:line:column
//   dataset_shuffle(&d, seed);
//   dataset_split(&d, &val, 0.1);                      // or dataset_load a separate val file
//   ds_packed p; dataset_pack(&p, &d, o.seq_len, pad_id);
//   for (int b = 0; b < ds_packed_nbatches(&p, B); b++) { ds_batch x = ds_packed_batch(&p, b, B); ... }
//   ds_packed_free(&p); dataset_free(&val); dataset_free(&d);
#ifndef QL_DATASET_H
#define QL_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "common/json.h"
#include "common/tokenizer.h"

// File formats, detected from the first valid line and required of every line.
typedef enum {
    DS_FORMAT_NONE = 0,
    DS_FORMAT_TEXT,    // {"text": "..."}
    DS_FORMAT_PROMPT,  // {"prompt": "...", "completion": "..."}
    DS_FORMAT_CHAT,    // {"messages": [{"role": "system|user|assistant", "content": "..."}, ...]}
    DS_FORMAT_ALPACA,  // {"instruction": "...", "input": "..." (optional), "output": "..."}
    DS_FORMAT_SHAREGPT,  // {"conversations": [{"from": "system|human|gpt", "value": "..."}, ...]} (axolotl's sharegpt)
} ds_format;

// Chat templates, used for DS_FORMAT_CHAT, DS_FORMAT_ALPACA and DS_FORMAT_SHAREGPT.
typedef enum { DS_TEMPLATE_LLAMA2 = 0, DS_TEMPLATE_CHATML, DS_TEMPLATE_ZEPHYR, DS_TEMPLATE_LLAMA3 } ds_template;

typedef struct {
    ds_template chat_template;  // default llama2
    int train_on_inputs;        // 1: every token but the first is trained (default 0)
    int skip_invalid;           // 1: bad lines are skipped and counted, not fatal (default 0)
    int seq_len;                // samples longer than this are cut (default 512); must be >= 2
    int add_bos;                // 1: BOS starts every sample (model_config.add_bos; default 1)
    int bos_id, eos_id;         // -1 (default): the tokenizer's
    size_t max_file_bytes;      // file size limit (default 1 GiB)
} dataset_options;

void dataset_options_default(dataset_options *o /* out */);

// Counts over the samples a dataset holds (after skips; split moves counts along).
typedef struct {
    long lines;           // non-blank lines read (valid + skipped); 0 for a split-off set
    long samples;         // samples kept
    long tokens;          // tokens in all samples, after truncation
    long trained_tokens;  // tokens with mask 1 (= loss targets)
    long truncated;       // samples cut to seq_len
    long skipped;         // invalid lines skipped (skip_invalid)
} dataset_stats;

// One sample: ids (n,) and mask (n,). mask[t] = 1 when ids[t] is a loss target
// (predicted from ids[0..t-1]); mask[0] is always 0. 2 <= n <= seq_len.
typedef struct {
    int n;
    int *ids;
    uint8_t *mask;
    int line;  // 1-based source line
} ds_sample;

typedef struct {
    ds_format format;
    ds_sample *samples;  // (n_samples,), owned
    int n_samples;
    dataset_stats stats;
    char *skip_summary;  // "skipped K invalid lines; first: file:line:col: ...; ..." or NULL
} dataset;

// dataset_load reads path. Errors: QL_EIO (cannot open), QL_EFORMAT with
// "path:line:column: what was wrong" for the first bad line (or, with
// skip_invalid, when no valid line remains), QL_EINVAL for bad options.
// On failure *d is empty (dataset_free is still safe).
int dataset_load(dataset *d /* out */, const char *path, const tokenizer *tok, const dataset_options *opt);
// dataset_load_mem is dataset_load on text (len bytes); name is used in messages.
int dataset_load_mem(dataset *d /* out */, const char *text, size_t len, const char *name, const tokenizer *tok,
                     const dataset_options *opt);
// dataset_free releases samples; a zeroed or freed dataset is a no-op.
void dataset_free(dataset *d);

const char *ds_format_name(ds_format f);      // "text", "prompt/completion", "messages", "alpaca", "sharegpt"
const char *ds_template_name(ds_template t);  // "llama2", "chatml", "zephyr", "llama3"
// What ends a reply in template t besides EOS: the markers that begin the next
// turn. A NULL-terminated list of at most 2.
const char *const *ds_template_stops(ds_template t);
// "llama2" | "chatml" | "zephyr" | "llama3" -> QL_OK, else QL_EINVAL listing the names.
int ds_template_parse(ds_template *out /* out */, const char *name);
// The template a Hugging Face tokenizer_config.json's Jinja "chat_template" is,
// recognized by its turn markers: QL_OK, QL_ENOENT when jinja names none of ours.
int ds_template_recognize(ds_template *out /* out */, const char *jinja);
// The template a command uses: option when given ("llama2", ...); else the one the
// model's chat_template Jinja is (QL_EINVAL asking for --chat-template when it is
// none of ours); else, for a model with no chat template, llama2.
int ds_template_choose(ds_template *out /* out */, const char *option, const char *jinja);

// ---- rendering one record (what dataset_load does per line) ----

typedef enum { DS_ROLE_SYSTEM = 0, DS_ROLE_USER, DS_ROLE_ASSISTANT } ds_role;
typedef struct {
    ds_role role;
    const char *content;  // UTF-8, NUL-terminated, not owned
} ds_message;

// ds_render: one record -> ids (n,) and mask (n,) (both malloc'd; caller frees),
// before truncation. The messages by format:
//   TEXT:   m[0] = the text (role ignored)
//   PROMPT: m[0] = prompt, m[1] = completion (roles ignored)
//   CHAT:   the messages (an ALPACA line becomes user = instruction ["\n\n" input],
//           assistant = output, and is rendered as CHAT)
// QL_EFORMAT (no location; the caller adds it) when the messages do not fit the
// template (llama2: optional system first, then user/assistant pairs), or no
// assistant turn; errors of tok_encode pass through.
int ds_render(int **ids /* out */, uint8_t **mask /* out */, int *n /* out */, ds_format f, const ds_message *m,
              int nm, const tokenizer *tok, const dataset_options *opt);

// ds_render_prompt: a conversation to continue -> ids (n,) (malloc'd): the
// messages through opt->chat_template, ending with the assistant's header (no
// reply, no EOS), as the model saw it in training. The last message must be a
// user turn; QL_EFORMAT otherwise or when the messages do not fit the template.
int ds_render_prompt(int **ids /* out */, int *n /* out */, const ds_message *m, int nm, const tokenizer *tok,
                     const dataset_options *opt);

// ds_parse_messages: a {"role","content"} array (token arr of d) -> m (nm), with
// the checks dataset_load makes (roles, non-empty UTF-8 strings); contents are
// malloc'd, free with ds_messages_free. for_prompt: the last message must be a
// user turn (a conversation to answer); else one assistant turn is needed.
// QL_EFORMAT "name:line:column: what was wrong".
int ds_parse_messages(ds_message **m /* out */, int *nm /* out */, const json_doc *d, int arr, const char *name,
                      int line, int for_prompt);
void ds_messages_free(ds_message *m, int nm);

// ---- order and validation ----

// dataset_shuffle permutes samples by Fisher-Yates (i from n-1 down to 1, swap
// with rng_below(i+1), common/rng.h) with state = seed.
void dataset_shuffle(dataset *d, uint64_t seed);
// dataset_split moves the last round(frac*n) samples of d into *val (*val is
// empty when that rounds to 0). frac must be in [0,1), else QL_EINVAL; also
// QL_EINVAL when d would be left with no sample. Shuffle first for a random split.
int dataset_split(dataset *d, dataset *val /* out */, double frac);

// ---- packing ----

// Packed rows, each of T = seq_len tokens; all arrays are (R,T) row-major.
//  tokens[r,t]   input token
//  targets[r,t]  token to predict at (r,t): tokens[r,t+1] when t+1 is in the
//                same segment and trained, else -1 (no loss)
//  pos[r,t]      position within its sample (restarts at 0 for each sample)
//  seg[r,t]      segment id within the row (0,1,2,..); -1 for padding.
//                Attention from t to s is allowed only when seg[r,s] == seg[r,t] and s <= t.
// Padding: token pad_id, target -1, pos 0, seg -1.
typedef struct {
    int R, T;
    int *tokens, *targets, *pos, *seg;
    long n_targets;  // targets != -1 (= the dataset's trained_tokens)
} ds_packed;

// dataset_pack packs samples in d's order, greedily: a sample goes into the
// current row if it fits, else a new row is started. A sample never spans rows
// (load already cut samples to seq_len); a sample longer than seq_len is QL_EINVAL.
int dataset_pack(ds_packed *p /* out */, const dataset *d, int seq_len, int pad_id);
void ds_packed_free(ds_packed *p);

// Batch b of B rows (the last batch may hold fewer rows: .B says how many).
typedef struct {
    int B, T;
    const int *tokens, *targets, *pos, *seg;  // (B,T) each, pointing into the ds_packed
} ds_batch;
int ds_packed_nbatches(const ds_packed *p, int B);
ds_batch ds_packed_batch(const ds_packed *p, int b, int B);

#endif
