// test_stories_real.c: the real pretrained stories260K (label real).
//  - In f32, the greedy continuation of a prompt equals the PyTorch reference
//    (tests/reference/make_fixtures.py, fp64) token for token, on every backend.
//  - The prompt's last-position logits match the reference (atol 2e-4, rtol 1e-3:
//    fp32 vs fp64 over 5 layers of width 64).
//  - On tests/fixtures/stories260K/eval.txt our f32 and NF4 losses equal the
//    reference's (relative 1e-4): NF4 costs exactly what bitsandbytes' NF4 costs.
//    Issue 2 asked for NF4 perplexity within 5% of f32; on this 64-wide model the
//    independent reference measures +13.7% (attention-only NF4 +4.5%, MLP-only
//    +8.4%), so 5% is not reachable by a bit-exact NF4. The bound checked is 15%,
//    just above the reference's own figure, so that a quantizer that got worse
//    than bitsandbytes' fails here (docs/benchmarks.md, "NF4 quality").
//  - The quantized base file gives bit-identical logits to quantizing on load.
//  - The opt-in int8 NF4 decoding (QLORA_MATMUL=int8) moves the perplexity of
//    eval.txt, fed a token at a time, by at most 0.5% from exact NF4's.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "model/forward.h"
#include "model/model.h"
#include "common/safetensors.h"
#include "common/tokenizer.h"
#include "common/json.h"
#include "infer/eval.h"
#include "kernels/cpu/matmul_cpu.h"
#include "testutil.h"

static const st_tensor *need(const st_file *f, const char *name) {
    const st_tensor *t = st_find(f, name);
    if (!t) { fprintf(stderr, "fixture: tensor '%s' missing\n", name); exit(1); }
    return t;
}

static double eval_loss(model *m, ops *o, const char *path) {
    tokenizer *tok = NULL;
    CHECK_OK(tok_load_bytes(&tok, (tok_kind)m->tokenizer_kind, m->tokenizer, m->tokenizer_len, "model"));
    eval_result r = {0};
    CHECK_OK(eval_file(m, o, tok, path, NULL, &r));
    tok_free(tok);
    return r.loss;
}

// Mean next-token loss over the non-empty lines of path (BOS, then the line),
// every token fed alone as decoding does (N = 1: the GEMV path, where the opt-in
// int8 NF4 kernel runs)
static double decode_loss(model *m, ops *o, const char *path) {
    tokenizer *tok = NULL;
    CHECK_OK(tok_load_bytes(&tok, (tok_kind)m->tokenizer_kind, m->tokenizer, m->tokenizer_len, "model"));
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(file_read_all(path, 1 << 20, &text, &len));
    int V = m->cfg.vocab_size, T = m->cfg.max_pos;
    fwd_state f;
    CHECK_OK(fwd_init(&f, m, o, T, 1));
    float *l = malloc(sizeof(float) * V);
    double nll = 0;
    long count = 0;
    for (char *line = text; !test_failures && line && *line;) {
        char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        int *ids = NULL, nid = 0;
        if (n) CHECK_OK(tok_encode(tok, line, n, 0, &ids, &nid));
        for (int t = -1; t + 1 < nid && t + 1 < T - 1; t++) {  // t = -1: BOS predicts the first token
            int in = t < 0 ? m->cfg.bos_id : ids[t];
            CHECK_OK(fwd_forward(&f, l, &in, 1, t + 1, 0));
            double mx = l[0], z = 0;
            for (int v = 1; v < V; v++) mx = fmax(mx, l[v]);
            for (int v = 0; v < V; v++) z += exp(l[v] - mx);
            nll += mx + log(z) - l[ids[t + 1]], count++;
        }
        free(ids);
        line = end ? end + 1 : NULL;
    }
    fwd_free(&f);
    free(l), free(text);
    tok_free(tok);
    return count ? nll / count : 0;
}

int main(void) {
    const char *models = test_models_dir();
    if (!models) { fprintf(stderr, "no test models: skipped\n"); return TEST_SKIP; }
    const char *dir = test_path(models, "stories260K");
    char refp[4096], evalp[4096];
    snprintf(refp, sizeof refp, "%s/tests/fixtures/stories260K/ref.safetensors", test_source_dir());
    snprintf(evalp, sizeof evalp, "%s/tests/fixtures/stories260K/eval.txt", test_source_dir());
    st_file ref;
    CHECK_OK(st_open(&ref, refp));
    if (test_failures) return test_finish("test_stories_real");
    const st_tensor *gp = need(&ref, "greedy_prompt"), *g = need(&ref, "greedy"), *gm = need(&ref, "greedy_margin");
    const st_tensor *lp = need(&ref, "logits_prompt");
    const char *backends[] = {"ref", "cpu", "cuda"};
    for (int b = 0; b < 3; b++) {
        ops *o = ops_new(backends[b], 0);
        if (!o) { fprintf(stderr, "backend %s unavailable: %s\n", backends[b], ql_errmsg()); continue; }
        model m;
        CHECK_OK(model_load(&m, dir, DT_F32));
        if (test_failures) break;
        int V = m.cfg.vocab_size, P = (int)gp->numel, G = (int)g->numel;
        fwd_state f;
        CHECK_OK(fwd_init(&f, &m, o, P + G, P));
        float *l = malloc(sizeof(float) * (size_t)P * V);
        CHECK_OK(fwd_forward(&f, l, gp->data, P, 0, 1));
        char what[128];
        snprintf(what, sizeof what, "stories260K prompt logits (%s)", backends[b]);
        check_close(what, l, lp->data, (int64_t)P * V, 2e-4, 1e-3);
        int tok = 0, n_eq = 0;
        for (int i = 0; i < G; i++) {
            const float *row = i == 0 ? l + (size_t)(P - 1) * V : l;
            tok = 0;
            for (int v = 1; v < V; v++) tok = row[v] > row[tok] ? v : tok;
            int want = ((const int *)g->data)[i];
            if (tok != want) {
                CHECKF(((const float *)gm->data)[i] < 1e-3f,
                       "greedy (%s) step %d: got %d, reference %d (reference margin %.3g)", backends[b], i, tok, want,
                       ((const float *)gm->data)[i]);
                break;
            }
            n_eq++;
            CHECK_OK(fwd_forward(&f, l, &tok, 1, P + i, 0));
        }
        fprintf(stderr, "greedy (%s): %d of %d tokens equal the reference\n", backends[b], n_eq, G);
        CHECKF(n_eq == G, "greedy (%s): only %d of %d tokens equal", backends[b], n_eq, G);
        free(l);
        fwd_free(&f);
        if (b != 0) {  // the reference backend is slow; losses on the fast ones
            double lf = eval_loss(&m, o, evalp);
            model mq;
            CHECK_OK(model_load(&mq, dir, DT_NF4));
            double lq = eval_loss(&mq, o, evalp);
            double rf = ((const float *)need(&ref, "ppl_loss")->data)[0];
            double rq = ((const float *)need(&ref, "ppl_loss_nf4")->data)[0];
            fprintf(stderr, "eval (%s): f32 loss %.6f ppl %.4f (ref %.6f), nf4 loss %.6f ppl %.4f (ref %.6f), ppl ratio %.4f\n",
                    backends[b], lf, exp(lf), rf, lq, exp(lq), rq, exp(lq - lf));
            CHECKF(fabs(lf - rf) <= 1e-4 * rf, "f32 loss %.6f vs reference %.6f", lf, rf);
            CHECKF(fabs(lq - rq) <= 1e-4 * rq, "nf4 loss %.6f vs reference %.6f", lq, rq);
            CHECKF(exp(lq - lf) <= 1.15, "NF4 perplexity %.4f is more than 15%% above f32 %.4f", exp(lq), exp(lf));
            if (b == 1) {  // the opt-in int8 NF4 decoding (cpu): perplexity within 0.5% of exact NF4's
                double le = decode_loss(&mq, o, evalp);
                matmul_cpu_int8_set(1);
                double l8 = decode_loss(&mq, o, evalp);
                matmul_cpu_int8_set(0);
                fprintf(stderr, "decode-path nf4 ppl: exact %.4f, int8 %.4f (ratio %.5f)\n", exp(le), exp(l8),
                        exp(l8 - le));
                CHECKF(le > 0 && l8 != le, "int8 decoding gave the exact loss: was it taken?");
                CHECKF(fabs(exp(l8 - le) - 1.0) <= 0.005, "int8 decoding moves perplexity by %.3f%% (bound 0.5%%)",
                       100.0 * (exp(l8 - le) - 1.0));
            }
            // the base file gives the same logits, bit for bit
            char qp[256];
            snprintf(qp, sizeof qp, "/tmp/qlora_test_stories_%d.qlb", (int)getpid());
            CHECK_OK(model_save_base(&mq, qp));
            model mf;
            CHECK_OK(model_load(&mf, qp, DT_F32));
            CHECK(mf.base_dtype == DT_NF4);
            fwd_state f1, f2;
            float *a = malloc(sizeof(float) * V), *c = malloc(sizeof(float) * V);
            CHECK_OK(fwd_init(&f1, &mq, o, 16, 16));
            CHECK_OK(fwd_init(&f2, &mf, o, 16, 16));
            CHECK_OK(fwd_forward(&f1, a, gp->data, P < 16 ? P : 16, 0, 0));
            CHECK_OK(fwd_forward(&f2, c, gp->data, P < 16 ? P : 16, 0, 0));
            CHECKF(memcmp(a, c, sizeof(float) * V) == 0, "base file logits differ from quantize-on-load (%s)", backends[b]);
            fwd_free(&f1), fwd_free(&f2);
            free(a), free(c);
            model_free(&mf);
            model_free(&mq);
            unlink(qp);
        }
        model_free(&m);
        ops_delete(o);
    }
    st_close(&ref);
    return test_finish("test_stories_real");
}
