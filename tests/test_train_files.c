// test_train_files.c: the files `qlora train` reads back, given hostile contents.
// Checkpoints (train/checkpoint.h): a round trip keeps every value; a crafted one
// (a step that is not an integer, negative or past the run, a loss history or a
// tensor of the wrong size, a missing or extra tensor, NaN, a negative second
// moment, bad validation pairs, other options) is refused with a message naming
// the field. Recipes (train/recipe.h): values checked against the options'
// types, errors naming the file and the key, "help" refused.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/safetensors.h"
#include "testutil.h"
#include "train/checkpoint.h"
#include "train/recipe.h"

#define STEPS 24  // the run's steps: a checkpoint may hold 0..24

static const model_config CFG = {.arch = ARCH_LLAMA, .dim = 8, .hidden_dim = 16, .n_layers = 2, .n_heads = 2,
                                 .n_kv_heads = 1, .head_dim = 4, .vocab_size = 32, .max_pos = 64, .norm_eps = 1e-5f,
                                 .rope_theta = 10000, .bos_id = 1, .eos_id = 2, .add_bos = 1};

// A state for a at step 4 with two validation losses; values from seed.
static void make_state(ckpt_state *s, const lora_adapter *a, int step) {
    memset(s, 0, sizeof *s);
    s->step = step;
    s->n_params = ckpt_n_params(a);
    s->w = malloc(sizeof(float) * (size_t)s->n_params);
    s->m = malloc(sizeof(float) * (size_t)s->n_params);
    s->v = malloc(sizeof(float) * (size_t)s->n_params);
    s->losses = malloc(sizeof(float) * (size_t)(step + 1));
    s->val_count = 2;
    s->val_step = malloc(sizeof(int) * 2);
    s->val_loss = malloc(sizeof(float) * 2);
    uint64_t seed = 5;
    for (int64_t i = 0; i < s->n_params; i++)
        s->w[i] = test_rand_normal(&seed), s->m[i] = test_rand_normal(&seed), s->v[i] = fabsf(test_rand_normal(&seed));
    for (int i = 0; i < step; i++) s->losses[i] = 3.0f - 0.1f * (float)i;
    s->val_step[0] = 0, s->val_loss[0] = 3.25f, s->val_step[1] = step, s->val_loss[1] = NAN;
}

// ---- crafted checkpoints: the tensors and metadata of a valid one, then one change ----

typedef struct {
    st_out t[64];
    char names[64][96];
    int n;
    const char *meta[16];
    float losses[64], val[8], nanbuf[1024];
} craft;

static void craft_init(craft *c, const lora_adapter *a, const ckpt_state *s) {
    memset(c, 0, sizeof *c);
    const float *flat[3] = {s->w, s->m, s->v};
    static const char *const kind[3] = {"w", "m", "v"};
    size_t off = 0;
    for (int i = 0; i < a->n_layers * LORA_NMODULES; i++) {
        if (!a->w[i].A) continue;
        for (int which = 0; which < 2; which++) {
            size_t cnt = which ? (size_t)a->w[i].out * a->rank : (size_t)a->rank * a->w[i].in;
            for (int j = 0; j < 3; j++) {
                snprintf(c->names[c->n], 96, "layers.%d.%s.%s.%s", i / LORA_NMODULES, LORA_MODULE_NAMES[i % LORA_NMODULES],
                         which ? "B" : "A", kind[j]);
                c->t[c->n] = (st_out){.name = c->names[c->n], .type = DT_F32, .ndim = 1, .shape = {(int64_t)cnt},
                                      .data = flat[j] + off};
                c->n++;
            }
            off += cnt;
        }
    }
    memcpy(c->losses, s->losses, sizeof(float) * (size_t)s->step);
    c->t[c->n++] = (st_out){.name = "losses", .type = DT_F32, .ndim = 1, .shape = {s->step}, .data = c->losses};
    c->val[0] = 0, c->val[1] = 3.25f, c->val[2] = (float)s->step, c->val[3] = 2.5f;
    c->t[c->n++] = (st_out){.name = "val_loss", .type = DT_F32, .ndim = 1, .shape = {4}, .data = c->val};
    const char *m[] = {"format", "qlora-checkpoint", "step", "4", "val_count", "2", "fingerprint", "fp", NULL};
    memcpy(c->meta, m, sizeof m);
}

static void craft_meta(craft *c, const char *key, const char *value) {
    for (int i = 0; c->meta[i]; i += 2)
        if (!strcmp(c->meta[i], key)) c->meta[i + 1] = value;
}

static int find(const craft *c, const char *name) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->t[i].name, name)) return i;
    return -1;
}

// Writes c to path and reads it back for a; expects failure with want in the message.
static void expect_bad(const char *what, const craft *c, const lora_adapter *a, int code, const char *want) {
    char path[] = "/tmp/qlora_ckpt_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK_OK(st_write(path, c->t, c->n, c->meta, NULL, 0, -1));
    ckpt_state s;
    int rc = ckpt_read(&s, path, a, STEPS, "fp");
    CHECKF(rc == code && strstr(ql_errmsg(), want), "%s: rc %d (want %d), message '%s' (want '%s')", what, rc, code,
           ql_errmsg(), want);
    CHECK(s.w == NULL && s.losses == NULL && s.step == 0);  // left empty
    ckpt_state_free(&s);
    printf("  %-34s -> %s\n", what, ql_errmsg());
    unlink(path);
}

static void test_checkpoints(void) {
    lora_adapter a;
    unsigned targets;
    CHECK_OK(lora_targets_parse(&targets, "q_proj,v_proj,down_proj"));
    CHECK_OK(lora_init(&a, &CFG, 2, 4.0f, 0, 0.0f, targets, 3));
    ckpt_state s, r;
    make_state(&s, &a, 4);
    char path[] = "/tmp/qlora_ckpt_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    // round trip: every value back, the NaN validation loss included
    CHECK_OK(ckpt_write(path, &a, &s, "fp"));
    CHECK_OK(ckpt_read(&r, path, &a, STEPS, "fp"));
    if (!test_failures) {
        CHECK(r.step == 4 && r.val_count == 2 && r.n_params == s.n_params);
        CHECK(!memcmp(r.w, s.w, sizeof(float) * (size_t)s.n_params) && !memcmp(r.m, s.m, sizeof(float) * (size_t)s.n_params) &&
              !memcmp(r.v, s.v, sizeof(float) * (size_t)s.n_params));
        CHECK(!memcmp(r.losses, s.losses, sizeof(float) * 4));
        CHECK(r.val_step[0] == 0 && r.val_loss[0] == 3.25f && r.val_step[1] == 4 && isnan(r.val_loss[1]));
    }
    ckpt_state_free(&r);
    // other options: QL_EINVAL, both fingerprints shown
    CHECK(ckpt_read(&r, path, &a, STEPS, "other") == QL_EINVAL && strstr(ql_errmsg(), "other options"));
    // fuzz-style: the image cut at every length is refused, never read past
    fmap m;
    CHECK_OK(fmap_open(&m, path));
    for (size_t len = 0; len < m.len; len += 97) {
        void *copy = malloc(len + 1);
        memcpy(copy, m.data, len);
        CHECK(ckpt_read_mem(&r, copy, len, "cut", &a, STEPS, "fp") != QL_OK);
        free(copy);
    }
    fmap_close(&m);
    unlink(path);

    craft c;
    const char *bad_steps[] = {"abc", "30junk", "-1", "25", "", " 4", "04", "99999999999", "4.0", NULL};
    for (int i = 0; bad_steps[i]; i++) {
        craft_init(&c, &a, &s);
        craft_meta(&c, "step", bad_steps[i]);
        char what[64];
        snprintf(what, sizeof what, "step \"%s\"", bad_steps[i]);
        expect_bad(what, &c, &a, QL_EFORMAT, "metadata 'step'");
    }
    craft_init(&c, &a, &s);
    craft_meta(&c, "val_count", "6");  // more than step + 1
    expect_bad("val_count 6 at step 4", &c, &a, QL_EFORMAT, "metadata 'val_count'");
    craft_init(&c, &a, &s);
    craft_meta(&c, "format", "pt");
    expect_bad("format pt", &c, &a, QL_EFORMAT, "not a qlora checkpoint");
    craft_init(&c, &a, &s);
    c.t[find(&c, "losses")].shape[0] = 3;
    expect_bad("losses of 3 at step 4", &c, &a, QL_EFORMAT, "tensor 'losses'");
    craft_init(&c, &a, &s);
    craft_meta(&c, "step", "20");  // losses still 4 long: would overflow a 4-step copy
    expect_bad("step 20 with 4 losses", &c, &a, QL_EFORMAT, "tensor 'losses'");
    craft_init(&c, &a, &s);
    c.t[0].shape[0] -= 1;
    expect_bad("a weight one short", &c, &a, QL_EFORMAT, "tensor 'layers.0.q_proj.A.w'");
    craft_init(&c, &a, &s);
    c.t[0].type = DT_F16;
    expect_bad("a weight in F16", &c, &a, QL_EFORMAT, "expected F32");
    craft_init(&c, &a, &s);
    c.t[3] = c.t[--c.n];  // one tensor gone (the count then differs)
    expect_bad("a tensor missing", &c, &a, QL_EFORMAT, "tensors for this adapter");
    craft_init(&c, &a, &s);
    c.t[c.n++] = (st_out){.name = "extra", .type = DT_F32, .ndim = 1, .shape = {1}, .data = c.val};
    expect_bad("an extra tensor", &c, &a, QL_EFORMAT, "tensors for this adapter");
    craft_init(&c, &a, &s);
    snprintf(c.names[0], 96, "layers.0.q_proj.A.x");
    expect_bad("a tensor renamed", &c, &a, QL_EFORMAT, "'layers.0.q_proj.A.w' is missing");
    craft_init(&c, &a, &s);
    for (int i = 0; i < 1024; i++) c.nanbuf[i] = i == 5 ? NAN : 0;
    c.t[0].data = c.nanbuf;
    expect_bad("NaN in a weight", &c, &a, QL_EFORMAT, "expected a finite value");
    craft_init(&c, &a, &s);
    for (int i = 0; i < 1024; i++) c.nanbuf[i] = i == 1 ? -1.0f : 0;
    c.t[2].data = c.nanbuf;  // layers.0.q_proj.A.v
    expect_bad("a negative second moment", &c, &a, QL_EFORMAT, ">= 0");
    craft_init(&c, &a, &s);
    c.losses[2] = INFINITY;
    expect_bad("an infinite loss", &c, &a, QL_EFORMAT, "tensor 'losses'[2]");
    craft_init(&c, &a, &s);
    c.val[2] = 0;  // the steps not increasing
    expect_bad("validation steps 0, 0", &c, &a, QL_EFORMAT, "tensor 'val_loss' pair 1");
    craft_init(&c, &a, &s);
    c.val[2] = 9;  // past the checkpoint's step
    expect_bad("validation step past the step", &c, &a, QL_EFORMAT, "tensor 'val_loss' pair 1");
    craft_init(&c, &a, &s);
    c.t[find(&c, "val_loss")].shape[0] = 2;
    expect_bad("val_loss shorter than val_count", &c, &a, QL_EFORMAT, "tensor 'val_loss'");
    // garbage
    ckpt_state g;
    CHECK(ckpt_read_mem(&g, "not a checkpoint at all", 23, "junk", &a, STEPS, "fp") == QL_EFORMAT);
    ckpt_state_free(&s);
    lora_free(&a);
}

// ---- recipes ----

static int bsz, flag;
static float lr;
static const char *targets;
static cli_opt OPTS[] = {
    {"--batch-size", OPT_INT, &bsz, "4", ""},
    {"--lr", OPT_FLOAT, &lr, "2e-4", ""},
    {"--targets", OPT_STR, &targets, "all", ""},
    {"--rslora", OPT_FLAG, &flag, NULL, ""},
};

static void expect_recipe(const char *text, const char *want_err, const char *want_args) {
    char **av;
    int ac;
    int rc = recipe_parse("recipes/x.json", text, strlen(text), OPTS, 4, &av, &ac);
    if (want_err) {
        CHECKF(rc != QL_OK && strstr(ql_errmsg(), want_err), "%s: rc %d, message '%s' (want '%s')", text, rc,
               ql_errmsg(), want_err);
        printf("  %-40s -> %s\n", text, ql_errmsg());
        return;
    }
    CHECKF(rc == QL_OK, "%s: %s", text, ql_errmsg());
    if (rc) return;
    char got[512] = "";
    for (int i = 0; i < ac; i++) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", i ? " " : "", av[i]);
    CHECKF(!strcmp(got, want_args), "%s: arguments '%s', want '%s'", text, got, want_args);
    recipe_args_free(av, ac);
}

static void test_recipes(void) {
    expect_recipe("{\"_about\": \"x\", \"comment\": 1, \"batch_size\": 8, \"lr\": 1e-3, \"targets\": \"q_proj\", "
                  "\"rslora\": true}", NULL, "--batch-size 8 --lr 1e-3 --targets q_proj --rslora");
    expect_recipe("{\"rslora\": false, \"batch-size\": -2}", NULL, "--batch-size -2");
    expect_recipe("{\"batch_size\": \"4\"}", "recipes/x.json: key 'batch_size': expected an integer, found a string \"4\"", NULL);
    expect_recipe("{\"batch-size\": 4.0}", "key 'batch-size': expected an integer, found a number 4.0", NULL);
    expect_recipe("{\"batch-size\": 99999999999}", "key 'batch-size': expected an integer", NULL);
    expect_recipe("{\"batch-size\": [1]}", "key 'batch-size': expected an integer, found an array", NULL);
    expect_recipe("{\"lr\": \"fast\"}", "key 'lr': expected a number", NULL);
    expect_recipe("{\"lr\": null}", "key 'lr': expected a number, found null", NULL);
    expect_recipe("{\"targets\": 3}", "key 'targets': expected a string", NULL);
    expect_recipe("{\"rslora\": 1}", "key 'rslora': expected true or false", NULL);
    expect_recipe("{\"help\": true}", "key 'help': not allowed in a recipe", NULL);
    expect_recipe("{\"recipe\": \"other.json\"}", "key 'recipe': not allowed in a recipe", NULL);
    expect_recipe("{\"nope\": 1}", "key 'nope': not an option", NULL);
    expect_recipe("[1, 2]", "recipes/x.json: a recipe is a JSON object", NULL);
}

int main(void) {
    test_checkpoints();
    test_recipes();
    return test_finish("test_train_files");
}
