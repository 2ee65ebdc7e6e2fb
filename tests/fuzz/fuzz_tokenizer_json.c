// fuzz_tokenizer_json: a Hugging Face tokenizer.json through bpe_load_mem (what
// tok_load_bytes and tok_load_file call for TOK_BPE); an accepted tokenizer encodes
// a short text with and without special tokens, and decodes it back, whole and
// streamed, to the same bytes.
#include "fuzz_util.h"

#include "common/bpe.h"

static const char TEXT[] = "Hello, world! It's 2024: caf\xc3\xa9 \xe2\x82\xac 12345 <|eot_id|>\n\n  tabs\tand\xf0\x9f\x98\x80 \xff end";

static void roundtrip(const bpe *b, int flags) {
    int *ids = NULL, n = 0;
    if (bpe_encode(b, TEXT, sizeof TEXT - 1, flags, &ids, &n)) return;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= bpe_vocab_size(b)) abort();
    char *text = NULL;
    size_t len = 0;
    if (bpe_decode(b, ids, n, &text, &len) == 0) {
        bpe_stream *st = NULL;
        if (bpe_stream_init(&st, b) == 0) {
            size_t at = 0;
            const char *piece;
            size_t pl;
            for (int i = 0; i < n; i++) {
                if (bpe_stream_push(st, ids[i], &piece, &pl)) break;
                if (at + pl > len || memcmp(text + at, piece, pl)) abort();  // streamed == whole
                at += pl;
            }
            bpe_stream_free(st);
        }
        free(text);
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_dir();
    bpe *b = NULL;
    if (bpe_load_mem(&b, (const char *)data, size, "tokenizer.json") != 0) return 0;
    roundtrip(b, BPE_SPECIAL);
    roundtrip(b, 0);
    for (int id = 0; id < bpe_vocab_size(b) && id < 64; id++) (void)bpe_piece(b, id);
    (void)bpe_post_bos(b);
    bpe_free(b);
    return 0;
}
