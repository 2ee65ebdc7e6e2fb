// test_bpe.c: the byte-level BPE tokenizer (common/bpe.c) on small tokenizer.json
// documents written here: merges by rank (the lowest first, leftmost on ties),
// ignore_merges, both merge forms, added tokens (special only when asked),
// ill-formed UTF-8 read as U+FFFD, the streaming decoder's contract, and every
// malformed or unsupported field refused with a message naming it. The real Llama
// 3 tokenizer against an independent reference is tests/real/test_bpe_real.c.
#include <stdlib.h>
#include <string.h>

#include "common/bpe.h"
#include "common/err.h"
#include "common/strbuf.h"
#include "testutil.h"

// GPT-2's byte -> code point map, written out here from its definition.
static unsigned gpt2_cp(int b) {
    int direct = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    if (direct) return (unsigned)b;
    int n = 0;
    for (int k = 0; k < b; k++) n += !((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE && k <= 0xFF));
    return 256u + (unsigned)n;
}

static void put_cp(strbuf *s, unsigned cp) {
    char u[4];
    int n = cp < 0x80 ? (u[0] = (char)cp, 1) : (u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 63)), 2);
    sb_addn(s, u, (size_t)n);
}

// A piece of text in byte-level form, as a JSON string body (escaping " and \).
static void piece(strbuf *s, const char *bytes) {
    for (const unsigned char *p = (const unsigned char *)bytes; *p; p++) {
        unsigned cp = gpt2_cp(*p);
        if (cp == '"' || cp == '\\') sb_addn(s, "\\", 1);
        put_cp(s, cp);
    }
}

// The 256 byte pieces (ids 0..255), then extra pieces (ids 256...), merges as
// given (pairs of byte strings), then the rest of the document.
static char *doc(const char *const *extra, const char *const *merges, int pair_form, const char *ignore, const char *rest) {
    strbuf s = {0};
    sb_add(&s, "{\"version\": \"1.0\", \"normalizer\": null, ");
    sb_add(&s, rest);
    sb_add(&s, "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"byte_fallback\": false, ");
    sb_addf(&s, "\"ignore_merges\": %s, \"vocab\": {", ignore);
    for (int b = 0; b < 256; b++) {
        char one[2] = {(char)b, 0};
        sb_add(&s, b ? ", \"" : "\"");
        if (b == 0) put_cp(&s, gpt2_cp(0));
        else piece(&s, one);
        sb_addf(&s, "\": %d", b);
    }
    for (int k = 0; extra[k]; k++) {
        sb_add(&s, ", \"");
        piece(&s, extra[k]);
        sb_addf(&s, "\": %d", 256 + k);
    }
    sb_add(&s, "}, \"merges\": [");
    for (int k = 0; merges[k]; k += 2) {
        sb_add(&s, k ? ", " : "");
        sb_add(&s, pair_form ? "[\"" : "\"");
        piece(&s, merges[k]);
        sb_add(&s, pair_form ? "\", \"" : " ");
        piece(&s, merges[k + 1]);
        sb_add(&s, pair_form ? "\"]" : "\"");
    }
    sb_add(&s, "]}}");
    return s.s;
}

static const char *const pretok =
    "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": "
    "\"\\\\s+|\\\\p{L}+|\\\\p{N}{1,3}|[^\\\\s\\\\p{L}\\\\p{N}]+\"}, \"behavior\": \"Isolated\", \"invert\": false}, "
    "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]}, "
    "\"decoder\": {\"type\": \"ByteLevel\"}, ";
static const char *const added =
    "\"added_tokens\": [{\"id\": 300, \"content\": \"<|end|>\", \"special\": true}, "
    "{\"id\": 301, \"content\": \"<|end|>x\", \"special\": true}], ";

static const char *const extra[] = {"ab", "abc", "bc", "abcd", "12", "123", NULL};
static const char *const merges[] = {"b", "c", "a", "b", "a", "bc", "ab", "c", "abc", "d", "1", "2", "12", "3", NULL};
// ids: a..d = 97..100; ab 256, abc 257, bc 258, abcd 259, 12 260, 123 261

static int encode(const bpe *b, const char *text, int flags, int *out, int cap) {
    int *ids, n;
    if (bpe_encode(b, text, strlen(text), flags, &ids, &n)) return -1;
    for (int i = 0; i < n && i < cap; i++) out[i] = ids[i];
    free(ids);
    return n;
}

#define CHECK_IDS(b, text, flags, ...)                                                                  \
    do {                                                                                              \
        const int want_[] = {__VA_ARGS__};                                                            \
        int got_[64], n_ = encode(b, text, flags, got_, 64), nw_ = (int)(sizeof want_ / sizeof *want_); \
        int same_ = n_ == nw_;                                                                        \
        for (int i_ = 0; same_ && i_ < n_; i_++) same_ = got_[i_] == want_[i_];                      \
        CHECKF(same_, "encode \"%s\": %d ids (first %d), want %d (first %d)", text, n_, n_ > 0 ? got_[0] : -1, nw_, want_[0]); \
    } while (0)

// The streamed pieces of ids, joined, equal bpe_decode of them.
static void check_stream(const bpe *b, const int *ids, int n) {
    char *whole;
    size_t wl;
    CHECK_OK(bpe_decode(b, ids, n, &whole, &wl));
    bpe_stream *st;
    CHECK_OK(bpe_stream_init(&st, b));
    strbuf s = {0};
    const char *t;
    size_t tl;
    for (int i = 0; i < n; i++) {
        CHECK_OK(bpe_stream_push(st, ids[i], &t, &tl));
        sb_addn(&s, t, tl);
    }
    CHECK_OK(bpe_stream_finish(st, &t, &tl));
    sb_addn(&s, t, tl);
    CHECKF(s.n == wl && !memcmp(s.s, whole, wl), "stream (%zu bytes) != decode (%zu bytes)", s.n, wl);
    bpe_stream_free(st);
    sb_free(&s);
    free(whole);
}

static void want_error(const char *json, const char *what) {
    bpe *b = NULL;
    int rc = bpe_load_mem(&b, json, strlen(json), "t.json");
    CHECKF(rc != QL_OK && strstr(ql_errmsg(), what), "want an error naming '%s', got %d: %s", what, rc, ql_errmsg());
    bpe_free(b);
}

int main(void) {
    bpe *b = NULL;
    for (int form = 0; form < 2; form++) {
        char *js = doc(extra, merges, form, "false", pretok);
        char *full = malloc(strlen(js) + strlen(added) + 1);
        // added tokens go before "model" (any order is valid JSON)
        size_t cut = strlen("{\"version\": \"1.0\", \"normalizer\": null, ");
        memcpy(full, js, cut);
        strcpy(full + cut, added);
        strcat(full, js + cut);
        CHECK_OK(bpe_load_mem(&b, full, strlen(full), "t.json"));
        free(js), free(full);
        if (!b) return test_finish("test_bpe");
        CHECK(bpe_vocab_size(b) == 302);
        // "abcd": b+c (rank 0) first, then a+bc (2), then abc+d (4)
        CHECK_IDS(b, "abcd", BPE_SPECIAL, 259);
        CHECK_IDS(b, "abd", BPE_SPECIAL, 256, 'd');
        CHECK_IDS(b, "cab", BPE_SPECIAL, 'c', 256);
        CHECK_IDS(b, "1234567", BPE_SPECIAL, 261, '4', '5', '6', '7');  // \p{N}{1,3}: 123|456|7
        CHECK_IDS(b, "ab  12", BPE_SPECIAL, 256, ' ', ' ', 260);
        // added tokens: the longest match first; special ones only with BPE_SPECIAL
        CHECK_IDS(b, "ab<|end|>xab", BPE_SPECIAL, 256, 301, 256);
        CHECK_IDS(b, "ab<|end|>ab", BPE_SPECIAL, 256, 300, 256);
        CHECK_IDS(b, "<|end|>", 0, '<', '|', 'e', 'n', 'd', '|', '>');
        int got[4];
        CHECK(encode(b, "", BPE_SPECIAL, got, 4) == 0);
        // ill-formed UTF-8 -> U+FFFD (EF BF BD) per maximal subpart: E2 82 is one part, FF another
        CHECK_IDS(b, "a\xE2\x82z\xFF", BPE_SPECIAL, 'a', 0xEF, 0xBF, 0xBD, 'z', 0xEF, 0xBF, 0xBD);
        // decode: added tokens as their text; ill-formed bytes as U+FFFD
        int ids[] = {259, 300, 0xE2, 0x82};
        char *text;
        size_t tl;
        CHECK_OK(bpe_decode(b, ids, 4, &text, &tl));
        CHECKF(tl == 14 && !memcmp(text, "abcd<|end|>\xEF\xBF\xBD", 15), "decode: '%s'", text);
        free(text);
        int bad = 302;
        CHECK(bpe_decode(b, &bad, 1, &text, NULL) == QL_EINVAL && strstr(ql_errmsg(), "302"));
        // streaming: a 3-byte character split over tokens, a cut one, a 4-byte one
        int s1[] = {'a', 0xE2, 0x82, 0xAC, 'b', 0xE2, 0x82, 'c', 0xF0, 0x9F, 0x98, 0x80, 0xF0, 0x9F};
        for (int n = 0; n <= 14; n++) check_stream(b, s1, n);
        bpe_stream *st;
        const char *t;
        CHECK_OK(bpe_stream_init(&st, b));
        CHECK_OK(bpe_stream_push(st, 0xE2, &t, &tl));
        CHECK(tl == 0);  // held: it may become a character
        CHECK_OK(bpe_stream_push(st, 0x82, &t, &tl));
        CHECK(tl == 0);
        CHECK_OK(bpe_stream_push(st, 0xAC, &t, &tl));
        CHECK(tl == 3 && !memcmp(t, "\xE2\x82\xAC", 3));
        CHECK_OK(bpe_stream_push(st, 0xE2, &t, &tl));
        CHECK_OK(bpe_stream_push(st, 'x', &t, &tl));  // proven ill-formed: U+FFFD, then x, at once
        CHECK(tl == 4 && !memcmp(t, "\xEF\xBF\xBDx", 4));
        bpe_stream_free(st);
        bpe_free(b);
        b = NULL;
    }
    // ignore_merges: a word that is a piece is taken whole, whatever the merges say
    {
        const char *const ex[] = {"ab", "abc", "bc", "abcd", "12", "123", "xyz", NULL};
        char *js = doc(ex, merges, 0, "true", pretok);
        CHECK_OK(bpe_load_mem(&b, js, strlen(js), "t.json"));
        if (b) CHECK_IDS(b, "xyz", BPE_SPECIAL, 262);
        bpe_free(b);
        b = NULL;
        free(js);
        js = doc(ex, merges, 0, "false", pretok);
        CHECK_OK(bpe_load_mem(&b, js, strlen(js), "t.json"));
        if (b) CHECK_IDS(b, "xyz", BPE_SPECIAL, 'x', 'y', 'z');  // no merge makes it
        bpe_free(b);
        free(js);
    }
    // the post-processor: a TemplateProcessing's leading special token is the BOS it adds
    {
        char rest[1024];
        const char *tp = "\"post_processor\": {\"type\": \"Sequence\", \"processors\": [{\"type\": \"ByteLevel\"}, "
                         "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<|end|>\", "
                         "\"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": "
                         "{\"<|end|>\": {\"id\": \"<|end|>\", \"ids\": [300], \"tokens\": [\"<|end|>\"]}}}]}, ";
        const char *no_bos = "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"Sequence\": "
                             "{\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": {}}, ";
        const char *bad = "\"post_processor\": {\"type\": \"RobertaProcessing\"}, ";
        const char *posts[] = {tp, no_bos, "\"post_processor\": {\"type\": \"ByteLevel\"}, ", bad};
        const int want[] = {300, -1, -2, 0};
        for (int k = 0; k < 4; k++) {
            snprintf(rest, sizeof rest, "%s%s", posts[k], pretok);
            char *js = doc(extra, merges, 0, "false", rest);
            bpe *pb = NULL;
            int rc = bpe_load_mem(&pb, js, strlen(js), "t.json");
            if (k < 3) CHECKF(rc == QL_OK && bpe_post_bos(pb) == want[k], "post_processor %d: %d", k, pb ? bpe_post_bos(pb) : rc);
            else CHECKF(rc != QL_OK && strstr(ql_errmsg(), "post-processor \"RobertaProcessing\" is not supported"), "%s", ql_errmsg());
            bpe_free(pb);
            free(js);
        }
    }
    // bad input: each refused with the field named
    {
        char *js = doc(extra, merges, 0, "false", pretok);
        want_error("{\"model\": ", "invalid JSON");
        want_error("[1]", "expected a JSON object");
        want_error("{\"decoder\": {\"type\": \"ByteLevel\"}}", "model: missing");
#define SWAP(from, to, what)                                              \
    do {                                                                  \
        char *p_ = strstr(js, from);                                      \
        CHECKF(p_ != NULL, "the test document has no %s", from);          \
        if (!p_) break;                                                   \
        strbuf s_ = {0};                                                  \
        sb_addn(&s_, js, (size_t)(p_ - js));                              \
        sb_add(&s_, to);                                                  \
        sb_add(&s_, p_ + strlen(from));                                   \
        want_error(s_.s, what);                                           \
        sb_free(&s_);                                                     \
    } while (0)
        SWAP("\"normalizer\": null", "\"normalizer\": {\"type\": \"NFC\"}", "normalizer \"NFC\" is not supported");
        SWAP("{\"type\": \"ByteLevel\", \"add_prefix_space\"", "{\"type\": \"Metaspace\", \"add_prefix_space\"",
             "pre_tokenizer.pretokenizers[1]: pre-tokenizer \"Metaspace\" is not supported");
        SWAP("\"behavior\": \"Isolated\"", "\"behavior\": \"Removed\"", "pre_tokenizer.pretokenizers[0].behavior");
        SWAP("{\"Regex\": \"", "{\"Regex\": \"(", "pattern: the regex does not compile");
        SWAP("\"decoder\": {\"type\": \"ByteLevel\"}", "\"decoder\": {\"type\": \"WordPiece\"}", "decoder: type \"WordPiece\" is not supported");
        SWAP("{\"type\": \"BPE\"", "{\"type\": \"Unigram\"", "model: type \"Unigram\" is not supported");
        SWAP("\"dropout\": null", "\"dropout\": 0.1", "model.dropout is 0.1: not supported");
        SWAP("\"byte_fallback\": false", "\"byte_fallback\": true", "model.byte_fallback");
        SWAP("\"merges\": [\"", "\"merges\": [\"zz\", \"", "model.merges[0]: \"zz\": expected two pieces");
        SWAP("\"merges\": [\"", "\"merges\": [\"q\xC4\xA0 z\", \"", "model.merges[0]: \"q\xC4\xA0\" is not a piece");
        SWAP("\"merges\": [\"", "\"merges\": [\"c d\", \"", "model.merges[0]: \"c\" + \"d\" is not a piece");
        SWAP("\"merges\": [", "\"merges\": [7, ", "model.merges[0]: expected");
        SWAP("\"vocab\": {\"", "\"vocab\": {\"dup\": 5, \"", "id 5 is given twice");
        SWAP("\"vocab\": {\"", "\"vocab\": {\"neg\": -1, \"", "model.vocab: id -1 out of range");
        SWAP("\"vocab\": {\"", "\"vocab\": {\"str\": \"x\", \"", "model.vocab: entry 0: expected an integer id");
        SWAP("\"vocab\": {\"", "\"vocab\": {\"bad\xE2\x82\xAC\": 400, \"", "is not byte-level");
        SWAP("\"vocab\": {\"", "\"vocab\": {\"ok\": 400, \"\xFF\": 401, \"", "not UTF-8");
        free(js);
    }
    return test_finish("test_bpe");
}
