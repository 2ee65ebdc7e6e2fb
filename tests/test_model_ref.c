// test_model_ref.c: the forward pass against the independent PyTorch reference
// (tests/reference/llama_ref.py, fp64) on the tiny random models in
// tests/fixtures/models: logits of a fixed batch with the weights as stored and
// with NF4 linears, greedy tokens, and perplexity. Every backend built in runs.
//
// Tolerances (the one rule |a-b| <= atol + rtol*|ref|):
//  - logits: atol 2e-4, rtol 1e-3. We compute in fp32 from exactly the same
//    weights (NF4 dequantization is bit-exact with the reference's); fp32
//    rounding over dims <= 200 and 3 layers stays far under 1e-4 on logits of
//    size ~1-10, so 2e-4 catches any real error (a wrong rope or mask moves
//    logits by >1e-2).
//  - greedy: equal token for token while the reference's top-1/top-2 gap
//    exceeds 1e-3 (a smaller gap is a tie that fp32 rounding may break either way).
//  - mean loss: relative 1e-4 (a sum of fp32 log-softmaxes).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/forward.h"
#include "model/model.h"
#include "common/safetensors.h"
#include "testutil.h"

static const st_tensor *need(const st_file *f, const char *name) {
    const st_tensor *t = st_find(f, name);
    if (!t) {
        fprintf(stderr, "fixture %s: tensor '%s' missing\n", f->path, name);
        exit(1);
    }
    return t;
}

static void run_model(const char *name, const char *backend, dtype bd) {
    char dir[4096], refp[4200], what[256];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/%s", test_source_dir(), name);
    snprintf(refp, sizeof refp, "%s/ref.safetensors", dir);
    st_file ref;
    CHECK_OK(st_open(&ref, refp));
    if (test_failures) return;
    model m;
    CHECK_OK(model_load(&m, dir, bd));
    if (test_failures) { st_close(&ref); return; }
    ops *o = ops_new(backend, 0);
    if (!o) {  // backend not built or no device: not this test's business
        fprintf(stderr, "%s: backend %s unavailable (%s), skipped\n", name, backend, ql_errmsg());
        model_free(&m);
        st_close(&ref);
        return;
    }
    int V = m.cfg.vocab_size;
    const st_tensor *tok = need(&ref, "tokens");
    const st_tensor *lg = need(&ref, bd == DT_NF4 ? "logits_nf4" : "logits");
    int B = (int)tok->shape[0], T = (int)tok->shape[1];
    fwd_state f;
    CHECK_OK(fwd_init(&f, &m, o, 64, 64));
    float *logits = malloc(sizeof(float) * (size_t)T * V);
    for (int b = 0; b < B && !test_failures; b++) {
        CHECK_OK(fwd_forward(&f, logits, (const int *)tok->data + b * T, T, 0, 1));
        snprintf(what, sizeof what, "logits(%s,%s,%s,b=%d)", name, backend, base_dtype_name(bd), b);
        check_close(what, logits, (const float *)lg->data + (size_t)b * T * V, (int64_t)T * V, 2e-4, 1e-3);
    }
    // incremental decoding through the KV cache gives the same logits as one pass
    if (!test_failures) {
        float *one = malloc(sizeof(float) * V);
        for (int t = 0; t < T; t++) {
            CHECK_OK(fwd_forward(&f, one, (const int *)tok->data + t, 1, t, 0));
            snprintf(what, sizeof what, "kv-cache(%s,%s,%s,t=%d)", name, backend, base_dtype_name(bd), t);
            if (t == 0 || t == T - 1)
                check_close(what, one, (const float *)lg->data + (size_t)t * V, V, 2e-4, 1e-3);
        }
        free(one);
    }
    if (bd != DT_NF4) {
        // greedy continuation
        const st_tensor *gp = need(&ref, "greedy_prompt"), *g = need(&ref, "greedy"), *gm = need(&ref, "greedy_margin");
        int P = (int)gp->numel, G = (int)g->numel;
        int *seq = malloc(sizeof(int) * (size_t)(P + G));
        memcpy(seq, gp->data, sizeof(int) * (size_t)P);
        float *l = malloc(sizeof(float) * V);
        CHECK_OK(fwd_forward(&f, l, seq, P, 0, 0));
        int ok = 1;
        for (int i = 0; i < G && ok; i++) {
            int best = 0;
            for (int v = 1; v < V; v++) best = l[v] > l[best] ? v : best;
            int want = ((const int *)g->data)[i];
            if (((const float *)gm->data)[i] < 1e-3f) {
                fprintf(stderr, "greedy(%s,%s): step %d is a near tie (gap %.2g); compared up to here\n", name,
                        backend, i, ((const float *)gm->data)[i]);
                break;
            }
            CHECKF(best == want, "greedy(%s,%s) step %d: got %d, reference %d", name, backend, i, best, want);
            ok = best == want;
            seq[P + i] = best;
            if (ok && i + 1 < G) CHECK_OK(fwd_forward(&f, l, &seq[P + i], 1, P + i, 0));
        }
        if (ok) fprintf(stderr, "greedy(%s,%s): %d tokens equal the reference\n", name, backend, G);
        free(seq);
        free(l);
        // perplexity
        const st_tensor *pt = need(&ref, "ppl_tokens"), *pl = need(&ref, "ppl_loss");
        int S = (int)pt->shape[0], L = (int)pt->shape[1];
        double nll = 0;
        float *all = malloc(sizeof(float) * (size_t)L * V);
        for (int s = 0; s < S; s++) {
            const int *ids = (const int *)pt->data + (size_t)s * L;
            CHECK_OK(fwd_forward(&f, all, ids, L - 1, 0, 1));
            for (int t = 0; t < L - 1; t++) {
                const float *r = all + (size_t)t * V;
                double mx = r[0], z = 0;
                for (int v = 1; v < V; v++) mx = r[v] > mx ? r[v] : mx;
                for (int v = 0; v < V; v++) z += exp(r[v] - mx);
                nll += log(z) + mx - r[ids[t + 1]];
            }
        }
        free(all);
        double loss = nll / ((double)S * (L - 1)), want = ((const float *)pl->data)[0];
        CHECKF(fabs(loss - want) <= 1e-4 * fabs(want), "ppl(%s,%s): loss %.7f, reference %.7f", name, backend, loss, want);
        fprintf(stderr, "ppl(%s,%s): loss %.7f reference %.7f\n", name, backend, loss, want);
    }
    free(logits);
    fwd_free(&f);
    ops_delete(o);
    model_free(&m);
    st_close(&ref);
}

int main(int argc, char **argv) {
    const char *models[] = {"tiny_mha", "tiny_gqa", "tiny_f16_sharded"};
    const char *backends[] = {"ref", "cpu", "cuda"};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++)
        for (size_t b = 0; b < sizeof backends / sizeof *backends; b++) {
            if (argc > 1 && !strstr(models[i], argv[1]) && !strstr(backends[b], argv[1])) continue;
            run_model(models[i], backends[b], DT_F32);
            run_model(models[i], backends[b], DT_NF4);
        }
    return test_finish("test_model_ref");
}
