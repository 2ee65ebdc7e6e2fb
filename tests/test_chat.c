// test_chat.c: qlora chat (infer/chat.c) and the prompt rendering it stands on,
// on tests/fixtures/models/tiny_gqa with a random adapter saved into a store.
//   (a) ds_render_prompt gives each template's documented layout, token for token
//       (docs/datasets.md): the parts encoded on their own, the assistant's header
//       open at the end; a conversation that does not end with a user turn is refused.
//   (b) a scripted chat (base turn, /adapter, two adapter turns, /adapters, an
//       unknown adapter, /reset) answers each turn with exactly the greedy text of
//       generate() run from scratch on the whole conversation so far: the KV
//       prefix the chat reuses between turns (and drops on an adapter switch)
//       changes nothing.
//   (c) a message longer than the context is refused and the chat goes on.
//   (d) /unload and /load hot-swap adapters: the base answers when its adapter
//       goes, a bad load is reported, a reload answers as before, and the base's
//       logits are bit-identical before and after.
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "model/forward.h"
#include "model/model.h"
#include "datasets/dataset.h"
#include "infer/chat.h"
#include "infer/generate.h"
#include "testutil.h"
#include "train/peft.h"

// ids of text encoded alone, appended to v (n).
static void put_text(const tokenizer *tok, const char *text, int *v, int *n) {
    int *ids, k;
    CHECK_OK(tok_encode(tok, text, strlen(text), 0, &ids, &k));
    memcpy(v + *n, ids, sizeof(int) * (size_t)k);
    *n += k;
    free(ids);
}

static void check_render(const model *m, const tokenizer *tok, ds_template t, const ds_message *msg, int nm,
                         const int *want, int nwant) {
    dataset_options o;
    dataset_options_default(&o);
    o.chat_template = t, o.bos_id = m->cfg.bos_id, o.eos_id = m->cfg.eos_id;
    int *ids = NULL, n = 0;
    CHECK_OK(ds_render_prompt(&ids, &n, msg, nm, tok, &o));
    int same = n == nwant && !memcmp(ids, want, sizeof(int) * (size_t)n);
    CHECKF(same, "%s: %d tokens, want %d", ds_template_name(t), n, nwant);
    free(ids);
}

static void test_render(const model *m, const tokenizer *tok) {
    const int bos = m->cfg.bos_id, eos = m->cfg.eos_id;
    ds_message msg[4] = {{DS_ROLE_SYSTEM, "Be brief."}, {DS_ROLE_USER, "Hi there"}, {DS_ROLE_ASSISTANT, "Hello"},
                         {DS_ROLE_USER, "Bye"}};
    int want[256], n = 0;
    // llama2: BOS [INST] <<SYS>> ... [/INST] Hello EOS BOS [INST] Bye [/INST]
    want[n++] = bos;
    put_text(tok, "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST]", want, &n);
    put_text(tok, "Hello", want, &n);
    want[n++] = eos, want[n++] = bos;
    put_text(tok, "[INST] Bye [/INST]", want, &n);
    check_render(m, tok, DS_TEMPLATE_LLAMA2, msg, 4, want, n);
    // chatml: BOS, each turn, then the open assistant header
    n = 0;
    want[n++] = bos;
    put_text(tok, "<|im_start|>system\nBe brief.<|im_end|>\n", want, &n);
    put_text(tok, "<|im_start|>user\nHi there<|im_end|>\n", want, &n);
    put_text(tok, "<|im_start|>assistant\n", want, &n);
    put_text(tok, "Hello<|im_end|>", want, &n);
    want[n++] = eos;
    put_text(tok, "<|im_start|>user\nBye<|im_end|>\n", want, &n);
    put_text(tok, "<|im_start|>assistant\n", want, &n);
    check_render(m, tok, DS_TEMPLATE_CHATML, msg, 4, want, n);
    // zephyr, one user turn
    n = 0;
    want[n++] = bos;
    put_text(tok, "<|user|>\nBye", want, &n);
    want[n++] = eos;
    put_text(tok, "<|assistant|>\n", want, &n);
    check_render(m, tok, DS_TEMPLATE_ZEPHYR, msg + 3, 1, want, n);
    // refused: ends with the assistant; llama2 with two user turns in a row
    dataset_options o;
    dataset_options_default(&o);
    int *ids = NULL, k = 0;
    CHECK(ds_render_prompt(&ids, &k, msg, 3, tok, &o) == QL_EFORMAT && strstr(ql_errmsg(), "user's turn"));
    ds_message two[2] = {{DS_ROLE_USER, "a"}, {DS_ROLE_USER, "b"}};
    CHECK(ds_render_prompt(&ids, &k, two, 2, tok, &o) == QL_EFORMAT && strstr(ql_errmsg(), "assistant turn"));
}

enum { MAXTOK = 8 };

// s with fnmatch's special characters escaped, written to dst; returns its length.
static size_t lit(char *dst, const char *s) {
    size_t k = 0;
    for (; *s; s++) {
        if (strchr("*?[]\\", *s)) dst[k++] = '\\';
        dst[k++] = *s;
    }
    return k;
}

// The base's logits after a fixed prompt (malloc'd).
static float *base_logits(model *m, ops *o) {
    fwd_state f;
    int toks[5] = {1, 20, 30, 40, 50};
    float *l = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
    CHECK_OK(fwd_init(&f, m, o, 8, 8));
    CHECK_OK(fwd_forward(&f, l, toks, 5, 0, 0));
    fwd_free(&f);
    return l;
}

// Greedy text of generate() from scratch on the conversation, with adapter a (or none).
static char *expect(model *m, ops *o, const tokenizer *tok, const lora_adapter *a, const ds_message *msg, int nm) {
    dataset_options d;
    prompt_options(&d, m, DS_TEMPLATE_LLAMA2);
    int *ids = NULL, n = 0;
    CHECK_OK(ds_render_prompt(&ids, &n, msg, nm, tok, &d));
    fwd_state f;
    CHECK_OK(fwd_init(&f, m, o, n + MAXTOK + 1, 512));
    if (a) CHECK_OK(fwd_set_adapter(&f, a));
    sampler s;
    sampler_init(&s, 0, 0, 1, 1);
    gen_options go = {.max_tokens = MAXTOK, .stop_at_eos = 1, .max_prefill = 512};
    gen_stats st;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    CHECK_OK(generate(&f, tok, &s, &go, ids, n, out, NULL, &st));
    fclose(out);
    fwd_free(&f);
    free(ids);
    return text;
}

// Runs chat_run on script; returns what it printed.
static char *chat(model *m, const tokenizer *tok, ops *o, const char *store, const char *script, int ctx) {
    FILE *in = fmemopen((void *)script, strlen(script), "r");
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    chat_opts co = {.adapter_dir = store, .adapters = "", .adapter = "", .system = "", .tmpl = DS_TEMPLATE_LLAMA2,
                    .max_tokens = MAXTOK, .top_k = 0, .seed = 1, .ctx = ctx, .temperature = 0, .top_p = 1};
    CHECK_OK(chat_run(m, tok, o, &co, in, out));
    fclose(in);
    fclose(out);
    return text;
}

int main(void) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/tiny_gqa", test_source_dir());
    model m;
    CHECK_OK(model_load(&m, dir, DT_F32));
    tokenizer *tok = NULL;
    CHECK_OK(tok_load_bytes(&tok, (tok_kind)m.tokenizer_kind, m.tokenizer, m.tokenizer_len, "model"));
    ops *o = ops_cpu_new(0);
    test_render(&m, tok);

    // a store with one adapter, "voice"; the expected runs use it as the store loads it (resident F16)
    char store[] = "/tmp/qlora_chat_XXXXXX";
    CHECK(mkdtemp(store) != NULL);
    lora_adapter a, loaded;
    test_lora_random(&a, &m.cfg, 4, 8.0f, 0, LORA_ALL, 5);
    CHECK_OK(lora_save_peft(&a, test_path(store, "voice"), NULL));
    CHECK_OK(lora_load_peft_resident(&loaded, &m.cfg, test_path(store, "voice")));

    const char *u1 = "Tell me about the sea", *u2 = "And the ships?", *u3 = "What else?";
    ds_message conv[5] = {{DS_ROLE_USER, u1}};
    char *t1 = expect(&m, o, tok, NULL, conv, 1);
    conv[1] = (ds_message){DS_ROLE_ASSISTANT, t1}, conv[2] = (ds_message){DS_ROLE_USER, u2};
    char *t2 = expect(&m, o, tok, &loaded, conv, 3);
    conv[3] = (ds_message){DS_ROLE_ASSISTANT, t2}, conv[4] = (ds_message){DS_ROLE_USER, u3};
    char *t3 = expect(&m, o, tok, &loaded, conv, 5);
    CHECKF(strcmp(t1, t2), "the adapter did not change the answer: '%s'", t1);
    char want[4096], script[512];
    snprintf(script, sizeof script, "%s\n/adapter voice\n%s\n\n%s\n/adapters\n/adapter nope\n/reset\n%s\n/quit\nignored\n",
             u1, u2, u3, u1);
    // after /reset the voice adapter answers u1 alone
    ds_message fresh[1] = {{DS_ROLE_USER, u1}};
    char *t4 = expect(&m, o, tok, &loaded, fresh, 1);
    size_t bytes = 0;  // the store's figure: A and B as held, F16 (2 bytes a value)
    for (int i = 0; i < loaded.n_layers * LORA_NMODULES; i++)
        if (lora_pair_on(&loaded.w[i])) bytes += 2 * 4 * (size_t)(loaded.w[i].in + loaded.w[i].out);
    snprintf(want, sizeof want,
             "base> %s\n(answering with voice)\nvoice> %s\nvoice> %s\n  base\n* voice (r 4, scale 1, %.1f MB)\n"
             "(no loaded adapter 'nope'; /adapters lists them)\n(conversation cleared)\nvoice> %s\n",
             t1, t2, t3, bytes / 1e6, t4);
    char *got = chat(&m, tok, o, store, script, 0);
    CHECKF(!strcmp(got, want), "chat printed:\n%s\nwant:\n%s", got, want);
    free(got);

    // (d) hot-loading: unload the adapter in use (the base answers), a load that
    // fails is reported and dropped, a reload answers as before; the base's logits
    // are bit-identical before and after
    float *before = base_logits(&m, o), *after;
    snprintf(script, sizeof script,
             "/adapter voice\n/unload voice\n%s\n/load nowhere\n/load voice:1\n/adapter voice\n/reset\n%s\n/unload nope\n", u1,
             u1);
    got = chat(&m, tok, o, store, script, 0);
    char pat[8192];
    size_t k = 0;
    k += lit(pat + k, "(answering with voice)\n(unloaded voice; answering with base)\nbase> ");
    k += lit(pat + k, t1);
    k += lit(pat + k, "\n(nowhere: not loaded: ");
    pat[k++] = '*';
    k += lit(pat + k, "no such adapter directory)\n(loaded voice: r 4, ");
    pat[k++] = '*';
    k += lit(pat + k, "; /adapter voice to use it)\n(answering with voice)\n(conversation cleared)\nvoice> ");
    k += lit(pat + k, t4);
    k += lit(pat + k, "\n(no adapter called 'nope' in the store)\n");
    pat[k] = 0;
    CHECKF(fnmatch(pat, got, 0) == 0, "chat printed:\n%s\nwant (pattern):\n%s", got, pat);
    free(got);
    after = base_logits(&m, o);
    CHECK(!memcmp(before, after, sizeof(float) * (size_t)m.cfg.vocab_size));
    free(before), free(after);

    // (c) a message longer than the context: refused, then the chat goes on
    char longmsg[2048] = "";
    for (int i = 0; i < 60; i++) strcat(longmsg, "sea and ships ");
    snprintf(script, sizeof script, "%.400s\n%s\n", longmsg, u1);
    got = chat(&m, tok, o, store, script, 48);
    snprintf(want, sizeof want, "(that message does not fit the context of 48 tokens)\nbase> %s\n", t1);
    CHECKF(!strcmp(got, want), "chat printed:\n%s\nwant:\n%s", got, want);
    free(got);

    free(t1), free(t2), free(t3), free(t4);
    lora_free(&a), lora_free(&loaded);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", store);
    CHECK(system(cmd) == 0);
    tok_free(tok);
    ops_delete(o);
    model_free(&m);
    return test_finish("test_chat");
}
