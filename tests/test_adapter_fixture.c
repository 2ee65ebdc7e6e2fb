// test_adapter_fixture.c: adapters written the way Hugging Face PEFT writes them
// (not by lora_save_peft) load with lora_load_peft and give the logits of an
// independent float64 reference. Fixtures: tests/fixtures/adapters/, written by
// tests/reference/make_adapter_fixtures.py (README there):
//   tiny_gqa_f32_rslora  F32, q/v/down, r 4, alpha 8, rsLoRA (scaling 8/sqrt(4) = 4),
//                        target_modules listed unsorted, every LoraConfig field;
//   tiny_gqa_bf16_r2     BF16, all seven modules, r 2, alpha 16 (scaling 8);
//   expected.safetensors tokens I32[T]; logits_base, logits_f32_rslora,
//                        logits_bf16_r2, logits_half_scale F32[T,V]: llama_ref's
//                        float64 forward of tiny_gqa with W + s*B@A merged, from
//                        the values as stored.
// On tiny_gqa with f32 base weights (its BF16 weights upcast exactly), on the ref
// and cpu backends, this checks:
//   (a) each adapter's rank, alpha, rsLoRA flag, scaling and target bits;
//   (b) base, adapter 1, adapter 2 and adapter 1 at half its scaling (a shallow
//       copy of the loaded adapter with scaling * 0.5, the fixture's
//       logits_half_scale) against the reference;
//   (c) each adapter moves the logits by more than 100 x atol, so an adapter that
//       is silently not applied fails, and removing it gives the base back;
//   (d) (b) and (c) again with the adapters resident (lora_load_peft_resident:
//       A and B read in place as stored, F32 and BF16).
//
// Tolerance (the one rule |a-b| <= atol + rtol*|ref|): atol 5e-5, rtol 1e-5.
// The same forward in float32 PyTorch, the adapter through its own path as here,
// drifts from the float64 reference by at most 4.7e-6 on these logits (|logit|
// <= 4; make_adapter_fixtures.py --check); this code drifts by up to 6.8e-6
// (cpu, BF16 adapter), 1.6e-6 without an adapter. 5e-5 leaves 7x for other
// summation orders and is far below what real mistakes cost: alpha/r instead
// of alpha/sqrt(r) for adapter 1 gives logits_half_scale, 3.2 away; dropping
// any one layer's module moves the logits by 0.38 or more.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/forward.h"
#include "model/model.h"
#include "common/safetensors.h"
#include "testutil.h"
#include "train/peft.h"

#define ATOL 5e-5
#define RTOL 1e-5

static const st_tensor *need(const st_file *f, const char *name, int64_t numel) {
    const st_tensor *t = st_find(f, name);
    if (!t || t->type != DT_F32 || t->numel != numel) {
        fprintf(stderr, "fixture %s: tensor '%s' missing, or not F32 of %lld elements\n", f->path, name,
                (long long)numel);
        exit(1);
    }
    return t;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

// (a): what lora_load_peft read from adapter_config.json and the tensors.
static void check_adapter(const char *name, const lora_adapter *a, int rank, float alpha, int rslora, float scaling,
                          unsigned targets) {
    CHECKF(a->rank == rank && a->alpha == alpha && a->use_rslora == rslora,
           "%s: r %d alpha %g rslora %d, expected %d %g %d", name, a->rank, (double)a->alpha, a->use_rslora, rank,
           (double)alpha, rslora);
    CHECKF(a->scaling == scaling, "%s: scaling %.9g, expected %.9g", name, (double)a->scaling, (double)scaling);
    CHECKF(a->targets == targets, "%s: targets 0x%x, expected 0x%x", name, a->targets, targets);
    fprintf(stderr, "%s: r %d, alpha %g, rslora %d, scaling %g, targets 0x%x\n", name, a->rank, (double)a->alpha,
            a->use_rslora, (double)a->scaling, a->targets);
}

typedef struct {
    const char *key;        // logits tensor in expected.safetensors
    const lora_adapter *a;  // NULL: the base
} fixture_case;

static void run_backend(model *m, const char *backend, const st_file *ex, const fixture_case *cases, int ncases) {
    ops *o = ops_new(backend, 0);
    CHECKF(o != NULL, "backend %s: %s", backend, ql_errmsg());
    if (!o) return;
    int V = m->cfg.vocab_size;
    const st_tensor *tok = st_find(ex, "tokens");
    int T = (int)tok->numel;
    int64_t n = (int64_t)T * V;
    const float *ref_base = need(ex, "logits_base", n)->data;
    float *got = malloc(sizeof(float) * (size_t)n);
    fwd_state f;
    CHECK_OK(fwd_init(&f, m, o, T, T));
    char what[128];
    for (int i = 0; i < ncases; i++) {
        const float *ref = need(ex, cases[i].key, n)->data;
        CHECK_OK(fwd_set_adapter(&f, cases[i].a));
        CHECK_OK(fwd_forward(&f, got, tok->data, T, 0, 1));
        snprintf(what, sizeof what, "%s(%s)", cases[i].key, backend);
        check_close(what, got, ref, n, ATOL, RTOL);
        if (!cases[i].a) continue;
        // (c) the adapter is applied: far from the base, in the fixture and here
        double dref = max_abs_diff(ref, ref_base, n), dgot = max_abs_diff(got, ref_base, n);
        fprintf(stderr, "  max |%s - base|: reference %.4f, %s %.4f\n", cases[i].key, dref, backend, dgot);
        CHECKF(dref > 100 * ATOL && dgot > 100 * ATOL, "%s: the adapter barely moves the logits", what);
    }
    // (c) without the adapter again: the base
    CHECK_OK(fwd_set_adapter(&f, NULL));
    CHECK_OK(fwd_forward(&f, got, tok->data, T, 0, 1));
    snprintf(what, sizeof what, "logits_base(%s, adapter removed)", backend);
    check_close(what, got, ref_base, n, ATOL, RTOL);
    fwd_free(&f);
    free(got);
    ops_delete(o);
}

int main(void) {
    char model_dir[4096], adir[4096];
    snprintf(model_dir, sizeof model_dir, "%s/tests/fixtures/models/tiny_gqa", test_source_dir());
    snprintf(adir, sizeof adir, "%s/tests/fixtures/adapters", test_source_dir());
    st_file ex;
    CHECK_OK(st_open(&ex, test_path(adir, "expected.safetensors")));
    if (test_failures) return test_finish("test_adapter_fixture");
    model m;
    CHECK_OK(model_load(&m, model_dir, DT_F32));
    if (test_failures) { st_close(&ex); return test_finish("test_adapter_fixture"); }
    const st_tensor *tok = st_find(&ex, "tokens");
    CHECKF(tok && tok->type == DT_I32 && tok->ndim == 1 && tok->numel >= 1, "fixture: bad 'tokens'");
    for (int64_t t = 0; tok && t < tok->numel; t++)
        CHECK(((const int *)tok->data)[t] >= 0 && ((const int *)tok->data)[t] < m.cfg.vocab_size);

    lora_adapter a1, a2;
    CHECK_OK(lora_load_peft(&a1, &m.cfg, test_path(adir, "tiny_gqa_f32_rslora")));
    CHECK_OK(lora_load_peft(&a2, &m.cfg, test_path(adir, "tiny_gqa_bf16_r2")));
    if (!test_failures) {  // (a)
        check_adapter("tiny_gqa_f32_rslora", &a1, 4, 8.0f, 1, 4.0f, LORA_Q | LORA_V | LORA_DOWN);
        check_adapter("tiny_gqa_bf16_r2", &a2, 2, 16.0f, 0, 8.0f, LORA_ALL);
        CHECK(a1.base_model && !strcmp(a1.base_model, "tests/fixtures/models/tiny_gqa"));
        CHECK(a1.dropout == 0.05f && a2.dropout == 0.1f);
    }
    if (!test_failures) {
        lora_adapter half = a1;  // shares a1's weights; not freed
        half.scaling = 0.5f * a1.scaling;
        const fixture_case cases[] = {
            {"logits_base", NULL},
            {"logits_f32_rslora", &a1},
            {"logits_bf16_r2", &a2},
            {"logits_half_scale", &half},
        };
        const char *backends[] = {"ref", "cpu"};
        for (int b = 0; b < 2; b++) run_backend(&m, backends[b], &ex, cases, 4);
    }
    // (d) the same adapters resident, as infer, chat and serve load them: A and B
    // read in place as stored (F32 and BF16 here), against the same reference
    lora_adapter r1, r2;
    CHECK_OK(lora_load_peft_resident(&r1, &m.cfg, test_path(adir, "tiny_gqa_f32_rslora")));
    CHECK_OK(lora_load_peft_resident(&r2, &m.cfg, test_path(adir, "tiny_gqa_bf16_r2")));
    if (!test_failures) {
        check_adapter("tiny_gqa_f32_rslora (resident)", &r1, 4, 8.0f, 1, 4.0f, LORA_Q | LORA_V | LORA_DOWN);
        check_adapter("tiny_gqa_bf16_r2 (resident)", &r2, 2, 16.0f, 0, 8.0f, LORA_ALL);
        for (int i = 0; i < m.cfg.n_layers * LORA_NMODULES; i++) {  // in place, as stored
            CHECK(!r1.w[i].A && !r2.w[i].A && r2.w[i].rA && r2.w[i].tA == DT_BF16 && r2.w[i].tB == DT_BF16);
            CHECK(!r1.w[i].rA || (r1.w[i].tA == DT_F32 && r1.w[i].tB == DT_F32));
        }
        lora_adapter half = r1;  // shares r1's weights; not freed
        half.scaling = 0.5f * r1.scaling;
        const fixture_case cases[] = {
            {"logits_f32_rslora", &r1},
            {"logits_bf16_r2", &r2},
            {"logits_half_scale", &half},
        };
        const char *backends[] = {"ref", "cpu"};
        for (int b = 0; b < 2; b++) run_backend(&m, backends[b], &ex, cases, 3);
    }
    lora_free(&r1);
    lora_free(&r2);
    lora_free(&a1);
    lora_free(&a2);
    model_free(&m);
    st_close(&ex);
    return test_finish("test_adapter_fixture");
}
