// test_adapter.c: the adapter directory in PEFT layout (train/peft.h,
// docs/formats.md) on tests/fixtures/models/tiny_gqa:
//   (a) save -> load gives every value rounded once to F16, and the config fields back;
//   (b) base + loaded adapter gives the same logits bit for bit as base + the
//       in-memory adapter whose A and B were rounded to F16: the numbers are the
//       same and the code path is the same, so no tolerance is needed;
//   (c) those logits differ from the base's (the adapter is applied);
//   (d) bad directories give a clear error naming the problem, and no crash;
//   (e) qlora infer/eval --adapter DIR run, and eval's loss moves with the adapter.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/dtype.h"
#include "common/err.h"
#include "common/fileio.h"
#include "model/forward.h"
#include "common/json.h"
#include "model/model.h"
#include "common/safetensors.h"
#include "testutil.h"
#include "train/peft.h"

static char tmpdir[] = "/tmp/qlora_adapter_XXXXXX";

static float round_f16(float x) { return f16_to_f32(f32_to_f16(x)); }

static int file_exists(const char *p) { struct stat st; return stat(p, &st) == 0; }

// Runs the model on a fixed token sequence; logits (T,V).
static void run_logits(fwd_state *f, const lora_adapter *a, float *logits, const int *tok, int T) {
    CHECK_OK(fwd_set_adapter(f, a));
    CHECK_OK(fwd_forward(f, logits, tok, T, 0, 1));
}

// ---- (a), (b), (c) ----
static void test_roundtrip(model *m, ops *o, const char *dir) {
    const model_config *c = &m->cfg;
    lora_adapter a;
    CHECK_OK(lora_init(&a, c, 4, 8.0f, 0, 0.05f, LORA_ALL, 7));
    if (test_failures) return;
    a.base_model = strdup("tests/fixtures/models/tiny_gqa");
    uint64_t s = 42;
    for (int i = 0; i < a.n_layers * LORA_NMODULES; i++)  // B = 0 after init: make it matter
        for (int64_t e = 0; e < (int64_t)a.w[i].out * a.rank; e++) a.w[i].B[e] = 0.1f * test_rand_normal(&s);
    const char *rec = "{\"steps\": 0, \"note\": \"test\"}\n";
    CHECK_OK(lora_save_peft(&a, dir, rec));

    // the files, and no temp file left behind
    CHECK(file_exists(test_path(dir, PEFT_CONFIG_NAME)));
    CHECK(file_exists(test_path(dir, PEFT_WEIGHTS_NAME)));
    CHECK(file_exists(test_path(dir, PEFT_RECORD_NAME)));
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q tmp", dir);
    CHECK(system(cmd) != 0);
    char *txt = NULL;
    size_t len;
    CHECK_OK(file_read_all(test_path(dir, PEFT_RECORD_NAME), 1 << 20, &txt, &len));
    CHECK(txt && !strcmp(txt, rec));
    free(txt);
    CHECK_OK(file_read_all(test_path(dir, PEFT_CONFIG_NAME), 1 << 20, &txt, &len));
    static const char *const want[] = {"\"peft_type\": \"LORA\"", "\"task_type\": \"CAUSAL_LM\"", "\"r\": 4,",
                                       "\"lora_alpha\": 8,", "\"lora_dropout\": 0.05,", "\"bias\": \"none\"",
                                       "\"use_rslora\": false", "\"fan_in_fan_out\": false", "\"down_proj\"",
                                       "\"base_model_name_or_path\": \"tests/fixtures/models/tiny_gqa\""};
    for (size_t i = 0; txt && i < sizeof want / sizeof *want; i++)
        CHECKF(strstr(txt, want[i]), "adapter_config.json lacks %s:\n%s", want[i], txt);
    free(txt);

    // PEFT's tensor names, shapes and dtype
    st_file f;
    CHECK_OK(st_open(&f, test_path(dir, PEFT_WEIGHTS_NAME)));
    if (!test_failures) {
        CHECK(f.n == c->n_layers * LORA_NMODULES * 2);
        const st_tensor *t = st_find(&f, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
        CHECK(t && t->type == DT_F16 && t->ndim == 2 && t->shape[0] == 4 && t->shape[1] == c->dim);
        t = st_find(&f, "base_model.model.model.layers.2.self_attn.k_proj.lora_B.weight");
        CHECK(t && t->type == DT_F16 && t->shape[0] == c->n_kv_heads * c->head_dim && t->shape[1] == 4);
        t = st_find(&f, "base_model.model.model.layers.2.mlp.down_proj.lora_A.weight");
        CHECK(t && t->shape[0] == 4 && t->shape[1] == c->hidden_dim);
        st_close(&f);
    }

    // (a) load: every value is the F16 rounding of the original, config fields come back
    lora_adapter b;
    CHECK_OK(lora_load_peft(&b, c, dir));
    if (test_failures) { lora_free(&a); return; }
    CHECK(b.rank == 4 && b.alpha == 8.0f && b.use_rslora == 0 && b.dropout == 0.05f && b.targets == LORA_ALL);
    CHECK(b.scaling == a.scaling && b.n_layers == c->n_layers);
    CHECK(b.base_model && !strcmp(b.base_model, a.base_model));
    long long bad = 0, n = 0;
    for (int i = 0; i < a.n_layers * LORA_NMODULES; i++) {
        lora_pair *p = &a.w[i], *q = &b.w[i];
        CHECK(q->A && q->B && q->in == p->in && q->out == p->out);
        if (!q->A || !q->B) continue;
        for (int64_t e = 0; e < (int64_t)a.rank * p->in; e++, n++) bad += f32_bits(q->A[e]) != f32_bits(round_f16(p->A[e]));
        for (int64_t e = 0; e < (int64_t)p->out * a.rank; e++, n++) bad += f32_bits(q->B[e]) != f32_bits(round_f16(p->B[e]));
    }
    CHECKF(bad == 0, "%lld of %lld values differ from their F16 rounding", bad, n);
    fprintf(stderr, "roundtrip: %lld values equal to the F16-rounded originals\n", n - bad);

    // (b), (c): logits
    int V = c->vocab_size, T = 12;
    int tok[12];
    for (int t = 0; t < T; t++) tok[t] = 1 + (t * 37) % (V - 1);
    fwd_state fw;
    CHECK_OK(fwd_init(&fw, m, o, T, T));
    if (test_failures) { lora_free(&a); lora_free(&b); return; }
    float *l_base = malloc(sizeof(float) * (size_t)T * V), *l_loaded = malloc(sizeof(float) * (size_t)T * V),
          *l_mem = malloc(sizeof(float) * (size_t)T * V);
    for (int i = 0; i < a.n_layers * LORA_NMODULES; i++) {  // the in-memory adapter, rounded to F16
        for (int64_t e = 0; e < (int64_t)a.rank * a.w[i].in; e++) a.w[i].A[e] = round_f16(a.w[i].A[e]);
        for (int64_t e = 0; e < (int64_t)a.w[i].out * a.rank; e++) a.w[i].B[e] = round_f16(a.w[i].B[e]);
    }
    run_logits(&fw, NULL, l_base, tok, T);
    run_logits(&fw, &b, l_loaded, tok, T);
    run_logits(&fw, &a, l_mem, tok, T);
    CHECKF(!memcmp(l_loaded, l_mem, sizeof(float) * (size_t)T * V),
           "logits with the loaded adapter differ from the in-memory F16-rounded adapter's");
    double maxd = 0;
    for (int64_t i = 0; i < (int64_t)T * V; i++) {
        double d = l_loaded[i] - l_base[i];
        if (d < 0) d = -d;
        if (d > maxd) maxd = d;
    }
    fprintf(stderr, "logits: loaded == in-memory F16 adapter bit for bit; max |adapter - base| = %.4f\n", maxd);
    CHECKF(maxd > 1e-2, "the adapter barely changes the logits (max %g): is it applied?", maxd);

    // (d) resident (as infer, chat and serve load it): the F16 bits of the file,
    // read in place; the logits as fp32's up to summation order (the GEMV kernels
    // against OpenBLAS); and an atomic rewrite of the directory (a new adapter
    // saved over it) leaves the loaded one as it was: it still reads the old file.
    lora_adapter r;
    CHECK_OK(lora_load_peft_resident(&r, c, dir));
    if (!test_failures) {
        bad = 0;
        for (int i = 0; i < a.n_layers * LORA_NMODULES; i++) {
            const lora_pair *p = &a.w[i], *q = &r.w[i];
            CHECK(!q->A && q->rA && q->rB && q->tA == DT_F16 && q->tB == DT_F16);
            if (!q->rA || !q->rB) continue;
            const uint16_t *hA = q->rA, *hB = q->rB;
            for (int64_t e = 0; e < (int64_t)a.rank * p->in; e++) bad += hA[e] != f32_to_f16(p->A[e]);
            for (int64_t e = 0; e < (int64_t)p->out * a.rank; e++) bad += hB[e] != f32_to_f16(p->B[e]);
        }
        CHECKF(bad == 0, "resident: %lld values differ from the file's F16", bad);
        float *l_res = malloc(sizeof(float) * (size_t)T * V), *l_after = malloc(sizeof(float) * (size_t)T * V);
        run_logits(&fw, &r, l_res, tok, T);
        check_close("resident F16 logits vs fp32-loaded", l_res, l_loaded, (int64_t)T * V, 1e-5, 1e-5);
        lora_adapter other;
        CHECK_OK(lora_init(&other, c, 4, 8.0f, 0, 0.0f, LORA_ALL, 99));
        for (int i = 0; i < other.n_layers * LORA_NMODULES; i++)
            for (int64_t e = 0; e < (int64_t)other.w[i].out * other.rank; e++) other.w[i].B[e] = 0.3f;
        CHECK_OK(lora_save_peft(&other, dir, NULL));
        run_logits(&fw, &r, l_after, tok, T);
        CHECKF(!memcmp(l_res, l_after, sizeof(float) * (size_t)T * V),
               "a resident adapter changed when its directory was replaced");
        lora_free(&other);
        free(l_res), free(l_after);
    }
    lora_free(&r);
    CHECK_OK(fwd_set_adapter(&fw, NULL));
    fwd_free(&fw);
    free(l_base), free(l_loaded), free(l_mem);
    lora_free(&a);
    lora_free(&b);
}

// Subset of modules, rsLoRA, non-integral alpha; saving into a new nested directory.
static void test_subset(const model_config *c, const char *dir) {
    lora_adapter a, b;
    unsigned t;
    CHECK_OK(lora_targets_parse(&t, "q_proj,v_proj,down_proj"));
    CHECK_OK(lora_init(&a, c, 2, 3.5f, 1, 0.0f, t, 3));
    CHECK_OK(lora_save_peft(&a, dir, NULL));
    CHECK(!file_exists(test_path(dir, PEFT_RECORD_NAME)));
    CHECK_OK(lora_load_peft(&b, c, dir));
    if (!test_failures) {
        CHECK(b.rank == 2 && b.alpha == 3.5f && b.use_rslora == 1 && b.targets == t && b.dropout == 0);
        CHECK(b.scaling == lora_scaling(2, 3.5f, 1));
        CHECK(b.base_model == NULL);
        CHECK(b.w[LORA_NMODULES + 1].A == NULL && b.w[LORA_NMODULES + 2].A != NULL);
    }
    lora_free(&a);
    lora_free(&b);
}

// ---- (d): bad directories ----

typedef struct {
    const char *name;
    dtype type;
    int64_t rows, cols;
} tdesc;

static const char *CFG_FMT =
    "{\"peft_type\": \"%s\", \"task_type\": \"CAUSAL_LM\", \"r\": %d, \"lora_alpha\": 8, \"lora_dropout\": 0.0,"
    " \"target_modules\": %s, \"bias\": \"none\", \"use_rslora\": false, \"fan_in_fan_out\": %s}";

static void write_dir(const char *dir, const char *cfg, const tdesc *td, int n) {
    mkdir(dir, 0777);
    if (cfg) CHECK_OK(file_write_atomic(test_path(dir, PEFT_CONFIG_NAME), cfg, strlen(cfg)));
    st_out t[16];
    static float zeros[4096];
    for (int i = 0; i < n; i++)
        t[i] = (st_out){.name = td[i].name, .type = td[i].type, .ndim = 2, .shape = {td[i].rows, td[i].cols}, .data = zeros};
    CHECK_OK(st_write(test_path(dir, PEFT_WEIGHTS_NAME), t, n, NULL, NULL, 0, -1));
}

static void expect_load(const model_config *c, const char *what, const char *cfg, const tdesc *td, int n,
                        const char *pattern) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, what);
    write_dir(dir, cfg, td, n);
    lora_adapter a;
    int rc = lora_load_peft(&a, c, dir);
    if (!pattern) {
        CHECKF(rc == QL_OK, "%s: expected success, got: %s", what, ql_errmsg());
        if (!rc) CHECK(a.w[0].A != NULL && a.w[0].B != NULL);
    } else {
        CHECKF(rc != QL_OK, "%s: loaded, expected an error with '%s'", what, pattern);
        CHECKF(rc == QL_OK || strstr(ql_errmsg(), pattern), "%s: error '%s' lacks '%s'", what, ql_errmsg(), pattern);
        CHECK(a.w == NULL);
        if (rc) fprintf(stderr, "  %-16s -> %s\n", what, ql_errmsg());
    }
    lora_free(&a);
}

#define QA "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
#define QB "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"

static void test_bad(const model_config *c) {
    char ok[1024], cfg[1024];
    int C = c->dim, HD = c->n_heads * c->head_dim;
    snprintf(ok, sizeof ok, CFG_FMT, "LORA", 4, "[\"q_proj\"]", "false");
    const tdesc good[] = {{QA, DT_F16, 4, C}, {QB, DT_F16, HD, 4}};
    expect_load(c, "good", ok, good, 2, NULL);
    const tdesc mixed[] = {{QA, DT_BF16, 4, C}, {QB, DT_F32, HD, 4}};
    expect_load(c, "bf16_f32", ok, mixed, 2, NULL);
    const tdesc dflt[] = {{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", DT_F16, 4, C},
                          {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight", DT_F16, HD, 4}};
    expect_load(c, "adapter_name", ok, dflt, 2, NULL);
    snprintf(cfg, sizeof cfg, CFG_FMT, "LORA", 4, "\"q_proj\"", "false");
    expect_load(c, "target_string", cfg, good, 2, NULL);

    expect_load(c, "no_config", NULL, good, 2, "missing adapter_config.json");
    snprintf(cfg, sizeof cfg, CFG_FMT, "PROMPT_TUNING", 4, "[\"q_proj\"]", "false");
    expect_load(c, "prompt_tuning", cfg, good, 2, "field 'peft_type': expected \"LORA\", found \"PROMPT_TUNING\"");
    snprintf(cfg, sizeof cfg, CFG_FMT, "LORA", 8, "[\"q_proj\"]", "false");
    expect_load(c, "r_mismatch", cfg, good, 2, "shape [4, 96], expected [8, 96]");
    const tdesc l99[] = {{QA, DT_F16, 4, C}, {QB, DT_F16, HD, 4},
                         {"base_model.model.model.layers.99.self_attn.q_proj.lora_A.weight", DT_F16, 4, C}};
    expect_load(c, "layer99", ok, l99, 3, "layer 99, but the model has 3 layers");
    const tdesc shape[] = {{QA, DT_F16, 4, C - 1}, {QB, DT_F16, HD, 4}};
    expect_load(c, "wrong_shape", ok, shape, 2, "shape [4, 95], expected [4, 96]");
    const tdesc unk[] = {{QA, DT_F16, 4, C}, {QB, DT_F16, HD, 4}, {"base_model.model.lm_head.lora_A.weight", DT_F16, 4, C}};
    expect_load(c, "unknown_tensor", ok, unk, 3, "'base_model.model.lm_head.lora_A.weight': unknown name");
    snprintf(cfg, sizeof cfg, CFG_FMT, "LORA", 4, "[\"q_proj\"]", "true");
    expect_load(c, "fan_in_fan_out", cfg, good, 2, "field 'fan_in_fan_out': expected false");
    // more: a lone A, a module missing from target_modules, an unknown target, bad JSON, a wrong dtype
    expect_load(c, "lone_a", ok, good, 1, "layer 0 q_proj has lora_A but no lora_B");
    snprintf(cfg, sizeof cfg, CFG_FMT, "LORA", 4, "[\"v_proj\"]", "false");
    expect_load(c, "not_targeted", cfg, good, 2, "module q_proj is not in adapter_config.json's target_modules");
    snprintf(cfg, sizeof cfg, CFG_FMT, "LORA", 4, "[\"q_proj\", \"lm_head\"]", "false");
    expect_load(c, "target_lm_head", cfg, good, 2, "found \"lm_head\"");
    expect_load(c, "bad_json", "{\"peft_type\": \"LORA\", \"r\": ", good, 2, "adapter_config.json");
    const tdesc i32[] = {{QA, DT_I32, 4, C}, {QB, DT_F16, HD, 4}};
    expect_load(c, "int_tensor", ok, i32, 2, "dtype I32, expected F16, BF16 or F32");
    snprintf(cfg, sizeof cfg, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"], "
                              "\"use_dora\": true}");
    expect_load(c, "dora", cfg, good, 2, "use_dora");
    snprintf(cfg, sizeof cfg, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"], "
                              "\"init_lora_weights\": \"pissa_niter_4\"}");
    expect_load(c, "pissa", cfg, good, 2, "path_initial_model_for_weight_conversion");
    snprintf(cfg, sizeof cfg, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"], "
                              "\"init_lora_weights\": \"gaussian\"}");
    expect_load(c, "gaussian", cfg, good, 2, NULL);  // an initialisation that leaves the base alone loads
    lora_adapter a;
    char missing[4200];
    snprintf(missing, sizeof missing, "%s/none", tmpdir);
    CHECK(lora_load_peft(&a, c, missing) != QL_OK && strstr(ql_errmsg(), "no such adapter directory"));
}

// ---- (e): the command line ----

// Runs cmd; returns its exit status; the last "loss=" line's value in *loss when asked.
static int run_cmd(const char *cmd, double *loss) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[512];
    while (fgets(line, sizeof line, p))
        if (loss && !strncmp(line, "loss=", 5)) *loss = atof(line + 5);
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(const char *model_dir, const char *adapter) {
#ifdef QL_BINARY
    const char *q = QL_BINARY;
    if (!file_exists(q)) { fprintf(stderr, "cli: %s not built, skipped\n", q); return; }
    char data[4200], cmd[16384];
    snprintf(data, sizeof data, "%s/e.txt", tmpdir);
    const char *text = "the keeper lit the lamp\nwaves broke on the rocks\n";
    CHECK_OK(file_write_atomic(data, text, strlen(text)));
    double l0 = -1, l1 = -1;
    snprintf(cmd, sizeof cmd, "'%s' eval --base '%s' --data '%s' 2>/dev/null", q, model_dir, data);
    CHECK(run_cmd(cmd, &l0) == 0);
    snprintf(cmd, sizeof cmd, "'%s' eval --base '%s' --data '%s' --adapter '%s' 2>/dev/null", q, model_dir, data, adapter);
    CHECK(run_cmd(cmd, &l1) == 0);
    fprintf(stderr, "cli: eval loss %.6f without the adapter, %.6f with it\n", l0, l1);
    CHECKF(l0 > 0 && l1 > 0 && l0 != l1, "eval loss does not move with the adapter: %g vs %g", l0, l1);
    snprintf(cmd, sizeof cmd,
             "'%s' infer --base '%s' --prompt 'The lighthouse' --temperature 0 --max-tokens 8 --adapter '%s' >/dev/null 2>&1",
             q, model_dir, adapter);
    CHECK(run_cmd(cmd, NULL) == 0);
    // a bad adapter directory: exit 1, the message names it
    snprintf(cmd, sizeof cmd, "'%s' eval --base '%s' --data '%s' --adapter '%s/none' 2>&1", q, model_dir, data, tmpdir);
    FILE *p = popen(cmd, "r");
    char out[2048] = "";
    size_t k = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[k] = 0;
    int st = p ? pclose(p) : -1;
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 1 && strstr(out, "no such adapter directory"), "bad --adapter: %s", out);
    snprintf(cmd, sizeof cmd, "'%s' infer --help 2>&1 | grep -q -- '--adapter'", q);
    CHECK(system(cmd) == 0);
#else
    (void)model_dir, (void)adapter;
#endif
}

int main(void) {
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    char model_dir[4096], adir[4200], sdir[4200];
    snprintf(model_dir, sizeof model_dir, "%s/tests/fixtures/models/tiny_gqa", test_source_dir());
    snprintf(adir, sizeof adir, "%s/adapters/r4", tmpdir);  // a nested directory that does not exist yet
    snprintf(sdir, sizeof sdir, "%s/adapters/subset/", tmpdir);
    model m;
    CHECK_OK(model_load(&m, model_dir, DT_NF4));
    if (test_failures) return test_finish("test_adapter");
    ops *o = ops_new("cpu", 0);
    CHECK(o != NULL);
    if (o) {
        test_roundtrip(&m, o, adir);
        test_subset(&m.cfg, sdir);
        test_bad(&m.cfg);
        test_cli(model_dir, adir);
        ops_delete(o);
    }
    model_free(&m);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish("test_adapter");
}
