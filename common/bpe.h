// bpe.h: a byte-level BPE tokenizer read from a Hugging Face tokenizer.json
// (Llama 3, SmolLM2 and the other GPT-2-style tokenizers), encoding and decoding
// as the `tokenizers` library does:
//   encode: text -> invalid UTF-8 replaced by U+FFFD (maximal subparts, as the
//           WHATWG decoder does) -> added tokens matched first (leftmost, longest)
//           -> the pre-tokenizer's Split regex (PCRE2, UTF + Unicode properties)
//           -> each piece's bytes through GPT-2's byte-to-unicode map -> BPE merges
//           by rank (a heap over adjacent pairs; with ignore_merges a piece that is
//           itself in the vocabulary is taken whole)
//   decode: pieces -> bytes (the map reversed; added tokens as their text) -> UTF-8
//           with each invalid sequence shown as U+FFFD.
// What tokenizer.json may hold that this does not implement (a normalizer, another
// pre-tokenizer or model type, byte fallback, dropout, word suffixes) is refused with
// an error naming the field, never approximated. A loaded tokenizer is read-only and
// may be shared by threads.
#ifndef QL_BPE_H
#define QL_BPE_H

#include <stddef.h>

typedef struct bpe bpe;

// Parses tokenizer.json text (len bytes); name is used in messages. QL_EFORMAT
// naming the field for a malformed or unsupported file.
int bpe_load_mem(bpe **out /* out */, const char *json, size_t len, const char *name);
int bpe_load_file(bpe **out /* out */, const char *path);
void bpe_free(bpe *b);

// Ids are 0..bpe_vocab_size-1 (the model's vocabulary and the added tokens).
int bpe_vocab_size(const bpe *b);
// The id of an added token's text or of a vocabulary piece, or -1.
int bpe_token_id(const bpe *b, const char *text);
// The piece of id as stored (byte-level characters, or an added token's text);
// NULL out of range.
const char *bpe_piece(const bpe *b, int id);
// 1 when id is an added token (marked special).
int bpe_is_added(const bpe *b, int id);
int bpe_is_special(const bpe *b, int id);
// What the post-processor adds before a sequence: the BOS id of a TemplateProcessing
// ("single": [SpecialToken, Sequence]), -1 when its template adds none, -2 when there
// is no template (ByteLevel alone, or none): then the model's config decides.
int bpe_post_bos(const bpe *b);
// The merges in rank order: merge r joins the pieces of ids *left and *right.
int bpe_n_merges(const bpe *b);
// The k-th Split regex of the pre-tokenizer as written, or NULL past the last.
const char *bpe_split_pattern(const bpe *b, int k);
void bpe_merge(const bpe *b, int r, int *left, int *right);

enum { BPE_SPECIAL = 1 };  // encode: match added tokens in the text (else they are plain text)
int bpe_encode(const bpe *b, const char *text, size_t len, int flags, int **ids_out /* out */, int *n_out /* out */);
// ids -> text (malloc'd, NUL-terminated; *len_out may be NULL). QL_EINVAL for an id out of range.
int bpe_decode(const bpe *b, const int *ids, int n, char **text_out /* out */, size_t *len_out /* out */);
// The raw bytes of one id (no UTF-8 repair), into buf (cap bytes); returns the length or -1.
int bpe_token_bytes(const bpe *b, int id, char *buf, size_t cap);

// Streaming decode (generation): push(x1) ++ ... ++ push(xn) ++ finish() equals
// bpe_decode(x1..xn) byte for byte. A push returns the bytes that are final: a
// character split over tokens is held back until it is whole, or shown as U+FFFD
// once it cannot become whole.
typedef struct bpe_stream bpe_stream;
int bpe_stream_init(bpe_stream **out /* out */, const bpe *b);
void bpe_stream_free(bpe_stream *st);
void bpe_stream_reset(bpe_stream *st);
// *text_out: the new bytes (NUL-terminated, *len_out of them), valid until the next call.
int bpe_stream_push(bpe_stream *st, int id, const char **text_out /* out */, size_t *len_out /* out */);
int bpe_stream_finish(bpe_stream *st, const char **text_out /* out */, size_t *len_out /* out */);

#endif
