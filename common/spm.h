// spm.h: a C interface to SentencePiece (the Llama tokenizer), implemented in
// spm.cc over Debian's libsentencepiece. Encoding and decoding are exactly those
// of the `spm_encode --output_format=id` and `spm_decode --input_format=id`
// command-line tools: no BOS/EOS is added (the caller adds BOS), no sampling.
//
// Every function that can fail returns QL_OK or a QL_E* code and leaves a message
// (ql_errmsg) naming the file or argument and what is wrong. No C++ exception
// crosses this interface. A loaded spm is read-only: one may be shared by threads.
//
// Text is UTF-8 bytes. Decoded text is NUL-terminated for convenience, but a byte
// fallback piece <0x00> decodes to a NUL byte, so the length is returned too
// where it matters (spm_stream).
#ifndef QL_SPM_H
#define QL_SPM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct spm spm;

// spm_load_file loads a serialized SentencePiece ModelProto (tokenizer.model).
// Missing/unreadable file -> QL_EIO ("<path>: cannot open tokenizer: <strerror>");
// not a valid model -> QL_EFORMAT. *out is NULL on failure.
int spm_load_file(spm **out /* out */, const char *path);
// spm_load_bytes loads the same from memory (the quantized base file embeds the
// tokenizer.model bytes). The bytes are copied; data may be freed afterwards.
int spm_load_bytes(spm **out /* out */, const void *data, size_t len);
// spm_free releases a tokenizer; NULL is a no-op.
void spm_free(spm *s);

// Number of pieces; ids are 0..vocab_size-1.
int spm_vocab_size(const spm *s);
// Special ids from the model; -1 when the model has none (e.g. no pad).
int spm_bos_id(const spm *s);
int spm_eos_id(const spm *s);
int spm_unk_id(const spm *s);
int spm_pad_id(const spm *s);

// spm_encode: text (len bytes, need not be NUL-terminated) -> ids, as spm_encode
// does for one line. *ids_out is malloc'd (never NULL on success, even when
// *n_out is 0); the caller frees it.
int spm_encode(const spm *s, const char *text, size_t len, int **ids_out /* out */, int *n_out /* out */);
// spm_decode: ids -> text, as spm_decode does. Every id must be in
// [0, vocab_size) (else QL_EINVAL naming the index and value). *text_out is
// malloc'd and NUL-terminated; the caller frees it.
int spm_decode(const spm *s, const int *ids, int n, char **text_out /* out */);

// spm_piece returns the piece string of id ("▁the", "<0x0A>", "<s>"), or NULL
// when id is out of range. The string lives as long as s.
const char *spm_piece(const spm *s, int id);
// spm_piece_score is the piece's score (log probability for unigram, merge rank
// for BPE); spm_piece_kind its kind, numbered as llama.cpp's token types
// (llama.h LLAMA_TOKEN_TYPE_*): 1 normal, 2 unknown, 3 control, 5 unused, 6 byte
// (user-defined pieces read as normal: SentencePiece's processor API does not
// expose them). Both 0 for an id out of range.
float spm_piece_score(const spm *s, int id);
int spm_piece_kind(const spm *s, int id);
// spm_piece_to_id returns the id of a piece string, or -1 when it is not a piece.
int spm_piece_to_id(const spm *s, const char *piece);

// ---- streaming decode, for printing tokens as they are generated ----
//
// Contract: for any id sequence x1..xn,
//   push(x1) ++ push(x2) ++ ... ++ push(xn) ++ finish()  ==  spm_decode(x1..xn)
// byte for byte (++ is concatenation of the returned text). Each push returns
// the bytes that are final once that token is known:
//  - the first piece of the sequence loses its leading "▁" exactly as in
//    spm_decode (a BOS before it does not count; bytes before it do);
//  - byte fallback pieces <0xNN> that start a multi-byte UTF-8 character are held
//    back until the character is complete (or proven invalid, when spm_decode
//    shows U+FFFD), so a character split over tokens is never printed in halves;
//  - finish() releases what is still held (an unfinished character at the end of
//    the sequence becomes U+FFFD per byte, as in spm_decode).
// Cost per push is independent of the sequence length. Exactness assumes a
// model without denormalization rules (all Llama tokenizers are such).
// Contract checked by tests/test_tokenizer.c and tests/real/test_tokenizer_real.c.
typedef struct spm_stream spm_stream;

// spm_stream_init starts a stream on s (s must outlive it).
int spm_stream_init(spm_stream **out /* out */, const spm *s);
// spm_stream_free releases a stream; NULL is a no-op.
void spm_stream_free(spm_stream *st);
// spm_stream_reset starts a new sequence on the same tokenizer.
void spm_stream_reset(spm_stream *st);
// spm_stream_push adds one id. *text_out points at the new bytes (NUL-terminated,
// *len_out bytes, possibly 0), valid until the next call on st.
// An id out of range -> QL_EINVAL and the stream is unchanged.
int spm_stream_push(spm_stream *st, int id, const char **text_out /* out */, size_t *len_out /* out */);
// spm_stream_finish ends the sequence: returns the held bytes (like push) and
// resets the stream.
int spm_stream_finish(spm_stream *st, const char **text_out /* out */, size_t *len_out /* out */);

#ifdef __cplusplus
}
#endif

#endif
