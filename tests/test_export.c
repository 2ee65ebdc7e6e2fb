// test_export.c: qlora export --format merged (export/merge.c) on tiny_gqa with
// the adapters of tests/fixtures/adapters (written by the PEFT-like writer in
// tests/reference):
//   (a) merged in F32, loaded back by qlora as a Hugging Face directory, gives the
//       PyTorch reference's logits of W + s·B·A (expected.safetensors) for the
//       F32 rsLoRA adapter (q, v, down) and the BF16 r2 adapter (all seven);
//   (b) merged in F16: the same logits within the rounding of the weights to 16
//       bits; merged in BF16: every weight is the F32 merge rounded to BF16
//       (round-to-nearest-even), exactly (BF16's 8 bits move tiny_gqa's random
//       logits by up to ~0.1, too coarse for a logits check to mean much);
//   (c) the directory holds config.json (the base's), tokenizer.model (the
//       base's bytes) and model.safetensors; an existing --out and an unwritable
//       one are refused, and nothing half-written is left.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "model/forward.h"
#include "common/json.h"
#include "model/model.h"
#include "common/safetensors.h"
#include "export/merge.h"
#include "testutil.h"
#include "train/peft.h"

// F32: the same sums as the fixture's, reordered (test_adapter_fixture's bound);
// F16 keeps 11 bits (2^-11 relative per weight): on tiny_gqa's O(1) logits ~2e-3.
#define ATOL_F32 5e-5
#define ATOL_F16 5e-3

static void check_merged(const model *m, const lora_adapter *a, const char *base_dir, const char *dir, dtype type,
                         const st_file *ex, const char *expect, double atol) {
    char out[4200];
    snprintf(out, sizeof out, "%s/%s_%s", dir, expect, dtype_name(type));
    CHECK_OK(export_merged(m, a, base_dir, type, out));
    model mm;
    CHECK_OK(model_load(&mm, out, DT_F32));
    if (test_failures) return;
    if (atol < 0) {  // BF16: each weight against the F32 merge (made first, same name with _F32)
        char f32dir[4200];
        snprintf(f32dir, sizeof f32dir, "%s/%s_F32", dir, expect);
        model mf;
        CHECK_OK(model_load(&mf, f32dir, DT_F32));
        long bad = 0, n = 0;
        for (int l = 0; l < mm.cfg.n_layers && !test_failures; l++) {
            const qweight *wb[7] = {&mm.layers[l].wq, &mm.layers[l].wk, &mm.layers[l].wv, &mm.layers[l].wo,
                                    &mm.layers[l].w_gate, &mm.layers[l].w_up, &mm.layers[l].w_down};
            const qweight *wf[7] = {&mf.layers[l].wq, &mf.layers[l].wk, &mf.layers[l].wv, &mf.layers[l].wo,
                                    &mf.layers[l].w_gate, &mf.layers[l].w_up, &mf.layers[l].w_down};
            for (int j = 0; j < 7; j++)
                for (int64_t r = 0; r < wf[j]->rows; r++)
                    for (int64_t c = 0; c < wf[j]->cols; c++, n++)
                        bad += qweight_get(wb[j], r, c) != bf16_to_f32(f32_to_bf16(qweight_get(wf[j], r, c)));
        }
        CHECKF(bad == 0 && n > 0, "BF16 merge: %ld of %ld weights are not the F32 merge rounded", bad, n);
        model_free(&mf);
        model_free(&mm);
        return;
    }
    const st_tensor *tok = st_find(ex, "tokens"), *want = st_find(ex, expect);
    int T = (int)tok->numel, V = mm.cfg.vocab_size;
    CHECK(want && want->numel == (int64_t)T * V);
    ops *o = ops_ref_new();
    fwd_state f;
    float *got = malloc(sizeof(float) * (size_t)T * V);
    CHECK_OK(fwd_init(&f, &mm, o, T, T));
    CHECK_OK(fwd_forward(&f, got, tok->data, T, 0, 1));
    char what[160];
    snprintf(what, sizeof what, "merged %s (%s) vs PyTorch", expect, dtype_name(type));
    if (want) check_close(what, got, want->data, (int64_t)T * V, atol, 0);
    fwd_free(&f);
    ops_delete(o);
    free(got);
    // (c) what the directory holds
    char *cfg = NULL, *cfg0 = NULL, *tk = NULL;
    size_t n1, n0, nt;
    CHECK_OK(file_read_all(test_path(out, "config.json"), 1 << 20, &cfg, &n1));
    CHECK_OK(file_read_all(test_path(base_dir, "config.json"), 1 << 20, &cfg0, &n0));
    CHECK(cfg && cfg0 && n1 == n0 && !memcmp(cfg, cfg0, n0));
    CHECK_OK(file_read_all(test_path(out, "tokenizer.model"), 1 << 24, &tk, &nt));
    CHECK(tk && nt == m->tokenizer_len && !memcmp(tk, m->tokenizer, nt));
    free(cfg), free(cfg0), free(tk);
    model_free(&mm);
}

int main(void) {
    char model_dir[4096], adir[4096];
    snprintf(model_dir, sizeof model_dir, "%s/tests/fixtures/models/tiny_gqa", test_source_dir());
    snprintf(adir, sizeof adir, "%s/tests/fixtures/adapters", test_source_dir());
    st_file ex;
    CHECK_OK(st_open(&ex, test_path(adir, "expected.safetensors")));
    model m;
    CHECK_OK(model_load(&m, model_dir, DT_F32));
    lora_adapter a1, a2;
    CHECK_OK(lora_load_peft(&a1, &m.cfg, test_path(adir, "tiny_gqa_f32_rslora")));
    CHECK_OK(lora_load_peft(&a2, &m.cfg, test_path(adir, "tiny_gqa_bf16_r2")));
    if (test_failures) return test_finish("test_export");
    char dir[] = "/tmp/qlora_export_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    check_merged(&m, &a1, model_dir, dir, DT_F32, &ex, "logits_f32_rslora", ATOL_F32);
    check_merged(&m, &a2, model_dir, dir, DT_F32, &ex, "logits_bf16_r2", ATOL_F32);
    check_merged(&m, &a1, model_dir, dir, DT_F16, &ex, "logits_f32_rslora", ATOL_F16);
    check_merged(&m, &a2, model_dir, dir, DT_BF16, &ex, "logits_bf16_r2", -1);
    // (c) refusals leave nothing behind
    char out[4200];
    snprintf(out, sizeof out, "%s/logits_f32_rslora_F32", dir);
    CHECK(export_merged(&m, &a1, model_dir, DT_F32, out) == QL_EINVAL && strstr(ql_errmsg(), "already exists"));
    snprintf(out, sizeof out, "%s/no/such/dir", dir);
    CHECK(export_merged(&m, &a1, model_dir, DT_F32, out) == QL_EIO && strstr(ql_errmsg(), "no/such/dir"));
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) = 4 && ! ls '%s' | grep -q tmp", dir, dir);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    lora_free(&a1), lora_free(&a2);
    model_free(&m);
    st_close(&ex);
    return test_finish("test_export");
}
