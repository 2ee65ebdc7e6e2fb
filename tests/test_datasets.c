// test_datasets.c: datasets/ on the project's tiny tokenizer
// (tests/fixtures/tokenizer/tiny.model): format detection, each template's token
// layout against docs/datasets.md (built here from spm_encode of the documented
// parts), loss masks, truncation, packing, shuffle and split, the sample style
// datasets, and the bad-JSONL corpus tests/fixtures/datasets/bad_*.jsonl
// (hand-written; bad_utf8 and bad_skip hold raw invalid bytes).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/rng.h"
#include "common/tokenizer.h"
#include "datasets/dataset.h"
#include "testutil.h"

static tokenizer *tok;
static int BOS, EOS;

// ---- expected sequences, built part by part ----
typedef struct {
    int ids[1024];
    uint8_t mask[1024];
    int n;
} seq;

static void e_id(seq *s, int id, int trained) {
    QL_ASSERT(s->n < 1024);
    s->ids[s->n] = id, s->mask[s->n] = (uint8_t)trained, s->n++;
}

static void e_text(seq *s, const char *text, int trained) {
    int *ids, n;
    QL_ASSERT(tok_encode(tok, text, strlen(text), 0, &ids, &n) == QL_OK);
    for (int i = 0; i < n; i++) e_id(s, ids[i], trained);
    free(ids);
}

static void check_render(const char *what, ds_format f, const ds_message *m, int nm, const dataset_options *o,
                         seq *want) {
    int *ids, n;
    uint8_t *mask;
    int rc = ds_render(&ids, &mask, &n, f, m, nm, tok, o);
    CHECKF(rc == QL_OK, "%s: %s", what, ql_errmsg());
    if (rc != QL_OK) return;
    want->mask[0] = 0;
    int same = n == want->n && !memcmp(ids, want->ids, sizeof(int) * (size_t)n) && !memcmp(mask, want->mask, (size_t)n);
    CHECKF(same, "%s: render differs from the documented layout (%d vs %d tokens)", what, n, want->n);
    if (!same) {
        for (int i = 0; i < n || i < want->n; i++)
            fprintf(stderr, "  %3d got %5d/%d want %5d/%d  %s\n", i, i < n ? ids[i] : -9, i < n ? mask[i] : 9,
                    i < want->n ? want->ids[i] : -9, i < want->n ? want->mask[i] : 9,
                    i < n ? tok_piece(tok, ids[i]) : "");
    } else {
        printf("  %s: %d tokens ok\n", what, n);
    }
    free(ids);
    free(mask);
}

static void test_templates(void) {
    dataset_options o;
    dataset_options_default(&o);
    ds_message conv[] = {{DS_ROLE_SYSTEM, "Be brief."}, {DS_ROLE_USER, "Hi there"}, {DS_ROLE_ASSISTANT, "Hello."},
                         {DS_ROLE_USER, "Bye"},         {DS_ROLE_ASSISTANT, "Farewell."}};
    seq w;

    // text: BOS text EOS, all trained
    w.n = 0;
    e_id(&w, BOS, 0), e_text(&w, "Once upon a time.", 1), e_id(&w, EOS, 1);
    check_render("text", DS_FORMAT_TEXT, (ds_message[]){{DS_ROLE_USER, "Once upon a time."}}, 1, &o, &w);

    // prompt/completion: BOS prompt | completion EOS
    w.n = 0;
    e_id(&w, BOS, 0), e_text(&w, "Where is the ship?", 0), e_text(&w, "In the bay.", 1), e_id(&w, EOS, 1);
    ds_message pc[] = {{DS_ROLE_USER, "Where is the ship?"}, {DS_ROLE_ASSISTANT, "In the bay."}};
    check_render("prompt/completion", DS_FORMAT_PROMPT, pc, 2, &o, &w);

    // llama2
    w.n = 0;
    e_id(&w, BOS, 0), e_text(&w, "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST]", 0);
    e_text(&w, "Hello.", 1), e_id(&w, EOS, 1);
    e_id(&w, BOS, 0), e_text(&w, "[INST] Bye [/INST]", 0), e_text(&w, "Farewell.", 1), e_id(&w, EOS, 1);
    check_render("llama2", DS_FORMAT_CHAT, conv, 5, &o, &w);

    // chatml
    o.chat_template = DS_TEMPLATE_CHATML;
    w.n = 0;
    e_id(&w, BOS, 0), e_text(&w, "<|im_start|>system\nBe brief.<|im_end|>\n", 0);
    e_text(&w, "<|im_start|>user\nHi there<|im_end|>\n", 0);
    e_text(&w, "<|im_start|>assistant\n", 0), e_text(&w, "Hello.<|im_end|>", 1), e_id(&w, EOS, 1);
    e_text(&w, "<|im_start|>user\nBye<|im_end|>\n", 0);
    e_text(&w, "<|im_start|>assistant\n", 0), e_text(&w, "Farewell.<|im_end|>", 1), e_id(&w, EOS, 1);
    check_render("chatml", DS_FORMAT_CHAT, conv, 5, &o, &w);

    // zephyr
    o.chat_template = DS_TEMPLATE_ZEPHYR;
    w.n = 0;
    e_id(&w, BOS, 0), e_text(&w, "<|system|>\nBe brief.", 0), e_id(&w, EOS, 0);
    e_text(&w, "<|user|>\nHi there", 0), e_id(&w, EOS, 0);
    e_text(&w, "<|assistant|>\n", 0), e_text(&w, "Hello.", 1), e_id(&w, EOS, 1);
    e_text(&w, "<|user|>\nBye", 0), e_id(&w, EOS, 0);
    e_text(&w, "<|assistant|>\n", 0), e_text(&w, "Farewell.", 1), e_id(&w, EOS, 1);
    check_render("zephyr", DS_FORMAT_CHAT, conv, 5, &o, &w);

    // train_on_inputs: every token but the first
    o.train_on_inputs = 1;
    for (int i = 0; i < w.n; i++) w.mask[i] = 1;
    check_render("zephyr train_on_inputs", DS_FORMAT_CHAT, conv, 5, &o, &w);

    // llama2 needs user/assistant pairs
    o = (dataset_options){0};
    dataset_options_default(&o);
    int *ids;
    uint8_t *mask;
    int n;
    ds_message bad_order[] = {{DS_ROLE_USER, "a"}, {DS_ROLE_USER, "b"}, {DS_ROLE_ASSISTANT, "c"}};
    CHECK(ds_render(&ids, &mask, &n, DS_FORMAT_CHAT, bad_order, 3, tok, &o) == QL_EFORMAT);
    CHECKF(strstr(ql_errmsg(), "messages[1]") && strstr(ql_errmsg(), "llama2"), "got: %s", ql_errmsg());
    o.chat_template = DS_TEMPLATE_CHATML;
    CHECK_OK(ds_render(&ids, &mask, &n, DS_FORMAT_CHAT, bad_order, 3, tok, &o));
    free(ids), free(mask);

    ds_template t;
    CHECK_OK(ds_template_parse(&t, "zephyr"));
    CHECK(t == DS_TEMPLATE_ZEPHYR);
    CHECK(ds_template_parse(&t, "vicuna") == QL_EINVAL && strstr(ql_errmsg(), "vicuna"));
    CHECK_OK(ds_template_parse(&t, "llama3"));
    CHECK(t == DS_TEMPLATE_LLAMA3 && !strcmp(ds_template_name(t), "llama3"));
    // the template a command picks: the option, else the model's Jinja recognized, else llama2
    const char *l3 = "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
                     "+ message['content'] | trim + '<|eot_id|>' }}{% endfor %}";
    CHECK_OK(ds_template_choose(&t, "", NULL));
    CHECK(t == DS_TEMPLATE_LLAMA2);
    CHECK_OK(ds_template_choose(&t, "", l3));
    CHECK(t == DS_TEMPLATE_LLAMA3);
    CHECK_OK(ds_template_choose(&t, "", "{% for m in messages %}<|im_start|>{{ m['role'] }}{% endfor %}"));
    CHECK(t == DS_TEMPLATE_CHATML);
    CHECK_OK(ds_template_choose(&t, "zephyr", l3));
    CHECK(t == DS_TEMPLATE_ZEPHYR);
    CHECK(ds_template_choose(&t, "", "{{ bos_token }}{% for m in messages %}### {{ m['content'] }}{% endfor %}") == QL_EINVAL &&
          strstr(ql_errmsg(), "--chat-template"));
    const char *const *st = ds_template_stops(DS_TEMPLATE_LLAMA3);
    CHECK(st[0] && !strcmp(st[0], "<|eot_id|>") && !st[1]);
}

static int load_str(dataset *d, const char *text, const dataset_options *o) {
    return dataset_load_mem(d, text, strlen(text), "mem.jsonl", tok, o);
}

static void test_detection_and_masks(void) {
    dataset_options o;
    dataset_options_default(&o);
    dataset d;
    struct { const char *text; ds_format f; } cases[] = {
        {"{\"text\": \"a b\"}\n{\"text\": \"c\", \"id\": 7}\n", DS_FORMAT_TEXT},
        {"{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"completion\": \"d\", \"prompt\": \"c\"}\r\n", DS_FORMAT_PROMPT},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n",
         DS_FORMAT_CHAT},
        {"{\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\"}\n{\"instruction\": \"a\", \"output\": \"b\"}\n"
         "{\"instruction\": \"a\", \"input\": null, \"output\": \"b\"}\n{\"instruction\": \"a\", \"input\": \"x\", \"output\": \"b\"}",
         DS_FORMAT_ALPACA},
    };
    for (int k = 0; k < 4; k++) {
        CHECK_OK(load_str(&d, cases[k].text, &o));
        CHECKF(d.format == cases[k].f, "case %d: format %s", k, ds_format_name(d.format));
        dataset_free(&d);
    }
    // malformed JSON: the column comes from jsmn's position
    CHECK(load_str(&d, "{\"text\": \"a\"}\n{\"text\": \"a\" \"b\"}\n", &o) == QL_EFORMAT);
    CHECKF(strstr(ql_errmsg(), "mem.jsonl:2:14: invalid JSON: expected ',' or '}'"), "got: %s", ql_errmsg());
    printf("  expected error: %s\n", ql_errmsg());
    CHECK(load_str(&d, "{\"text\": \"a\"} x\n", &o) == QL_EFORMAT);
    CHECKF(strstr(ql_errmsg(), "mem.jsonl:1:15: invalid JSON"), "got: %s", ql_errmsg());
    // Alpaca with input renders as one user turn "instruction\n\ninput"
    CHECK_OK(load_str(&d, "{\"instruction\": \"Greet.\", \"input\": \"a duke\", \"output\": \"Your Grace.\"}", &o));
    seq w = {.n = 0};
    e_id(&w, BOS, 0), e_text(&w, "[INST] Greet.\n\na duke [/INST]", 0), e_text(&w, "Your Grace.", 1), e_id(&w, EOS, 1);
    CHECK(d.n_samples == 1 && d.samples[0].n == w.n && !memcmp(d.samples[0].ids, w.ids, sizeof(int) * (size_t)w.n) &&
          !memcmp(d.samples[0].mask, w.mask, (size_t)w.n));
    dataset_free(&d);

    // masks: trained = completion + EOS exactly; stats add up
    CHECK_OK(load_str(&d, "{\"prompt\": \"Where?\", \"completion\": \"Here, matey.\"}\n", &o));
    int *c, nc;
    CHECK_OK(tok_encode(tok, "Here, matey.", 12, 0, &c, &nc));
    long trained = 0;
    for (int t = 0; t < d.samples[0].n; t++) trained += d.samples[0].mask[t];
    CHECK(trained == nc + 1 && d.stats.trained_tokens == nc + 1);
    CHECK(d.samples[0].ids[d.samples[0].n - 1] == EOS && d.samples[0].mask[d.samples[0].n - 1] == 1);
    CHECK(!memcmp(d.samples[0].ids + d.samples[0].n - 1 - nc, c, sizeof(int) * (size_t)nc));
    CHECK(d.samples[0].mask[d.samples[0].n - 2 - nc] == 0);
    free(c);
    dataset_free(&d);
}

static void test_truncation_and_packing(void) {
    dataset_options o;
    dataset_options_default(&o);
    o.seq_len = 24;
    // text samples of different lengths, two longer than 24 tokens
    const char *text =
        "{\"text\": \"Once upon a time there was a little girl.\"}\n"
        "{\"text\": \"She liked to play.\"}\n"
        "{\"text\": \"One day she went to the park with her mom and saw a big red ball and a dog and a cat and a bird.\"}\n"
        "{\"text\": \"Tim was happy.\"}\n"
        "{\"prompt\": \"x\", \"completion\": \"y\"}\n";
    dataset d;
    CHECK(load_str(&d, text, &o) == QL_EFORMAT);
    CHECKF(strstr(ql_errmsg(), "mem.jsonl:5:1: mixed formats"), "got: %s", ql_errmsg());
    o.skip_invalid = 1;
    CHECK_OK(load_str(&d, text, &o));
    CHECK(d.n_samples == 4 && d.stats.skipped == 1 && d.stats.lines == 5);
    int cut = 0;
    long tokens = 0;
    for (int i = 0; i < d.n_samples; i++) {
        CHECK(d.samples[i].n <= 24);
        cut += d.samples[i].n == 24;
        tokens += d.samples[i].n;
    }
    CHECKF(d.stats.truncated >= 1 && d.stats.truncated == cut, "truncated %ld", d.stats.truncated);
    CHECK(d.stats.tokens == tokens);
    printf("  truncation: %ld of %d samples cut to 24 tokens\n", d.stats.truncated, d.n_samples);
    // the cut sample keeps its start: same first 24 ids as an uncut load
    dataset full;
    dataset_options o2 = o;
    o2.seq_len = 1000;
    CHECK_OK(load_str(&full, text, &o2));
    CHECK(full.samples[2].n > 24 && !memcmp(full.samples[2].ids, d.samples[2].ids, sizeof(int) * 24));
    dataset_free(&full);

    ds_packed p;
    CHECK_OK(dataset_pack(&p, &d, 24, 0));
    CHECK(p.T == 24 && p.R >= 2);
    CHECK(p.n_targets == d.stats.trained_tokens);  // every trained token is a target
    // walk rows: every sample appears whole, in order, positions restart, no target crosses a segment
    int next = 0;
    for (int r = 0; r < p.R; r++) {
        const int *tk = p.tokens + r * 24, *tg = p.targets + r * 24, *ps = p.pos + r * 24, *sg = p.seg + r * 24;
        int t = 0, s = 0;
        while (t < 24 && sg[t] >= 0) {
            CHECK(next < d.n_samples);
            const ds_sample *x = &d.samples[next++];
            for (int k = 0; k < x->n; k++, t++) {
                CHECK(tk[t] == x->ids[k] && ps[t] == k && sg[t] == s);
                int want = k + 1 < x->n && x->mask[k + 1] ? x->ids[k + 1] : -1;
                CHECK(tg[t] == want);
            }
            s++;
        }
        for (; t < 24; t++) CHECK(sg[t] == -1 && tg[t] == -1 && ps[t] == 0 && tk[t] == 0);
    }
    CHECK(next == d.n_samples);
    CHECK(ds_packed_nbatches(&p, 2) == (p.R + 1) / 2);
    ds_batch b = ds_packed_batch(&p, ds_packed_nbatches(&p, 2) - 1, 2);
    CHECK(b.B == (p.R % 2 ? 1 : 2) && b.T == 24);
    ds_packed_free(&p);
    CHECK(dataset_pack(&p, &d, 10, 0) == QL_EINVAL);
    dataset_free(&d);
}

static void test_shuffle_split(const char *path) {
    dataset_options o;
    dataset_options_default(&o);
    dataset a, b, va, vb;
    CHECK_OK(dataset_load(&a, path, tok, &o));
    CHECK_OK(dataset_load(&b, path, tok, &o));
    int n = a.n_samples;
    dataset_shuffle(&a, 42);
    dataset_shuffle(&b, 42);
    int same = 1, moved = 0;
    for (int i = 0; i < n; i++) {
        same &= a.samples[i].line == b.samples[i].line;
        moved += a.samples[i].line != i + 1;
    }
    CHECK(same && moved > n / 2);
    dataset_shuffle(&b, 43);
    int differ = 0;
    for (int i = 0; i < n; i++) differ += a.samples[i].line != b.samples[i].line;
    CHECK(differ > n / 2);
    // the PRNG is fixed forever: splitmix64 from 0 starts with this value
    uint64_t s = 0;
    CHECK(rng_next(&s) == 0xE220A8397B1DCDAFULL);

    long tokens = a.stats.tokens;
    CHECK_OK(dataset_split(&a, &va, 0.1));
    CHECK(va.n_samples == 30 && a.n_samples == n - 30);
    CHECK(va.stats.samples == 30 && a.stats.samples == n - 30 && va.stats.tokens + a.stats.tokens == tokens);
    CHECK_OK(dataset_split(&b, &vb, 0.0));
    CHECK(vb.n_samples == 0 && b.n_samples == n);
    CHECK(dataset_split(&b, &vb, 1.0) == QL_EINVAL);
    dataset_free(&va), dataset_free(&vb), dataset_free(&a), dataset_free(&b);
}

// ShareGPT (axolotl's {"conversations": [{"from", "value"}]}): detected, and each
// line gives the very tokens and loss mask of the same conversation written as
// OpenAI messages, in each template; its errors name conversations[i].from/value.
static void test_sharegpt(void) {
    const char *sg = "{\"conversations\": [{\"from\": \"system\", \"value\": \"Be terse.\"}, "
                     "{\"from\": \"human\", \"value\": \"Hi there\"}, {\"from\": \"gpt\", \"value\": \"Hello.\"}, "
                     "{\"from\": \"human\", \"value\": \"And?\"}, {\"from\": \"gpt\", \"value\": \"Done.\"}]}\n"
                     "{\"conversations\": [{\"from\": \"user\", \"value\": \"x\"}, {\"from\": \"assistant\", \"value\": \"y\"}]}\n";
    const char *oa = "{\"messages\": [{\"role\": \"system\", \"content\": \"Be terse.\"}, "
                     "{\"role\": \"user\", \"content\": \"Hi there\"}, {\"role\": \"assistant\", \"content\": \"Hello.\"}, "
                     "{\"role\": \"user\", \"content\": \"And?\"}, {\"role\": \"assistant\", \"content\": \"Done.\"}]}\n"
                     "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n";
    for (int t = 0; t < 3; t++) {  // llama2, chatml, zephyr (this tokenizer lacks llama3's special tokens)
        dataset_options o;
        dataset_options_default(&o);
        o.chat_template = (ds_template)t;
        dataset a, b;
        CHECK_OK(load_str(&a, sg, &o));
        CHECK_OK(load_str(&b, oa, &o));
        if (test_failures) return;
        CHECKF(a.format == DS_FORMAT_SHAREGPT, "format %s", ds_format_name(a.format));
        CHECK(a.n_samples == 2 && b.n_samples == 2);
        for (int i = 0; i < a.n_samples && i < b.n_samples; i++) {
            const ds_sample *x = &a.samples[i], *y = &b.samples[i];
            CHECKF(x->n == y->n && !memcmp(x->ids, y->ids, sizeof(int) * (size_t)x->n) &&
                       !memcmp(x->mask, y->mask, (size_t)x->n),
                   "template %d, line %d: ShareGPT and messages render differently", t, i + 1);
        }
        dataset_free(&a), dataset_free(&b);
    }
    dataset_options o;
    dataset_options_default(&o);
    dataset d;
    CHECK(load_str(&d, "{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": \"bot\", \"value\": \"b\"}]}\n",
                   &o) == QL_EFORMAT);
    CHECKF(strstr(ql_errmsg(), "mem.jsonl:1:") && strstr(ql_errmsg(), "conversations[1]: unknown from \"bot\"") &&
               strstr(ql_errmsg(), "system, human or gpt"),
           "got: %s", ql_errmsg());
    CHECK(load_str(&d, "{\"conversations\": [{\"from\": \"human\", \"text\": \"a\"}]}\n", &o) == QL_EFORMAT);
    CHECKF(strstr(ql_errmsg(), "conversations[0]: missing field \"value\""), "got: %s", ql_errmsg());
    CHECK(load_str(&d, "{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}]}\n", &o) == QL_EFORMAT);
    CHECKF(strstr(ql_errmsg(), "conversations: no gpt turn"), "got: %s", ql_errmsg());
    CHECK(load_str(&d, "{\"conversations\": [], \"messages\": []}\n", &o) == QL_EFORMAT);
    CHECKF(strstr(ql_errmsg(), "keys of two formats"), "got: %s", ql_errmsg());
}

static void test_samples(void) {
    const char *names[] = {"pirate.jsonl", "support.jsonl", "victorian.jsonl"};
    ds_format want[] = {DS_FORMAT_PROMPT, DS_FORMAT_CHAT, DS_FORMAT_ALPACA};
    for (int t = 0; t < 3; t++)
        for (int k = 0; k < 3; k++) {
            dataset_options o;
            dataset_options_default(&o);
            o.chat_template = (ds_template)t;
            o.seq_len = 512;
            dataset d;
            const char *p = test_path(test_source_dir(), "datasets/samples");
            p = test_path(p, names[k]);
            CHECK_OK(dataset_load(&d, p, tok, &o));
            CHECK(d.format == want[k] && d.n_samples >= 200 && d.stats.skipped == 0 && d.stats.truncated == 0);
            int longest = 0;
            for (int i = 0; i < d.n_samples; i++) longest = d.samples[i].n > longest ? d.samples[i].n : longest;
            if (t == 0 || k == 1)
                printf("  %s (%s): %d samples, %ld tokens, %ld trained, longest %d\n", names[k],
                       ds_template_name(o.chat_template), d.n_samples, d.stats.tokens, d.stats.trained_tokens, longest);
            dataset_free(&d);
        }
}

// A bad file must be rejected with "bad_X.jsonl:LINE:COL: ..." containing `words`.
static void check_bad(const char *file, const char *where, const char *words, int seq_len) {
    dataset_options o;
    dataset_options_default(&o);
    if (seq_len) o.seq_len = seq_len;
    dataset d;
    const char *p = test_path(test_path(test_source_dir(), "tests/fixtures/datasets"), file);
    int rc = dataset_load(&d, p, tok, &o);
    char loc[300];
    snprintf(loc, sizeof loc, "%s:%s: ", p, where);
    CHECKF(rc == QL_EFORMAT && strstr(ql_errmsg(), loc) && strstr(ql_errmsg(), words),
           "%s: rc %d, message \"%s\", want \"%s\" and \"%s\"", file, rc, ql_errmsg(), loc, words);
    printf("  expected error: %s\n", ql_errmsg());
    CHECK(d.n_samples == 0 && d.samples == NULL);
    dataset_free(&d);
}

static void test_bad(void) {
    check_bad("bad_json.jsonl", "2:31", "invalid JSON: missing value for key \"completion\"", 0);
    check_bad("bad_type.jsonl", "2:32", "field \"completion\": expected a string, found a number", 0);
    check_bad("bad_empty.jsonl", "3:10", "field \"text\" is empty", 0);
    check_bad("bad_role.jsonl", "1:59", "messages[1]: unknown role \"bot\"", 0);
    check_bad("bad_noassistant.jsonl", "1:14", "no assistant turn", 0);
    check_bad("bad_mixed.jsonl", "3:1", "mixed formats: this line is prompt/completion but the file is alpaca (from line 1)", 0);
    check_bad("bad_unknown.jsonl", "1:1", "unknown format", 0);
    check_bad("bad_utf8.jsonl", "1:14", "invalid UTF-8 (byte 0xFF)", 0);
    check_bad("bad_long.jsonl", "1:1", "over-long sample", 64);

    // skip_invalid: 7 bad lines skipped, counted, the first 5 named
    dataset_options o;
    dataset_options_default(&o);
    o.skip_invalid = 1;
    dataset d;
    const char *p = test_path(test_path(test_source_dir(), "tests/fixtures/datasets"), "bad_skip.jsonl");
    CHECK_OK(dataset_load(&d, p, tok, &o));
    CHECK(d.n_samples == 3 && d.stats.skipped == 7 && d.stats.lines == 10);
    CHECK(d.samples[0].line == 1 && d.samples[1].line == 7 && d.samples[2].line == 10);
    const char *sum = d.skip_summary ? d.skip_summary : "";
    printf("  skip summary: %s\n", sum);
    CHECK(strstr(sum, "skipped 7 invalid lines"));
    for (int line = 2; line <= 6; line++) {
        char want[300];
        snprintf(want, sizeof want, "%s:%d:", p, line);
        CHECKF(strstr(sum, want), "summary lacks %s", want);
    }
    char l8[300];
    snprintf(l8, sizeof l8, "%s:8:", p);
    CHECK(!strstr(sum, l8));
    dataset_free(&d);
    // a file with nothing valid is an error even with skip_invalid
    p = test_path(test_path(test_source_dir(), "tests/fixtures/datasets"), "bad_unknown.jsonl");
    CHECK(dataset_load(&d, p, tok, &o) == QL_EFORMAT && strstr(ql_errmsg(), "no valid samples"));
    CHECK(dataset_load(&d, "/nonexistent.jsonl", tok, &o) == QL_EIO);
    dataset_free(&d);
}

int main(void) {
    const char *mp = test_path(test_source_dir(), "tests/fixtures/tokenizer/tiny.model");
    if (tok_load_file(&tok, mp) != QL_OK) {
        fprintf(stderr, "%s\n", ql_errmsg());
        return 1;
    }
    BOS = tok_bos_id(tok), EOS = tok_eos_id(tok);
    test_templates();
    test_detection_and_masks();
    test_truncation_and_packing();
    test_shuffle_split(test_path(test_path(test_source_dir(), "datasets/samples"), "pirate.jsonl"));
    test_samples();
    test_sharegpt();
    test_bad();
    tok_free(tok);
    return test_finish("test_datasets");
}
