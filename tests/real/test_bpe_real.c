// test_bpe_real.c: the byte-level BPE tokenizer on the real Llama 3 tokenizer.json
// (../shared/models/tokenizers/llama3) against an independent reference: the
// JavaScript tokenizer @lenml/tokenizers reading the same file, recorded in
// tests/fixtures/llama3_tokenizer/corpus.jsonl (10,260 texts: prose, code, numbers,
// whitespace runs, contractions, many scripts, emoji and ZWJ sequences, ill-formed
// UTF-8, special tokens inside text, the empty string, 10,000 random strings; see
// its README). For every text: the ids with special-token text recognized and
// kept literal, the decoded text, decode(encode(x)) == x for well-formed UTF-8
// (the replaced text otherwise), and streaming decode == decode. Then the llama3
// chat template's rendering equals the reference's ids for the same conversation
// written out, with the loss mask on the assistant's tokens only. Skips (77)
// without the models directory.
#include <stdlib.h>
#include <string.h>

#include "common/bpe.h"
#include "common/err.h"
#include "common/json.h"
#include "common/strbuf.h"
#include "common/tokenizer.h"
#include "datasets/dataset.h"
#include "testutil.h"

// Three texts (js-ws-nel, js-ws-bom, js-contr-long-s) are where the fixture's README
// warns that JavaScript's regexes may differ from the Rust `tokenizers` library's
// (U+0085 and U+FEFF as \s, U+017F in the case-insensitive contractions). PCRE2
// in UCP mode agrees with the JavaScript reference on all three, so they are
// checked like the rest; what the Rust library gives there is not proven here.

static int hexval(int c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

static char *unhex(const char *h, size_t *n) {
    size_t l = strlen(h);
    char *o = malloc(l / 2 + 1);
    for (size_t i = 0; i + 1 < l; i += 2) o[i / 2] = (char)(hexval(h[i]) * 16 + hexval(h[i + 1]));
    o[l / 2] = 0;
    *n = l / 2;
    return o;
}

static int get_ids(const json_doc *d, const char *key, int **ids) {
    int v = json_find(d, 0, key);
    if (v < 0) return -1;
    int n = json_size(d, v);
    *ids = malloc(sizeof(int) * (size_t)(n + 1));
    for (int k = 0, it = v + 1; k < n; k++, it = json_next(d, it)) {
        long long x = -1;
        json_get_int(d, it, key, &x);
        (*ids)[k] = (int)x;
    }
    return n;
}

static char *get_hex(const json_doc *d, const char *key, size_t *n) {
    int v = json_find(d, 0, key);
    char *h = NULL;
    if (v < 0 || json_get_string(d, v, key, &h, NULL)) return NULL;
    char *o = unhex(h, n);
    free(h);
    return o;
}

static int same_ids(const int *a, int na, const int *b, int nb) {
    if (na != nb) return 0;
    for (int i = 0; i < na; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static void show_ids(const char *what, const int *a, int n) {
    fprintf(stderr, "  %s (%d):", what, n);
    for (int i = 0; i < n && i < 24; i++) fprintf(stderr, " %d", a[i]);
    fprintf(stderr, n > 24 ? " ...\n" : "\n");
}

static int failed_cases = 0;
static int chat_turn[16], n_chat_turn = -1;  // the reference's ids of corpus case sp-chat-turn

static void check_case(const bpe *b, const json_doc *d, int line) {
    char *name = NULL;
    json_get_string(d, json_find(d, 0, "name"), "name", &name, NULL);
    size_t tn, dn, rn = 0;
    char *text = get_hex(d, "hex", &tn), *dec = get_hex(d, "decoded_hex", &dn), *rep = get_hex(d, "replaced_hex", &rn);
    int *want = NULL, *lit = NULL, *got = NULL, *got_lit = NULL, ng = 0, ngl = 0;
    int nw = get_ids(d, "ids", &want), nl = get_ids(d, "ids_literal", &lit);
    int before = test_failures;
    CHECK_OK(bpe_encode(b, text, tn, BPE_SPECIAL, &got, &ng));
    CHECK_OK(bpe_encode(b, text, tn, 0, &got_lit, &ngl));
    CHECKF(same_ids(got, ng, want, nw), "line %d (%s): ids differ from the reference", line, name);
    CHECKF(nl >= 0 && same_ids(got_lit, ngl, lit, nl), "line %d (%s): literal ids differ from the reference", line, name);
    if (test_failures > before && failed_cases < 10) show_ids("want", want, nw), show_ids("got ", got, ng);
    // decode of the reference's ids, and decode(encode(x))
    char *back = NULL, *again = NULL;
    size_t bl = 0, al = 0;
    CHECK_OK(bpe_decode(b, want, nw, &back, &bl));
    CHECKF(back && bl == dn && !memcmp(back, dec, dn), "line %d (%s): decode differs from the reference", line, name);
    CHECK_OK(bpe_decode(b, got, ng, &again, &al));
    const char *orig = rep ? rep : text;
    size_t on = rep ? rn : tn;
    CHECKF(again && al == on && !memcmp(again, orig, on), "line %d (%s): decode(encode(x)) != x", line, name);
    // streaming decode == decode
    bpe_stream *st;
    CHECK_OK(bpe_stream_init(&st, b));
    strbuf s = {0};
    const char *p;
    size_t pl;
    for (int i = 0; i < ng; i++) {
        CHECK_OK(bpe_stream_push(st, got[i], &p, &pl));
        sb_addn(&s, p, pl);
    }
    CHECK_OK(bpe_stream_finish(st, &p, &pl));
    sb_addn(&s, p, pl);
    CHECKF(s.n == al && (al == 0 || !memcmp(s.s, again, al)), "line %d (%s): streamed decode != decode", line, name);
    if (test_failures > before) failed_cases++;
    if (name && !strcmp(name, "sp-chat-turn") && nw <= 16) memcpy(chat_turn, want, sizeof(int) * (size_t)nw), n_chat_turn = nw;
    sb_free(&s);
    bpe_stream_free(st);
    free(back), free(again), free(got), free(got_lit), free(want), free(lit), free(text), free(dec), free(rep), free(name);
}

// The llama3 template: a user turn renders as the reference's ids for the same
// turn written out (corpus case sp-chat-turn: "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"),
// and a training sample is trained on the assistant's content and <|eot_id|> only.
static void check_template(const char *tj, const int *turn, int nturn) {
    tokenizer *t = NULL;
    CHECK_OK(tok_load_file(&t, tj));
    if (!t) return;
    dataset_options o;
    dataset_options_default(&o);
    o.chat_template = DS_TEMPLATE_LLAMA3, o.add_bos = 1, o.bos_id = 128000, o.eos_id = 128001;
    ds_message m[2] = {{DS_ROLE_USER, "hi"}, {DS_ROLE_ASSISTANT, "  Ahoy there.  "}};
    int *ids = NULL, n = 0;
    CHECK_OK(ds_render_prompt(&ids, &n, m, 1, t, &o));
    // BOS, the user turn, then the assistant's header: <|start_header_id|>assistant<|end_header_id|>\n\n,
    // its markers and "\n\n" as the reference wrote them in the user's turn
    int *asst = NULL, na = 0;
    CHECK_OK(tok_encode(t, "assistant", 9, 0, &asst, &na));
    const int tail[] = {turn[0], na == 1 ? asst[0] : -1, turn[2], turn[3]};
    free(asst);
    CHECKF(n == 1 + nturn + 4 && ids[0] == 128000 && same_ids(ids + 1, nturn, turn, nturn) &&
               same_ids(ids + 1 + nturn, 4, tail, 4),
           "llama3 prompt: %d ids", n);
    if (test_failures) show_ids("got", ids, n), show_ids("turn", turn, nturn);
    free(ids);
    uint8_t *mask = NULL;
    CHECK_OK(ds_render(&ids, &mask, &n, DS_FORMAT_CHAT, m, 2, t, &o));
    // the assistant's content is trimmed ("Ahoy there." = 3 tokens) and trained with its <|eot_id|>
    int *content = NULL, nc = 0;
    CHECK_OK(tok_encode(t, "Ahoy there.", 11, 0, &content, &nc));
    int k = 1 + nturn + 4;  // where the assistant's content starts
    CHECKF(n == k + nc + 1 && same_ids(ids + k, nc, content, nc) && ids[n - 1] == 128009, "llama3 sample: %d ids", n);
    for (int i = 0; i < n && mask; i++) CHECKF(mask[i] == (i >= k), "llama3 sample: token %d (id %d) mask %d", i, ids[i], mask[i]);
    free(ids), free(mask), free(content);
    tok_free(t);
}

int main(void) {
    const char *dir = test_models_dir();
    const char *tj = dir ? test_path(dir, "tokenizers/llama3/tokenizer.json") : NULL;
    FILE *f = tj ? fopen(tj, "rb") : NULL;
    if (!f) {
        fprintf(stderr, "test_bpe_real: no %s, skipped\n", tj ? tj : "models directory");
        return TEST_SKIP;
    }
    fclose(f);
    bpe *b = NULL;
    CHECK_OK(bpe_load_file(&b, tj));
    if (!b) return test_finish("test_bpe_real");
    CHECK(bpe_vocab_size(b) == 128256);
    const char *corpus = test_path(test_source_dir(), "tests/fixtures/llama3_tokenizer/corpus.jsonl");
    char *buf = NULL;
    size_t len = 0;
    CHECK_OK(file_read_all(corpus, (size_t)64 << 20, &buf, &len));
    int lines = 0;
    for (size_t p = 0; buf && p < len;) {
        size_t e = p;
        while (e < len && buf[e] != '\n') e++;
        if (e > p) {
            json_doc d;
            lines++;
            if (json_parse(&d, buf + p, e - p, "corpus.jsonl") == QL_OK) {
                check_case(b, &d, lines);
                json_free(&d);
            } else CHECKF(0, "corpus.jsonl:%d: %s", lines, ql_errmsg());
        }
        p = e + 1;
    }
    free(buf);
    CHECKF(n_chat_turn == 6, "the corpus has no 6-token case sp-chat-turn");
    if (n_chat_turn == 6) check_template(tj, chat_turn, n_chat_turn);
    fprintf(stderr, "test_bpe_real: %d texts checked against the reference, %d failed\n", lines, failed_cases);
    CHECK(lines >= 10000);
    bpe_free(b);
    return test_finish("test_bpe_real");
}
