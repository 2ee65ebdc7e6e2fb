// tokenizer.h: the one tokenizer interface of the program. Two kinds sit behind
// it, and nothing outside tokenizer.c asks which one it has:
//   TOK_SPM  SentencePiece (tokenizer.model: Llama 2, TinyLlama, Mistral), through
//            our C shim over Debian's libsentencepiece (spm.h);
//   TOK_BPE  byte-level BPE (tokenizer.json: Llama 3, SmolLM2), bpe.h.
// Encoding adds no BOS (the caller does, by the model's rule). Special-token text
// ("<|eot_id|>") is recognized only with TOK_SPECIAL, as the reference does by
// default; untrusted text (chat content, training data) is encoded without it so
// that it stays literal. SentencePiece has no such text: the flag changes nothing
// there. A loaded tokenizer is read-only and may be shared by threads.
#ifndef QL_TOKENIZER_H
#define QL_TOKENIZER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { TOK_SPM = 1, TOK_BPE = 2 } tok_kind;
enum { TOK_SPECIAL = 1 };

typedef struct tokenizer tokenizer;

// From a model directory: tokenizer.json when present, else tokenizer.model.
int tok_load_dir(tokenizer **out /* out */, const char *dir);
// From a file: tokenizer.json (a name ending in .json) or tokenizer.model.
int tok_load_file(tokenizer **out /* out */, const char *path);
tok_kind tok_kind_of_path(const char *path);
// From the bytes of either file (a base file embeds them).
int tok_load_bytes(tokenizer **out /* out */, tok_kind kind, const void *data, size_t len, const char *name);
void tok_free(tokenizer *t);
tok_kind tok_kind_of(const tokenizer *t);
// The file name a kind is read from ("tokenizer.model", "tokenizer.json").
const char *tok_file_name(tok_kind kind);

int tok_vocab_size(const tokenizer *t);
// Special ids the tokenizer itself knows; -1 when it has none. (BPE files name
// no BOS or EOS: the model's config does.)
int tok_bos_id(const tokenizer *t);
int tok_eos_id(const tokenizer *t);
int tok_unk_id(const tokenizer *t);
int tok_pad_id(const tokenizer *t);
// Whether encoding for the model adds BOS by the tokenizer's own rule: for a BPE
// tokenizer.json, 1 when its post-processor's template puts a special token first, else 0
// (as the reference adds nothing then); -1 for SentencePiece, which has no such rule
// (tokenizer_config.json's add_bos_token decides, default on).
int tok_adds_bos(const tokenizer *t);

int tok_encode(const tokenizer *t, const char *text, size_t len, int flags, int **ids_out /* out */, int *n_out /* out */);
// ids -> text (malloc'd, NUL-terminated).
int tok_decode(const tokenizer *t, const int *ids, int n, char **text_out /* out */);

// The piece of id as the tokenizer stores it, or NULL out of range.
const char *tok_piece(const tokenizer *t, int id);
// For GGUF: the piece's score (SentencePiece's; 0 for BPE) and kind, numbered as
// llama.cpp's token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
float tok_piece_score(const tokenizer *t, int id);
int tok_piece_kind(const tokenizer *t, int id);
// The id of a piece string (or of a special token's text), or -1.
int tok_piece_to_id(const tokenizer *t, const char *piece);
// BPE: the merges in rank order as "left right" strings (for GGUF), NULL for SentencePiece.
int tok_merges(const tokenizer *t, char ***merges_out /* out: malloc'd, strings too */, int *n_out /* out */);

// BPE: the k-th Split regex of the pre-tokenizer as written (NULL past the last,
// and for SentencePiece).
const char *tok_split_pattern(const tokenizer *t, int k);

// Streaming decode: push(x1) ++ ... ++ push(xn) ++ finish() == tok_decode(x1..xn),
// with no character ever split (spm.h and bpe.h give the details per kind).
typedef struct tok_stream tok_stream;
int tok_stream_init(tok_stream **out /* out */, const tokenizer *t);
void tok_stream_free(tok_stream *st);
void tok_stream_reset(tok_stream *st);
int tok_stream_push(tok_stream *st, int id, const char **text_out /* out */, size_t *len_out /* out */);
int tok_stream_finish(tok_stream *st, const char **text_out /* out */, size_t *len_out /* out */);

#ifdef __cplusplus
}
#endif

#endif
