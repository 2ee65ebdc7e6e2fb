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
//   (c) the directory holds config.json, tokenizer.model (the base's bytes) and
//       model.safetensors; an existing --out and an unwritable one are refused,
//       and nothing half-written is left;
//   (d) config.json is what transformers' AutoConfig needs, read back field by
//       field with our JSON reader against tiny_gqa's literal values: model_type,
//       architectures, torch_dtype of the dtype written (F16, BF16, F32), every
//       Llama field with rope_scaling, head_dim only when it is not C/H (tiny_f16_sharded,
//       Mistral), for a Hugging Face directory and for a qlora base file as --base;
//       a directory's other fields (pad_token_id, _name_or_path, ...) are kept and its
//       stale torch_dtype and dtype are not;
//   (e) names (base_model_name_or_path): a directory's config.json _name_or_path,
//       else its name; a base file's recorded name, else its stem; an adapter
//       written with a local base path names the model instead.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"
#include "common/err.h"
#include "common/fileio.h"
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

// ---- (d) ----
static const char *torch_name(dtype t) { return t == DT_F16 ? "float16" : t == DT_BF16 ? "bfloat16" : "float32"; }

static int cfg_int(json_doc *d, const char *key, long long want) {
    int v = json_find(d, 0, key);
    long long x = -12345;
    if (v >= 0 && json_get_int(d, v, key, &x) != QL_OK) x = -12345;
    if (x != want) fprintf(stderr, "%s: '%s' is %lld, want %lld\n", d->what, key, x, want);
    return x == want;
}
static int cfg_num(json_doc *d, int obj, const char *key, double want) {
    int v = json_find(d, obj, key);
    double x = -1;
    if (v >= 0 && json_get_double(d, v, key, &x) != QL_OK) x = -1;
    if (x != want) fprintf(stderr, "%s: '%s' is %.17g, want %.17g\n", d->what, key, x, want);
    return x == want;
}
static int cfg_str(json_doc *d, int obj, const char *key, const char *want) {
    int v = json_find(d, obj, key);
    int ok = v >= 0 && json_type(d, v) == JSON_STRING && json_eq(d, v, want);
    if (!ok) fprintf(stderr, "%s: '%s' is not \"%s\"\n", d->what, key, want);
    return ok;
}

// dir/config.json of a tiny_gqa merge in type: every field AutoConfig reads, by
// tiny_gqa's literal values (tests/fixtures/models/tiny_gqa/config.json).
// kept_name: the base's own _name_or_path, expected kept with pad_token_id 0 (or NULL).
static void check_config(const char *dir, dtype type, const char *kept_name) {
    char *js = NULL;
    size_t n;
    const char *path = test_path(dir, "config.json");
    CHECK_OK(file_read_all(path, 1 << 20, &js, &n));
    if (!js) return;
    json_doc d;
    CHECK_OK(json_parse(&d, js, n, path));
    if (test_failures) { free(js); return; }
    int a = json_find(&d, 0, "architectures");
    CHECKF(a >= 0 && json_type(&d, a) == JSON_ARRAY && json_size(&d, a) == 1 &&
           json_eq(&d, json_item(&d, a, 0), "LlamaForCausalLM"), "%s: architectures", path);
    CHECK(cfg_str(&d, 0, "model_type", "llama"));
    CHECK(cfg_str(&d, 0, "torch_dtype", torch_name(type)));
    CHECK(cfg_str(&d, 0, "hidden_act", "silu"));
    CHECK(cfg_int(&d, "hidden_size", 96) && cfg_int(&d, "intermediate_size", 172) && cfg_int(&d, "num_hidden_layers", 3));
    CHECK(cfg_int(&d, "num_attention_heads", 6) && cfg_int(&d, "num_key_value_heads", 2));
    CHECK(cfg_int(&d, "vocab_size", 384) && cfg_int(&d, "max_position_embeddings", 256));
    CHECK(cfg_int(&d, "bos_token_id", 1) && cfg_int(&d, "eos_token_id", 2));
    CHECK(cfg_num(&d, 0, "rms_norm_eps", 1e-5) && cfg_num(&d, 0, "rope_theta", 500000.0));  // as the base wrote them
    int v = json_find(&d, 0, "tie_word_embeddings"), tie = 0;
    CHECK(v >= 0 && json_get_bool(&d, v, "tie_word_embeddings", &tie) == QL_OK && tie == 1);
    CHECKF(json_find(&d, 0, "head_dim") < 0, "%s: head_dim written though it is hidden_size / heads", path);
    CHECKF(json_find(&d, 0, "dtype") < 0, "%s: a 'dtype' beside torch_dtype", path);
    int rs = json_find(&d, 0, "rope_scaling");
    CHECK(rs >= 0 && json_type(&d, rs) == JSON_OBJECT && cfg_str(&d, rs, "rope_type", "llama3") &&
          cfg_num(&d, rs, "factor", 8) && cfg_num(&d, rs, "low_freq_factor", 1) && cfg_num(&d, rs, "high_freq_factor", 4) &&
          cfg_num(&d, rs, "original_max_position_embeddings", 64));
    if (kept_name) CHECK(cfg_str(&d, 0, "_name_or_path", kept_name) && cfg_int(&d, "pad_token_id", 0));
    else CHECK(json_find(&d, 0, "_name_or_path") < 0);
    json_free(&d);
    model_config c;  // and qlora reads it back
    CHECK_OK(config_parse(&c, js, n, path));
    CHECK(c.rope_scaling == ROPE_LLAMA3 && c.head_dim == 16 && c.n_eos == 1 && c.norm_eps == 1e-5f);
    free(js);
}

static void check_merged(const model *m, const lora_adapter *a, const char *base_dir, const char *dir, dtype type,
                         const st_file *ex, const char *expect, double atol) {
    char out[4200];
    snprintf(out, sizeof out, "%s/%s_%s", dir, expect, dtype_name(type));
    CHECK_OK(export_merged(m, a, base_dir, type, out));
    model mm;
    CHECK_OK(model_load(&mm, out, DT_F32));
    if (test_failures) return;
    check_config(out, type, NULL);
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
    char *tk = NULL;
    size_t nt;
    CHECK_OK(file_read_all(test_path(out, "tokenizer.model"), 1 << 24, &tk, &nt));
    CHECK(tk && nt == m->tokenizer_len && !memcmp(tk, m->tokenizer, nt));
    free(tk);
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
    // (d) a qlora base file as --base: the config comes from its embedded model_config
    char qdir[4200], qlb[4300], out[4400];
    snprintf(qdir, sizeof qdir, "%s/qlb", dir);
    CHECK(mkdir(qdir, 0777) == 0);
    snprintf(qlb, sizeof qlb, "%s/base.qlb", qdir);
    CHECK_OK(model_save_base(&m, qlb));
    model mq;
    CHECK_OK(model_load(&mq, qlb, DT_F32));
    for (int t = 0; t < 3 && !test_failures; t++) {
        dtype type = t == 0 ? DT_F16 : t == 1 ? DT_BF16 : DT_F32;
        snprintf(out, sizeof out, "%s/merged_%s", qdir, dtype_name(type));
        CHECK_OK(export_merged(&mq, &a1, qlb, type, out));
        check_config(out, type, NULL);
    }
    // (d) a directory's own other fields are kept, its stale torch_dtype and dtype are not
    char hdir[4300], *cfg0 = NULL;
    size_t n0;
    snprintf(hdir, sizeof hdir, "%s/acme", dir);
    CHECK(mkdir(hdir, 0777) == 0);
    CHECK_OK(file_read_all(test_path(model_dir, "config.json"), 1 << 20, &cfg0, &n0));
    char *brace = cfg0 ? strchr(cfg0, '{') : NULL;
    CHECK(brace != NULL);
    if (brace) {
        char cfg1[8192];
        snprintf(cfg1, sizeof cfg1, "{\"_name_or_path\": \"acme/tiny-gqa-base\", \"pad_token_id\": 0, "
                 "\"dtype\": \"bfloat16\",%s", brace + 1);
        CHECK_OK(file_write_atomic(test_path(hdir, "config.json"), cfg1, strlen(cfg1)));
        CHECK(symlink(test_path(model_dir, "model.safetensors"), test_path(hdir, "model.safetensors")) == 0);
        CHECK(symlink(test_path(model_dir, "tokenizer.model"), test_path(hdir, "tokenizer.model")) == 0);
        model mh;
        CHECK_OK(model_load(&mh, hdir, DT_F32));
        snprintf(out, sizeof out, "%s/merged", hdir);
        if (!test_failures) CHECK_OK(export_merged(&mh, &a1, hdir, DT_F32, out));
        check_config(out, DT_F32, "acme/tiny-gqa-base");
        // (e) its name is _name_or_path
        CHECK(mh.name && !strcmp(mh.name, "acme/tiny-gqa-base"));
        if (mh.layers) model_free(&mh);
    }
    free(cfg0);
    // (d) head_dim when it is not hidden_size / heads, and Mistral's names
    model_config cs;
    char *js = NULL, fs[4200];
    snprintf(fs, sizeof fs, "%s/tests/fixtures/models/tiny_f16_sharded", test_source_dir());
    CHECK_OK(config_load_dir(&cs, fs));
    CHECK_OK(config_to_hf_json(&js, &cs, DT_BF16, NULL, 0, NULL));
    if (js) {
        json_doc d;
        CHECK_OK(json_parse(&d, js, strlen(js), "tiny_f16_sharded"));
        CHECK(cfg_int(&d, "head_dim", 24) && cfg_int(&d, "hidden_size", 80) && cfg_int(&d, "num_attention_heads", 5));
        CHECK(cfg_str(&d, 0, "model_type", "mistral") && cfg_str(&d, 0, "torch_dtype", "bfloat16"));
        int a = json_find(&d, 0, "architectures");
        CHECK(a >= 0 && json_eq(&d, json_item(&d, a, 0), "MistralForCausalLM"));
        json_free(&d);
    }
    free(js);
    CHECK(config_to_hf_json(&js, &cs, DT_F32, "[1]", 3, "x/config.json") == QL_EFORMAT &&
          strstr(ql_errmsg(), "x/config.json: expected a JSON object") && js == NULL);
    // (e) names
    char *nm = NULL;
    CHECK_OK(model_name_of(&nm, model_dir));
    CHECK(nm && !strcmp(nm, "tiny_gqa"));
    free(nm);
    CHECK_OK(model_name_of(&nm, test_path(model_dir, "")));  // "dir/": the trailing slash is not the name
    CHECK(nm && !strcmp(nm, "tiny_gqa"));
    free(nm);
    CHECK(m.name && !strcmp(m.name, "tiny_gqa") && mq.name && !strcmp(mq.name, "tiny_gqa"));
    CHECK_OK(model_name_of(&nm, qlb));  // recorded at quantize time, not the file's name ("base")
    CHECK(nm && !strcmp(nm, "tiny_gqa"));
    free(nm);
    char old_qlb[4300];  // a base file written before qlora recorded a name: its stem
    snprintf(old_qlb, sizeof old_qlb, "%s/old-base.qlb", qdir);
    char *keep = m.name;
    m.name = NULL;
    CHECK_OK(model_save_base(&m, old_qlb));
    m.name = keep;
    CHECK_OK(model_name_of(&nm, old_qlb));
    CHECK(nm && !strcmp(nm, "old-base"));
    free(nm);
    // an adapter written with a local base names the model (train sets base_model to --base)
    static const char *const cases[][2] = {{NULL, "tiny_gqa"}, {NULL, "acme/tiny-gqa-base"}, {NULL, "old-base"},
                                           {"/no/such/dir/my-model.qlb", "my-model"},
                                           {"meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B"}};
    const char *bases[3] = {qlb, hdir, old_qlb};
    for (int i = 0; i < 5; i++) {
        char adir_out[4300];
        snprintf(adir_out, sizeof adir_out, "%s/adapter%d", qdir, i);
        free(a1.base_model);
        a1.base_model = strdup(i < 3 ? bases[i] : cases[i][0]);
        CHECK_OK(lora_save_peft_as(&a1, adir_out, NULL, DT_F32));
        lora_adapter b = {0};
        CHECK_OK(lora_load_peft(&b, &m.cfg, adir_out));
        CHECKF(b.base_model && !strcmp(b.base_model, cases[i][1]), "base %s: base_model_name_or_path '%s', want '%s'",
               a1.base_model, b.base_model ? b.base_model : "(null)", cases[i][1]);
        lora_free(&b);
    }
    model_free(&mq);
    // (c) refusals leave nothing behind
    snprintf(out, sizeof out, "%s/logits_f32_rslora_F32", dir);
    CHECK(export_merged(&m, &a1, model_dir, DT_F32, out) == QL_EINVAL && strstr(ql_errmsg(), "already exists"));
    snprintf(out, sizeof out, "%s/no/such/dir", dir);
    CHECK(export_merged(&m, &a1, model_dir, DT_F32, out) == QL_EIO && strstr(ql_errmsg(), "no/such/dir"));
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) = 6 && test -z \"$(find '%s' -name '*tmp*')\"", dir, dir);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    lora_free(&a1), lora_free(&a2);
    model_free(&m);
    st_close(&ex);
    return test_finish("test_export");
}
