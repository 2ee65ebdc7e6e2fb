// test_store_boundary.c: the LoRA store is a boundary (issue 18), at the library
// level (infer/store.h, train/peft.h), on a small hand-made model config:
//   (a) store_check_name refuses every name that is not one folder of the store
//       (.., ., paths, absolute paths, empty, NUL, hidden, ',' ':', control bytes,
//       too long), each with a message saying what a name may be;
//   (b) store_resolve keeps names inside the store: a link in the store to
//       outside it (the folder, or one of its files) is refused with how to allow
//       it, and followed with follow_symlinks; a link to another folder of the
//       store, and a linked store itself, are fine;
//   (c) --adapters items go through the same check (".." no longer loads the
//       store's parent);
//   (d) adapter files are checked before use (r, lora_alpha, target_modules,
//       shapes and layers against the base, dtype, finite values, regular files:
//       a FIFO must not hang the loader), and a bad adapter is refused alone: a
//       store of one good and many bad adapters loads the good one, and each bad
//       one's reason names its folder and the field or tensor.
// Every message a bad input gets is printed (docs/reliability.md lists them).
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/safetensors.h"
#include "infer/store.h"
#include "testutil.h"
#include "train/peft.h"

static char tmp[] = "/tmp/qlora_store_boundary_XXXXXX";
static model_config cfg;  // C 16, F 32, H 2, Hkv 1, D 8, 2 layers

static const char *P(const char *rel) { return test_path(tmp, rel); }

// Fails the test when msg does not contain want.
#define CHECK_MSG(msg, want) CHECKF(strstr((msg), (want)) != NULL, "expected \"%s\" in: %s", (want), (msg))

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECKF(f != NULL, "%s: %s", path, strerror(errno));
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

// A random adapter for c (rank r, every module), with hook applied, saved as type in dir.
static void save_adapter(const char *dir, const model_config *c, int r, dtype type, void (*hook)(lora_adapter *)) {
    lora_adapter a;
    test_lora_random(&a, c, r, 8.0f, 0, LORA_ALL, 11);
    if (hook) hook(&a);
    CHECK_OK(lora_save_peft_as(&a, dir, NULL, type));
    lora_free(&a);
}

// adapter_config.json with these fields (the rest as qlora writes it).
static void write_config(const char *dir, const char *r, const char *alpha, const char *targets) {
    char text[1024];
    snprintf(text, sizeof text,
             "{\"peft_type\": \"LORA\", \"r\": %s, \"lora_alpha\": %s, \"target_modules\": %s, \"bias\": \"none\"}\n",
             r, alpha, targets);
    write_text(test_path(dir, PEFT_CONFIG_NAME), text);
}

static void copy_file(const char *from, const char *to) {
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    CHECKF(system(cmd) == 0, "%s", cmd);
}

// ---- (a) ----
static void test_names(void) {
    static const struct { const char *name; size_t len; const char *why; } bad[] = {
        {"..", 2, "not a folder name"},
        {".", 1, "not a folder name"},
        {"", 0, "an empty name"},
        {"a/b", 3, "a path, not a name"},
        {"../store/pirate", 15, "a path, not a name"},
        {"/etc", 4, "an absolute path"},
        {"a\\b", 3, "a path, not a name"},
        {"a\0b", 3, "a NUL byte in it"},  // what "a\u0000b" in JSON reads as
        {".hidden", 7, "names starting with '.' are hidden"},
        {"a,b", 3, "',' and ':' separate"},
        {"a:0.5", 5, "',' and ':' separate"},
        {"a\tb", 3, "a control byte 0x09"},
        {"a\nb", 3, "a control byte 0x0a"},
        {"a\x7f", 2, "a control byte 0x7f"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = store_check_name(bad[i].name, bad[i].len);
        CHECKF(rc == QL_EINVAL, "name #%zu: expected QL_EINVAL, found %d", i, rc);
        CHECK_MSG(ql_errmsg(), bad[i].why);
        CHECK_MSG(ql_errmsg(), "is not an adapter name");
        CHECK_MSG(ql_errmsg(), STORE_NAME_RULE);
        printf("bad name #%zu: %s\n", i, ql_errmsg());
    }
    char long_name[STORE_NAME_MAX + 1];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[STORE_NAME_MAX] = '\0';
    CHECK(store_check_name(long_name, STORE_NAME_MAX) == QL_EINVAL);
    CHECK_MSG(ql_errmsg(), "128 bytes");
    CHECK_OK(store_check_name(long_name, STORE_NAME_MAX - 1));
    static const char *const good[] = {"pirate", "my-adapter_v2.1", "a b", "x..y", "UPPER", "ünïcode"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) CHECK_OK(store_check_name(good[i], strlen(good[i])));
}

// ---- (b) ----
static void expect_link_out(const char *dir, const char *name, const char *link, const char *target) {
    char *real = NULL;
    int rc = store_resolve(&real, dir, name, 0);
    CHECKF(rc == QL_EINVAL && !real, "%s: expected QL_EINVAL, found %d", name, rc);
    char want[8400];
    snprintf(want, sizeof want, "%s is a symbolic link to %s outside the store; pass --follow-symlinks to use it", link,
             target);
    CHECK_MSG(ql_errmsg(), want);
    printf("link out (%s): %s\n", name, ql_errmsg());
    free(real);
    CHECK_OK(store_resolve(&real, dir, name, 1));  // followed on request
    free(real);
}

static void test_resolve(const char *store, const char *outside_real) {
    char *real = NULL;
    CHECK_OK(store_resolve(&real, store, "good", 0));
    CHECKF(real && strstr(real, "/store/good"), "resolved to %s", real ? real : "(null)");
    free(real);
    // a link to a folder outside: refused, with how to allow it
    char link[4400], want_target[4400];
    snprintf(link, sizeof link, "%s/out", store);
    snprintf(want_target, sizeof want_target, "%s/good", outside_real);
    expect_link_out(store, "out", link, want_target);
    // a link to the store itself and to its parent: outside too (not a folder inside it)
    CHECK(store_resolve(&real, store, "self", 0) == QL_EINVAL);
    CHECK_MSG(ql_errmsg(), "outside the store; pass --follow-symlinks");
    CHECK(store_resolve(&real, store, "up", 0) == QL_EINVAL);
    CHECK_MSG(ql_errmsg(), "outside the store; pass --follow-symlinks");
    printf("link to the store's parent: %s\n", ql_errmsg());
    // a link to another folder of the store: fine
    CHECK_OK(store_resolve(&real, store, "alias", 0));
    CHECKF(real && strstr(real, "/store/good"), "alias resolved to %s", real ? real : "(null)");
    free(real);
    // the store itself through a link: fine, and the same rules inside it
    CHECK_OK(store_resolve(&real, P("storelink"), "good", 0));
    free(real);
    CHECK_OK(store_resolve(&real, P("storelink"), "alias", 0));
    free(real);
    CHECK(store_resolve(&real, P("storelink"), "out", 0) == QL_EINVAL);
    // a file of the adapter linked out of the store
    char f[4400], t[4400];
    snprintf(f, sizeof f, "%s/filelink/%s", store, PEFT_CONFIG_NAME);
    snprintf(t, sizeof t, "%s/good/%s", outside_real, PEFT_CONFIG_NAME);
    expect_link_out(store, "filelink", f, t);
    snprintf(f, sizeof f, "%s/weightlink/%s", store, PEFT_WEIGHTS_NAME);
    snprintf(t, sizeof t, "%s/good/%s", outside_real, PEFT_WEIGHTS_NAME);
    expect_link_out(store, "weightlink", f, t);
    // a file linked to another adapter of the store: fine
    CHECK_OK(store_resolve(&real, store, "filein", 0));
    free(real);
    // no such folder, a dangling link, a file, a bad name
    CHECK(store_resolve(&real, store, "nope", 0) == QL_ENOENT);
    CHECK_MSG(ql_errmsg(), "/nope: no such adapter directory");
    printf("missing: %s\n", ql_errmsg());
    CHECK(store_resolve(&real, store, "dangling", 0) == QL_ENOENT);
    CHECK_MSG(ql_errmsg(), "a symbolic link to nothing");
    printf("dangling: %s\n", ql_errmsg());
    CHECK(store_resolve(&real, store, "afile", 0) == QL_EINVAL);
    CHECK_MSG(ql_errmsg(), "is not a folder");
    printf("a file: %s\n", ql_errmsg());
    CHECK(store_resolve(&real, store, "..", 1) == QL_EINVAL);  // not even with follow_symlinks
    CHECK(store_resolve(&real, store, "/etc", 1) == QL_EINVAL);
    CHECK(!real);
}

// ---- (c) ----
static void test_adapters_option(const char *store) {
    adapter_store st;
    static const char *const lists[] = {"..", ".", "good,..", "../store/good", "/etc", "good,,alias", ",good",
                                        "good,", ":0.5", ".hidden", "a/b:0.5"};
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++) {
        int rc = store_open(&st, &cfg, store, lists[i], 0);
        CHECKF(rc == QL_EINVAL && st.n == 0, "--adapters '%s': expected QL_EINVAL and nothing loaded, found %d", lists[i],
               rc);
        CHECK_MSG(ql_errmsg(), "--adapters: ");
        CHECK_MSG(ql_errmsg(), "is not an adapter name");
        printf("--adapters '%s': %s\n", lists[i], ql_errmsg());
    }
    // a link out named in --adapters: an entry that did not load, with the reason
    CHECK_OK(store_open(&st, &cfg, store, "good,out:0.5", 0));
    CHECK(st.n == 2 && st.e[0].ok && !st.e[1].ok);
    if (st.n == 2) CHECK_MSG(st.e[1].err, "outside the store; pass --follow-symlinks to use it");
    store_free(&st);
    CHECK_OK(store_open(&st, &cfg, store, "good,out:0.5", 1));
    CHECK(st.n == 2 && st.e[0].ok && st.e[1].ok);
    store_free(&st);
    // without a store, items are paths the user gave; their last component names them
    CHECK_OK(store_open(&st, &cfg, "", test_path(store, "good"), 0));
    CHECK(st.n == 1 && st.e[0].ok && !strcmp(st.e[0].name, "good"));
    store_free(&st);
    CHECK(store_open(&st, &cfg, "", "..", 0) == QL_EINVAL);
    CHECK_MSG(ql_errmsg(), "its last component names the adapter");
    printf("--adapters '..' without --adapter-dir: %s\n", ql_errmsg());
}

// ---- (d) ----
static void nan_in_b(lora_adapter *a) { a->w[1 * LORA_NMODULES + 2].B[3] = NAN; }  // layer 1 v_proj, B (out, r=4): [0, 3]
static void inf_in_a(lora_adapter *a) { a->w[0].A[5] = 1e30f; }                    // F16: +Inf
static void ninf_in_a(lora_adapter *a) { a->w[6].A[0] = -INFINITY; }               // layer 0 down_proj

typedef struct {
    const char *name;  // folder in the store
    const char *want;  // in its error
} bad_case;

static void make_bad_adapters(const char *store) {
    char d[4400];
#define DIR_OF(n) (snprintf(d, sizeof d, "%s/%s", store, n), d)
    save_adapter(DIR_OF("r0"), &cfg, 4, DT_F16, NULL), write_config(d, "0", "8", "[\"q_proj\"]");
    save_adapter(DIR_OF("r_huge"), &cfg, 4, DT_F16, NULL), write_config(d, "5000", "8", "[\"q_proj\"]");
    save_adapter(DIR_OF("r_text"), &cfg, 4, DT_F16, NULL), write_config(d, "\"4\"", "8", "[\"q_proj\"]");
    const char *all = "[\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"gate_proj\", \"up_proj\", \"down_proj\"]";
    save_adapter(DIR_OF("r_mismatch"), &cfg, 4, DT_F16, NULL), write_config(d, "8", "16", all);
    save_adapter(DIR_OF("alpha0"), &cfg, 4, DT_F16, NULL), write_config(d, "4", "0", all);
    save_adapter(DIR_OF("alpha_neg"), &cfg, 4, DT_F16, NULL), write_config(d, "4", "-8", all);
    save_adapter(DIR_OF("alpha_huge"), &cfg, 4, DT_F16, NULL), write_config(d, "4", "1e7", all);
    save_adapter(DIR_OF("alpha_overflow"), &cfg, 4, DT_F16, NULL), write_config(d, "4", "1e999", all);
    save_adapter(DIR_OF("target_unknown"), &cfg, 4, DT_F16, NULL), write_config(d, "4", "8", "[\"q_proj\", \"lm_head\"]");
    save_adapter(DIR_OF("target_unlisted"), &cfg, 4, DT_F16, NULL), write_config(d, "4", "8", "[\"q_proj\"]");
    model_config wide = cfg;  // another base: dim 32
    wide.dim = 32;
    save_adapter(DIR_OF("shape_dim"), &wide, 4, DT_F16, NULL);
    model_config deep = cfg;  // three layers, the base has two
    deep.n_layers = 3;
    save_adapter(DIR_OF("layers_more"), &deep, 4, DT_F16, NULL);
    save_adapter(DIR_OF("nan"), &cfg, 4, DT_F32, nan_in_b);
    save_adapter(DIR_OF("inf_f16"), &cfg, 4, DT_F16, inf_in_a);
    save_adapter(DIR_OF("ninf_bf16"), &cfg, 4, DT_BF16, ninf_in_a);
    // an integer tensor where a LoRA weight should be
    save_adapter(DIR_OF("dtype_i32"), &cfg, 4, DT_F16, NULL), write_config(d, "4", "8", "[\"q_proj\"]");
    int32_t ints[4 * 16] = {0};
    st_out t = {.name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", .type = DT_I32, .ndim = 2,
                .shape = {4, 16}, .data = ints};
    CHECK_OK(st_write(test_path(d, PEFT_WEIGHTS_NAME), &t, 1, NULL, NULL, 0, -1));
    // FIFOs where the two files should be: refused at once, not a hang
    save_adapter(DIR_OF("fifo_config"), &cfg, 4, DT_F16, NULL);
    unlink(test_path(d, PEFT_CONFIG_NAME));
    CHECK(mkfifo(test_path(d, PEFT_CONFIG_NAME), 0600) == 0);
    save_adapter(DIR_OF("fifo_weights"), &cfg, 4, DT_F16, NULL);
    unlink(test_path(d, PEFT_WEIGHTS_NAME));
    CHECK(mkfifo(test_path(d, PEFT_WEIGHTS_NAME), 0600) == 0);
    // a folder without the files, and a config that is a directory
    CHECK(mkdir(DIR_OF("empty"), 0755) == 0);
    save_adapter(DIR_OF("config_dir"), &cfg, 4, DT_F16, NULL);
    unlink(test_path(d, PEFT_CONFIG_NAME));
    CHECK(mkdir(test_path(d, PEFT_CONFIG_NAME), 0755) == 0);
    // hidden: an adapter being written (train writes aside under a '.' name); never listed
    CHECK(mkdir(DIR_OF(".good.tmp-123"), 0755) == 0);
    write_text(test_path(d, PEFT_CONFIG_NAME), "{\"peft_type\": \"LORA\"");
#undef DIR_OF
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "test_store_boundary: FAIL: loading the store hung for 60 s (a FIFO read?)\n";
    if (write(2, msg, sizeof msg - 1)) {}
    _exit(1);
}

static void test_bad_adapters(const char *store) {
    static const bad_case cases[] = {
        {"r0", "field 'r': expected 1..4096, found 0"},
        {"r_huge", "field 'r': expected 1..4096, found 5000"},
        {"r_text", "field 'r': expected a number"},
        {"r_mismatch", "shape [4, 16], expected [8, 16]"},
        {"alpha0", "field 'lora_alpha': expected a number in (0, 1e+06], found 0"},
        {"alpha_neg", "field 'lora_alpha': expected a number in (0, 1e+06], found -8"},
        {"alpha_huge", "field 'lora_alpha': expected a number in (0, 1e+06], found 1e+07"},
        {"alpha_overflow", "lora_alpha"},
        {"target_unknown", "field 'target_modules': expected names among q_proj"},
        {"target_unlisted", "module k_proj is not in adapter_config.json's target_modules"},
        {"shape_dim", "shape [4, 32], expected [4, 16]"},
        {"layers_more", "layer 2, but the model has 2 layers (0..1)"},
        {"nan", "tensor 'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight': value NaN at [0, 3]"},
        {"inf_f16", "tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': value +Inf at [0, 5]"},
        {"ninf_bf16", "tensor 'base_model.model.model.layers.0.mlp.down_proj.lora_A.weight': value -Inf at [0, 0]"},
        {"dtype_i32", "dtype I32, expected F16, BF16 or F32"},
        {"fifo_config", "adapter_config.json: not a regular file (a FIFO)"},
        {"fifo_weights", "adapter_model.safetensors: not a regular file (a FIFO)"},
        {"empty", "missing adapter_config.json"},
        {"config_dir", "adapter_config.json: not a regular file (a directory)"},
        {"out", "outside the store; pass --follow-symlinks to use it"},
        {"filelink", "outside the store; pass --follow-symlinks to use it"},
        {"weightlink", "adapter_model.safetensors is a symbolic link to"},
        {"up", "outside the store; pass --follow-symlinks to use it"},
        {"self", "outside the store; pass --follow-symlinks to use it"},
    };
    int nc = (int)(sizeof cases / sizeof *cases);
    signal(SIGALRM, on_alarm);
    alarm(60);  // a watchdog, not a timing: a FIFO opened for reading blocks forever
    adapter_store st;
    CHECK_OK(store_open(&st, &cfg, store, "", 0));  // every folder: the bad ones are refused alone
    alarm(0);
    int found = 0;
    for (int i = 0; i < st.n; i++) {
        const store_entry *e = &st.e[i];
        CHECKF(e->name[0] != '.', "a hidden folder was listed: %s", e->name);
        if (!strcmp(e->name, "good") || !strcmp(e->name, "alias") || !strcmp(e->name, "filein")) {
            CHECKF(e->ok, "%s did not load: %s", e->name, e->err);
            continue;
        }
        int known = 0;
        for (int k = 0; k < nc; k++) {
            if (strcmp(cases[k].name, e->name)) continue;
            known = 1, found++;
            CHECKF(!e->ok, "%s loaded; expected: %s", e->name, cases[k].want);
            CHECK_MSG(e->err, cases[k].want);
            char dir[300];  // the message names the adapter's folder
            snprintf(dir, sizeof dir, "/%s", e->name);
            CHECK_MSG(e->err, dir);
            printf("adapter %s: %s\n", e->name, e->err);
        }
        CHECKF(known || !e->ok, "unexpected entry %s loaded", e->name);
    }
    CHECKF(found == nc, "%d of %d bad adapters were in the listing", found, nc);
    CHECKF(store_loaded(&st) == 3, "expected good, alias and filein loaded, found %d", store_loaded(&st));
    const store_entry *g = store_find(&st, "good");
    CHECK(g && g->a.rank == 4 && g->a.n_layers == 2);
    store_free(&st);
    // the single-adapter loader checks the same (infer --adapter DIR)
    lora_adapter a;
    CHECK(lora_load_peft(&a, &cfg, test_path(store, "nan")) == QL_EFORMAT);
    CHECK_MSG(ql_errmsg(), "value NaN");
    lora_free(&a);
    // and so does the resident loader (infer, chat, serve), which converts nothing
    CHECK(lora_load_peft_resident(&a, &cfg, test_path(store, "nan")) == QL_EFORMAT);
    CHECK_MSG(ql_errmsg(), "value NaN");
    CHECK(a.res_file == NULL && a.w == NULL);
    lora_free(&a);
    unsigned listed;
    CHECK(lora_peft_config(&a, &listed, test_path(store, "fifo_config")) == QL_EFORMAT);
    CHECK_MSG(ql_errmsg(), "not a regular file (a FIFO)");
    model_config sh;
    CHECK(lora_peft_shapes(&sh, test_path(store, "fifo_weights")) == QL_EFORMAT);
    CHECK_MSG(ql_errmsg(), "not a regular file (a FIFO)");
}

int main(void) {
    cfg = (model_config){.dim = 16, .hidden_dim = 32, .n_layers = 2, .n_heads = 2, .n_kv_heads = 1, .head_dim = 8,
                         .vocab_size = 32, .max_pos = 64};
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_names();
    // the store: good, links in and out of it, and a linked store
    char store[4096], outside[4096];
    snprintf(store, sizeof store, "%s/store", tmp);
    snprintf(outside, sizeof outside, "%s/outside", tmp);
    CHECK(mkdir(store, 0755) == 0 && mkdir(outside, 0755) == 0);
    save_adapter(P("store/good"), &cfg, 4, DT_F16, NULL);
    save_adapter(P("outside/good"), &cfg, 4, DT_F16, NULL);
    char *outside_real = realpath(outside, NULL);
    CHECK(outside_real != NULL);
    CHECK(symlink(P("outside/good"), P("store/out")) == 0);
    CHECK(symlink("good", P("store/alias")) == 0);
    CHECK(symlink(".", P("store/self")) == 0);
    CHECK(symlink("..", P("store/up")) == 0);
    CHECK(symlink("nowhere", P("store/dangling")) == 0);
    CHECK(symlink("store", P("storelink")) == 0);
    write_text(P("store/afile"), "not a folder\n");
    CHECK(mkdir(P("store/filelink"), 0755) == 0 && mkdir(P("store/weightlink"), 0755) == 0 &&
          mkdir(P("store/filein"), 0755) == 0);
    CHECK(symlink(P("outside/good/" PEFT_CONFIG_NAME), P("store/filelink/" PEFT_CONFIG_NAME)) == 0);
    copy_file(P("outside/good/" PEFT_WEIGHTS_NAME), P("store/filelink/" PEFT_WEIGHTS_NAME));
    copy_file(P("outside/good/" PEFT_CONFIG_NAME), P("store/weightlink/" PEFT_CONFIG_NAME));
    CHECK(symlink(P("outside/good/" PEFT_WEIGHTS_NAME), P("store/weightlink/" PEFT_WEIGHTS_NAME)) == 0);
    CHECK(symlink("../good/" PEFT_CONFIG_NAME, P("store/filein/" PEFT_CONFIG_NAME)) == 0);
    CHECK(symlink("../good/" PEFT_WEIGHTS_NAME, P("store/filein/" PEFT_WEIGHTS_NAME)) == 0);
    if (!test_failures) {
        test_resolve(store, outside_real);
        test_adapters_option(store);
        make_bad_adapters(store);
        if (!test_failures) test_bad_adapters(store);
    }
    free(outside_real);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return test_finish("test_store_boundary");
}
