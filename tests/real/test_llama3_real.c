// test_llama3_real.c: a Llama 3 base end to end. A random-weight model at a small
// Llama 3 shape (vocabulary 128256, tied embeddings, grouped-query attention,
// RoPE theta 500000 with llama3 scaling, three end-of-sequence ids) is written as a
// Hugging Face directory with the real Llama 3 tokenizer.json and
// tokenizer_config.json (its Jinja chat template), then goes through every
// command: quantize, train (the template comes from the base: llama3), infer
// (--prompt and --chat-template), chat, serve (a chat request), eval, tokenize, export (gguf-base, gguf,
// merged, whose directory loads again), and batch requests; and its logits, F32 and NF4,
// equal the PyTorch reference's (tests/reference/make_llama3_fixture.py). Each step
// must succeed and leave what it promises. Skips (77) without ../shared/models.
// QLORA_TEST_KEEP=1 keeps the model, base file and adapter in /tmp.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/json.h"
#include "common/safetensors.h"
#include "model/forward.h"
#include "model/model.h"
#include "testutil.h"

static char tmp[256];

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc) fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    return rc;
}

static int contains(const char *path, const char *what) {
    char *buf = NULL;
    size_t n;
    if (file_read_all(path, 1 << 26, &buf, &n)) return 0;
    int found = strstr(buf, what) != NULL;
    free(buf);
    return found;
}

// The model: C 64, F 160, 2 layers, 4 heads of 16, 2 kv heads, vocabulary 128256.
// Its config.json names no bos_token_id: BOS comes from tokenizer_config.json's bos_token.
static int write_model(const char *dir, const char *tokdir) {
    enum { C = 64, F = 160, L = 2, H = 4, KV = 2, D = 16, V = 128256 };
    char p[512];
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/config.json", dir);
    const char *cfg =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 160, "
        "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16, "
        "\"vocab_size\": 128256, \"max_position_embeddings\": 2048, \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0, "
        "\"tie_word_embeddings\": true, \"eos_token_id\": [128001, 128008, 128009], "
        "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 32.0, \"low_freq_factor\": 1.0, "
        "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}";
    if (file_write_atomic(p, cfg, strlen(cfg))) return 1;
    // weights N(0, 0.05^2), norms 1
    uint64_t seed = 7;
    st_out t[1 + 1 + L * 9];
    float *bufs[1 + 1 + L * 9];
    int n = 0;
#define T2(nm, r, c)                                                                    \
    do {                                                                                \
        float *w = malloc(sizeof(float) * (size_t)(r) * (c));                           \
        for (size_t i = 0; i < (size_t)(r) * (c); i++) w[i] = 0.05f * test_rand_normal(&seed); \
        bufs[n] = w;                                                                    \
        t[n] = (st_out){strdup(nm), DT_F32, 2, {(r), (c)}, w};                          \
        n++;                                                                            \
    } while (0)
#define T1(nm, c)                                                      \
    do {                                                               \
        float *w = malloc(sizeof(float) * (c));                        \
        for (int i = 0; i < (c); i++) w[i] = 1.0f;                     \
        bufs[n] = w;                                                   \
        t[n] = (st_out){strdup(nm), DT_F32, 1, {(c)}, w};              \
        n++;                                                           \
    } while (0)
    char nm[128];
    T2("model.embed_tokens.weight", V, C);
    T1("model.norm.weight", C);
    for (int l = 0; l < L; l++) {
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
        T1(nm, C);
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
        T1(nm, C);
        snprintf(nm, sizeof nm, "model.layers.%d.self_attn.q_proj.weight", l);
        T2(nm, H * D, C);
        snprintf(nm, sizeof nm, "model.layers.%d.self_attn.k_proj.weight", l);
        T2(nm, KV * D, C);
        snprintf(nm, sizeof nm, "model.layers.%d.self_attn.v_proj.weight", l);
        T2(nm, KV * D, C);
        snprintf(nm, sizeof nm, "model.layers.%d.self_attn.o_proj.weight", l);
        T2(nm, C, H * D);
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.gate_proj.weight", l);
        T2(nm, F, C);
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.up_proj.weight", l);
        T2(nm, F, C);
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.down_proj.weight", l);
        T2(nm, C, F);
    }
#undef T1
#undef T2
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    int rc = st_write(p, t, n, NULL, NULL, 0, -1);
    for (int i = 0; i < n; i++) free((char *)t[i].name), free(bufs[i]);
    if (rc) return fprintf(stderr, "%s\n", ql_errmsg()), 1;
    return run("cp %s/tokenizer.json %s/tokenizer_config.json %s/", tokdir, tokdir, dir);
}

// With "interop": llama.cpp (QLORA_LLAMACPP: a build directory with bin/llama-tokenize and
// bin/llama-completion) on what qlora export wrote for the same model. llama-tokenize on
// our GGUF gives the reference's ids for every corpus text of well-formed UTF-8 without a
// NUL (10,216 of 10,260; the texts go in one file, read with --no-escape, each after the separator
// <|reserved_special_token_250|>, which both tokenizers split on before anything else);
// llama-completion with our GGUF base, and with our GGUF LoRA, gives qlora infer's
// greedy text. Skips (77) without QLORA_LLAMACPP.
static int interop(const char *q, const char *dir, const char *ad) {
    const char *lc = getenv("QLORA_LLAMACPP");
    if (!lc || !lc[0]) {
        fprintf(stderr, "test_llama3_interop: set QLORA_LLAMACPP to a llama.cpp build directory (tests/interop/README.md), skipped\n");
        return TEST_SKIP;
    }
    CHECK(run("%s export --base %s --format gguf-base --dtype f32 --out %s/l3.gguf 2>/dev/null", q, dir, tmp) == 0);
    CHECK(run("%s export --base %s --adapter %s --format gguf --dtype f32 --out %s/lora.gguf 2>/dev/null", q, dir, ad, tmp) == 0);
    // the corpus in one file
    const char *corpus = test_path(test_source_dir(), "tests/fixtures/llama3_tokenizer/corpus.jsonl");
    char *buf = NULL;
    size_t len = 0;
    CHECK_OK(file_read_all(corpus, (size_t)64 << 20, &buf, &len));
    const char *sep = "<|reserved_special_token_250|>";
    const int sep_id = 128255;
    FILE *f;
    char p[512];
    snprintf(p, sizeof p, "%s/corpus.txt", tmp);
    if (!buf || !(f = fopen(p, "wb"))) return test_finish("test_llama3_interop");
    int *want = malloc(sizeof(int) * (1 << 22)), nw = 0, ncase = 0;
    for (size_t a = 0; a < len;) {
        size_t e = a;
        while (e < len && buf[e] != '\n') e++;
        json_doc d;
        if (e > a && json_parse(&d, buf + a, e - a, "corpus.jsonl") == QL_OK) {
            char *h = NULL;
            json_get_string(&d, json_find(&d, 0, "hex"), "hex", &h, NULL);
            int r = json_find(&d, 0, "replaced_hex");
            size_t n = h ? strlen(h) / 2 : 0;
            unsigned char *t = malloc(n + 1);
            int nul = 0;
            for (size_t i = 0; i < n; i++) {
                unsigned v;
                sscanf(h + 2 * i, "%2x", &v);
                t[i] = (unsigned char)v, nul |= v == 0;
            }
            if (r < 0 && !nul) {  // well-formed, no NUL: into the file, its ids into want
                fputs(sep, f);
                fwrite(t, 1, n, f);
                want[nw++] = sep_id;
                int v = json_find(&d, 0, "ids");
                for (int k = 0, it = v + 1; k < json_size(&d, v); k++, it = json_next(&d, it)) {
                    long long x;
                    json_get_int(&d, it, "ids", &x);
                    want[nw++] = (int)x;
                }
                ncase++;
            }
            free(t), free(h);
            json_free(&d);
        }
        a = e + 1;
    }
    fclose(f);
    free(buf);
    CHECK(run("%s/bin/llama-tokenize -m %s/l3.gguf -f %s --ids --no-bos --no-escape --log-disable >%s/ids.txt 2>%s/tok.log", lc, tmp,
              p, tmp, tmp) == 0);
    snprintf(p, sizeof p, "%s/ids.txt", tmp);
    char *out = NULL;
    size_t ol = 0;
    CHECK_OK(file_read_all(p, (size_t)1 << 28, &out, &ol));
    int ng = 0, first_bad = -1;
    for (char *c = out; c && *c;) {
        while (*c && (*c < '0' || *c > '9')) c++;
        if (!*c) break;
        int x = (int)strtol(c, &c, 10);
        if (ng < nw && want[ng] != x && first_bad < 0) first_bad = ng;
        ng++;
    }
    CHECKF(ng == nw && first_bad < 0, "llama-tokenize: %d ids, the reference %d; first difference at %d", ng, nw, first_bad);
    if (first_bad >= 0) {
        fprintf(stderr, "  reference:");
        for (int k = first_bad - 8; k < first_bad + 8 && k < nw; k++) if (k >= 0) fprintf(stderr, " %d", want[k]);
        fprintf(stderr, "\n");
    }
    fprintf(stderr, "test_llama3_interop: llama-tokenize on our GGUF: %d texts, %d ids, %s\n", ncase, ng,
            ng == nw && first_bad < 0 ? "all equal to the reference's" : "DIFFERENT");
    free(out), free(want);
    // greedy text, base and LoRA
    for (int lora = 0; lora < 2; lora++) {
        CHECK(run("%s infer --base %s --base-dtype f32 %s%s --chat-template none --prompt 'Where is the treasure?' "
                  "--max-tokens 16 --temperature 0 --ignore-eos --threads 2 >%s/q%d.txt 2>/dev/null",
                  q, dir, lora ? "--adapter " : "", lora ? ad : "", tmp, lora) == 0);
        char larg[400] = "";
        if (lora) snprintf(larg, sizeof larg, "--lora %s/lora.gguf", tmp);
        CHECK(run("%s/bin/llama-completion -m %s/l3.gguf %s -p 'Where is the treasure?' -n 16 --temp 0 --ignore-eos "
                  "--no-display-prompt --no-warmup --no-repack -t 2 -s 1 --simple-io </dev/null >%s/l%d.txt 2>%s/l%d.log",
                  lc, tmp, larg, tmp, lora, tmp, lora) == 0);
        char qa[300], la[300];
        snprintf(qa, sizeof qa, "%s/q%d.txt", tmp, lora), snprintf(la, sizeof la, "%s/l%d.txt", tmp, lora);
        char *x = NULL, *y = NULL;
        size_t xn = 0, yn = 0;
        file_read_all(qa, 1 << 20, &x, &xn), file_read_all(la, 1 << 20, &y, &yn);
        while (xn && (x[xn - 1] == '\n' || x[xn - 1] == ' ')) x[--xn] = 0;
        while (yn && (y[yn - 1] == '\n' || y[yn - 1] == ' ')) y[--yn] = 0;
        CHECKF(x && y && xn > 0 && xn == yn && !memcmp(x, y, xn), "%s: qlora '%s' vs llama.cpp '%s'", lora ? "LoRA" : "base",
               x ? x : "", y ? y : "");
        free(x), free(y);
    }
    return test_finish("test_llama3_interop");
}

// The model's logits against the PyTorch reference (tests/reference/llama_ref.py, float64,
// run on this very model: tests/fixtures/llama3_model/ref.safetensors), with the weights as
// stored and with NF4 linears. Tolerance as test_model_ref.c's: atol 2e-4, rtol 1e-3 (fp32
// over dims <= 160 and 2 layers stays far under it; a wrong RoPE scaling or mask moves
// logits by > 1e-2).
static void check_logits(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/tests/fixtures/llama3_model/ref.safetensors", test_source_dir());
    st_file ref;
    CHECK_OK(st_open(&ref, p));
    if (test_failures) return;
    const st_tensor *tk = st_find(&ref, "tokens"), *vi = st_find(&ref, "vocab_ids");
    for (int nf4 = 0; nf4 < 2 && tk && vi; nf4++) {
        const st_tensor *lg = st_find(&ref, nf4 ? "logits_nf4" : "logits");
        model m;
        CHECK_OK(model_load(&m, dir, nf4 ? DT_NF4 : DT_F32));
        ops *o = ops_new("cpu", 2);
        int T = (int)tk->shape[1], K = (int)vi->shape[0], V = m.cfg.vocab_size;
        fwd_state f;
        CHECK_OK(fwd_init(&f, &m, o, 64, 64));
        float *all = malloc(sizeof(float) * (size_t)T * V), *sub = malloc(sizeof(float) * (size_t)T * K);
        CHECK_OK(fwd_forward(&f, all, (const int *)tk->data, T, 0, 1));
        for (int t = 0; t < T; t++)
            for (int k = 0; k < K; k++) sub[(size_t)t * K + k] = all[(size_t)t * V + ((const int *)vi->data)[k]];
        CHECK(lg && check_close(nf4 ? "llama3 logits (NF4)" : "llama3 logits (F32)", sub, (const float *)lg->data,
                                (int64_t)T * K, 2e-4, 1e-3));
        free(all), free(sub);
        fwd_free(&f);
        ops_delete(o);
        model_free(&m);
    }
    st_close(&ref);
}

int main(int argc, char **argv) {
    const char *models = test_models_dir();
    const char *tokdir = models ? test_path(models, "tokenizers/llama3") : NULL;
    char probe[512];
    snprintf(probe, sizeof probe, "%s/tokenizer.json", tokdir ? tokdir : "/nonexistent");
    if (access(probe, R_OK) != 0) {
        fprintf(stderr, "test_llama3_real: no %s, skipped\n", probe);
        return TEST_SKIP;
    }
    snprintf(tmp, sizeof tmp, "/tmp/qlora_llama3_XXXXXX");
    if (!mkdtemp(tmp)) return 1;
    const char *q = QL_BINARY, *src = test_source_dir();
    char dir[300], base[300], ad[300], data[300];
    snprintf(dir, sizeof dir, "%s/l3", tmp);
    snprintf(base, sizeof base, "%s/l3.qlb", tmp);
    snprintf(ad, sizeof ad, "%s/store/support", tmp);
    snprintf(data, sizeof data, "%s/datasets/samples/support.jsonl", src);  // messages: a chat template applies
    CHECK(write_model(dir, tokdir) == 0);
    if (argc > 1 && !strcmp(argv[1], "interop")) {
        CHECK(run("%s train --base %s --data %s --out %s --max-steps 3 --batch-size 2 --seq-len 96 --rank 4 --alpha 8 "
                  "--lr 1e-2 --threads 2 --val-split 0 2>/dev/null", q, dir, data, ad) == 0);
        int rc = interop(q, dir, ad);
        if (rc != TEST_SKIP && !getenv("QLORA_TEST_KEEP")) run("rm -rf %s", tmp);
        return rc;
    }
    check_logits(dir);
    // the directory as it is, and as a base file (the template and the tokenizer.json go with it)
    CHECK(run("%s quantize --base %s --out %s 2>%s/q.log", q, dir, base, tmp) == 0);
    model m;
    CHECK_OK(model_load(&m, base, DT_NF4));
    CHECK(m.tokenizer_kind == 2 && m.chat_template && strstr(m.chat_template, "<|start_header_id|>"));
    CHECK(m.cfg.n_eos == 3 && m.cfg.eos_ids[2] == 128009 && m.cfg.bos_id == 128000 && m.cfg.tie_embeddings);
    // this tokenizer.json's post-processor is ByteLevel alone, so the reference adds no BOS
    // to an encoded text (the fixture README); the llama3 template writes its own
    CHECK(m.cfg.add_bos == 0);
    model_free(&m);
    // train on messages: the template is the base's (llama3), recorded with the adapter
    CHECK(run("%s train --base %s --data %s --out %s --max-steps 3 --batch-size 2 --seq-len 96 --rank 4 --alpha 8 "
              "--lr 1e-2 --threads 2 --val-split 0 2>%s/train.log",
              q, base, data, ad, tmp) == 0);
    char p[512];
    snprintf(p, sizeof p, "%s/training_record.json", ad);
    CHECKF(contains(p, "\"chat_template\": \"llama3\""), "%s does not name llama3", p);
    snprintf(p, sizeof p, "%s/train.log", tmp);
    CHECKF(!contains(p, "loss=nan") && !contains(p, "error"), "training log: see %s", p);
    // generation through the adapter, raw and as a llama3 user turn (given by hand, and by default:
    // the template its training_record.json names)
    CHECK(run("%s infer --base %s --adapter %s --chat-template none --prompt 'Where is the treasure?' --max-tokens 6 "
              "--temperature 0 --threads 2 >%s/infer.txt 2>%s/infer.log",
              q, base, ad, tmp, tmp) == 0);
    CHECK(run("%s infer --base %s --adapter %s --prompt 'Where is the treasure?' --max-tokens 6 --temperature 0 "
              "--threads 2 >%s/infer_auto.txt 2>%s/infer_auto.log",
              q, base, ad, tmp, tmp) == 0);
    snprintf(p, sizeof p, "%s/infer_auto.log", tmp);
    CHECKF(contains(p, "prompt 15 tokens") && contains(p, "user turn in its chat template llama3"),
           "infer's default for an adapter trained in llama3: see %s", p);
    CHECK(run("%s infer --base %s --adapter %s --prompt 'Where is the treasure?' --chat-template llama3 --max-tokens 6 "
              "--temperature 0 --threads 2 >%s/infer_chat.txt 2>%s/infer_chat.log",
              q, base, ad, tmp, tmp) == 0);
    snprintf(p, sizeof p, "%s/infer_chat.log", tmp);
    // BOS, <|start_header_id|> user <|end_header_id|> \n\n Where is the treasure ? <|eot_id|>, then
    // <|start_header_id|> assistant <|end_header_id|> \n\n: 15 (the template written out, tokenized, agrees)
    CHECKF(contains(p, "prompt 15 tokens"), "llama3 turn: see %s", p);
    CHECK(run("printf '\"<|start_header_id|>user<|end_header_id|>\\\\n\\\\nWhere is the treasure?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\\\\n\\\\n\"\\n' | %s tokenize --base %s --bos >%s/turn.txt",
              q, base, tmp) == 0);
    snprintf(p, sizeof p, "%s/turn.txt", tmp);
    CHECKF(contains(p, "[128000, 128006, 882, 128007, 271, ") && contains(p, ", 128009, 128006, 78191, 128007, 271]"),
           "the written-out turn: %s", p);
    // chat: two turns, then /quit; the template comes from the base
    CHECK(run("printf 'Hello\\nAnd again\\n/quit\\n' | %s chat --base %s --adapter-dir %s/store --adapter support "
              "--max-tokens 4 --temperature 0 --threads 2 >%s/chat.txt 2>%s/chat.log",
              q, base, tmp, tmp, tmp) == 0);
    snprintf(p, sizeof p, "%s/chat.txt", tmp);
    CHECKF(contains(p, "support> "), "chat: no answers in %s", p);
    // batch requests with messages
    snprintf(p, sizeof p, "%s/req.jsonl", tmp);
    const char *req = "{\"id\": 1, \"messages\": [{\"role\": \"user\", \"content\": \"Hi <|eot_id|> there\"}], "
                      "\"adapter\": \"support\", \"max_tokens\": 4, \"temperature\": 0}\n"
                      "{\"id\": 2, \"prompt\": \"Hello\", \"max_tokens\": 4, \"temperature\": 0}\n";
    CHECK_OK(file_write_atomic(p, req, strlen(req)));
    CHECK(run("%s infer --base %s --adapter-dir %s/store --requests %s --threads 2 >%s/req.out 2>%s/req.log", q, base,
              tmp, p, tmp, tmp) == 0);
    snprintf(p, sizeof p, "%s/req.out", tmp);
    CHECKF(contains(p, "\"id\": 1, \"adapter\": \"support\", \"text\"") && contains(p, "\"id\": 2"), "requests: %s", p);
    // serve: a chat request on the adapter renders with the base's llama3 template and equals infer's
    // answer to the same turn (the adapter's training_record.json names llama3 too)
    CHECK(run("%s infer --base %s --adapter %s --prompt 'Where is the treasure?' --chat-template llama3 --max-tokens 6 "
              "--temperature 0 --threads 2 >%s/want.txt 2>/dev/null", q, base, ad, tmp) == 0);
    CHECK(run("cd %s && (%s serve --base %s --adapter-dir store --port 0 --threads 2 2>serve.log & echo $! >serve.pid) && "
              "for i in $(seq 100); do grep -q 'listening on' serve.log && break; sleep 0.1; done && "
              "port=$(sed -n 's/.*listening on http:\\/\\/127.0.0.1:\\([0-9]*\\).*/\\1/p' serve.log) && "
              "curl -s http://127.0.0.1:$port/v1/chat/completions -d '{\"model\": \"support\", \"messages\": "
              "[{\"role\": \"user\", \"content\": \"Where is the treasure?\"}], \"max_tokens\": 6, \"temperature\": 0}' "
              ">serve.json; kill -TERM $(cat serve.pid); wait", tmp, q, base) == 0);
    {
        char *want = NULL, *got = NULL;
        size_t wn = 0, gn = 0;
        snprintf(p, sizeof p, "%s/want.txt", tmp);
        file_read_all(p, 1 << 20, &want, &wn);
        snprintf(p, sizeof p, "%s/serve.json", tmp);
        file_read_all(p, 1 << 20, &got, &gn);
        while (wn && want[wn - 1] == '\n') want[--wn] = 0;
        json_doc d;
        char *content = NULL;
        if (got && json_parse(&d, got, gn, "serve.json") == QL_OK) {
            int ch = json_find(&d, 0, "choices"), c0 = json_item(&d, ch, 0), msg = json_find(&d, c0, "message");
            json_get_string(&d, json_find(&d, msg, "content"), "content", &content, NULL);
            int u = json_find(&d, 0, "usage"), pt = json_find(&d, u, "prompt_tokens");
            long long n = 0;
            json_get_int(&d, pt, "prompt_tokens", &n);
            CHECKF(n == 15, "serve: prompt_tokens %lld (the llama3 turn is 15)", n);
            json_free(&d);
        }
        CHECKF(content && want && !strcmp(content, want), "serve: '%s' vs infer '%s' (%s)", content ? content : "(none)",
               want ? want : "", got ? got : "no response");
        free(content), free(want), free(got);
    }
    // eval, tokenize
    CHECK(run("%s eval --base %s --data %s/tests/fixtures/stories260K/eval.txt --threads 2 >%s/eval.txt 2>/dev/null", q,
              base, src, tmp) == 0);
    snprintf(p, sizeof p, "%s/eval.txt", tmp);
    CHECKF(contains(p, "loss=") && !contains(p, "nan"), "eval: %s", p);
    CHECK(run("printf '\"Hello world\"\\n' | %s tokenize --base %s --bos >%s/tok.txt", q, base, tmp) == 0);
    snprintf(p, sizeof p, "%s/tok.txt", tmp);
    CHECKF(contains(p, "[128000, 9906, 1917]"), "tokenize --base: %s", p);
    // --pieces, --literal, --decode, and the tokenizer directory itself
    CHECK(run("printf '\"Hello <|eot_id|>\"\\n' | %s tokenize --tokenizer %s --pieces >%s/tok2.txt", q, tokdir, tmp) == 0);
    CHECK(run("printf '\"Hello <|eot_id|>\"\\n' | %s tokenize --tokenizer %s --literal >>%s/tok2.txt", q, tokdir, tmp) == 0);
    CHECK(run("printf '[9906, 220, 128009]\\n[128000, 9906, 1917]\\n' | %s tokenize --base %s --decode >>%s/tok2.txt", q, base,
              tmp) == 0);
    snprintf(p, sizeof p, "%s/tok2.txt", tmp);
    CHECKF(contains(p, "[\"Hello\", \"\xC4\xA0\", \"<|eot_id|>\"]"), "tokenize --pieces (a space is \"\xC4\xA0\" in byte-level): %s", p);
    char *tk2 = NULL;
    size_t tk2n = 0;
    CHECK_OK(file_read_all(p, 1 << 20, &tk2, &tk2n));
    const char *lit = tk2 ? strchr(tk2, '\n') : NULL;  // the second line: --literal
    CHECKF(lit && !strncmp(lit + 1, "[9906, ", 7) && !strstr(lit + 1, "128009") && strchr(lit + 1, '\n') &&
               strchr(lit + 1, '\n') - lit > 30,
           "tokenize --literal: the special token's text must be ordinary tokens: %s", p);
    free(tk2);
    CHECKF(contains(p, "\"Hello <|eot_id|>\"") && contains(p, "\"<|begin_of_text|>Hello world\""), "tokenize --decode: %s", p);
    // export: llama.cpp's base and LoRA, and a merged directory that loads again
    CHECK(run("%s export --base %s --format gguf-base --out %s/l3.gguf 2>/dev/null", q, dir, tmp) == 0);
    CHECK(run("%s export --base %s --adapter %s --format gguf --out %s/support.gguf 2>/dev/null", q, dir, ad, tmp) == 0);
    CHECK(run("%s export --base %s --adapter %s --format merged --dtype f32 --out %s/merged 2>/dev/null", q, base, ad, tmp) == 0);
    snprintf(p, sizeof p, "%s/merged", tmp);
    CHECK_OK(model_load(&m, p, DT_F32));
    CHECK(m.tokenizer_kind == 2 && m.chat_template && m.cfg.n_eos == 3);
    model_free(&m);
    if (!test_failures && !getenv("QLORA_TEST_KEEP")) run("rm -rf %s", tmp);
    else fprintf(stderr, "test_llama3_real: files kept in %s\n", tmp);
    return test_finish("test_llama3_real");
}
