// test_bad_input.c: every bad input the loaders can meet gets a clear error
// (the file, the tensor or field, what was expected and what was found) and a
// non-OK status, never a crash. Built twice: as a normal test and, as
// test_bad_input_asan, with AddressSanitizer and UBSan over the whole library.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "model/model.h"
#include "common/safetensors.h"
#include "common/tokenizer.h"
#include "testutil.h"

static char tmp[256];

static const char *tp(const char *name) { return test_path(tmp, name); }

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) { perror(path); exit(1); }
    fclose(f);
}

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*n + 1);
    if (fread(b, 1, *n, f) != *n) { perror(path); exit(1); }
    fclose(f);
    return b;
}

// A safetensors file with this header text and data_len bytes of data.
static void write_st(const char *path, const char *header, size_t data_len) {
    size_t h = strlen(header);
    char *b = calloc(1, 8 + h + data_len);
    for (int k = 0; k < 8; k++) b[k] = (char)((uint64_t)h >> (8 * k));
    memcpy(b + 8, header, h);
    write_file(path, b, 8 + h + data_len);
    free(b);
}

// Expect st_open to fail with code and a message containing all of subs.
static void expect_st(const char *what, int code, const char *const *subs) {
    st_file f;
    int rc = st_open(&f, tp("x.safetensors"));
    CHECKF(rc == code, "%s: expected code %d, got %d (%s)", what, code, rc, ql_errmsg());
    for (int i = 0; subs[i]; i++) CHECKF(strstr(ql_errmsg(), subs[i]) != NULL, "%s: message '%s' lacks '%s'", what, ql_errmsg(), subs[i]);
    fprintf(stderr, "%-28s -> %s\n", what, ql_errmsg());
    if (rc == QL_OK) st_close(&f);
}

#define SUBS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void safetensors_cases(void) {
    const char *p = tp("x.safetensors");
    write_file(p, "abc", 3);
    expect_st("shorter than 8 bytes", QL_EFORMAT, SUBS("x.safetensors", "too short"));
    write_file(p, "\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10);
    expect_st("huge header size", QL_EFORMAT, SUBS("exceeds the limit"));
    write_file(p, "\x40\0\0\0\0\0\0\0{}", 10);
    expect_st("header past end", QL_EFORMAT, SUBS("truncated"));
    write_st(p, "{\"a\":", 0);
    expect_st("header not JSON", QL_EFORMAT, SUBS("invalid JSON"));
    write_st(p, "[1,2]", 0);
    expect_st("header an array", QL_EFORMAT, SUBS("not a JSON object"));
    write_st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 8);
    expect_st("offsets out of bounds", QL_EFORMAT, SUBS("'w'", "out of bounds"));
    write_st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", 16);
    expect_st("size != dtype x shape", QL_EFORMAT, SUBS("'w'", "16 bytes", "needs 24"));
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
    expect_st("overlapping tensors", QL_EFORMAT, SUBS("overlaps"));
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12);
    expect_st("hole between tensors", QL_EFORMAT, SUBS("hole"));
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    expect_st("duplicate names", QL_EFORMAT, SUBS("'a' appears twice"));
    write_st(p, "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8);
    expect_st("unknown dtype", QL_EUNSUP, SUBS("'a'", "F64"));
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0);
    expect_st("negative dimension", QL_EFORMAT, SUBS("out of range"));
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 4);
    expect_st("shape overflow", QL_EFORMAT, SUBS("'a'"));
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12);
    expect_st("trailing bytes", QL_EFORMAT, SUBS("trailing"));
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4);
    expect_st("missing data_offsets", QL_EFORMAT, SUBS("data_offsets"));
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", 4);
    expect_st("text after the header", QL_EFORMAT, SUBS("invalid JSON", "column 56"));
}

// A copy of a fixture model in tmp/name with the given edits.
static void copy_model(const char *name) {
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/tests/fixtures/models/tiny_mha", test_source_dir());
    snprintf(dst, sizeof dst, "%s/%s", tmp, name);
    mkdir(dst, 0755);
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"};
    for (int i = 0; i < 4; i++) {
        size_t n;
        char *b = read_file(test_path(src, files[i]), &n);
        write_file(test_path(dst, files[i]), b, n);
        free(b);
    }
}

static void expect_model(const char *what, const char *name, int code, const char *const *subs) {
    model m;
    int rc = model_load(&m, tp(name), DT_NF4);
    CHECKF(rc == code, "%s: expected code %d, got %d (%s)", what, code, rc, ql_errmsg());
    for (int i = 0; subs[i]; i++) CHECKF(strstr(ql_errmsg(), subs[i]) != NULL, "%s: message '%s' lacks '%s'", what, ql_errmsg(), subs[i]);
    fprintf(stderr, "%-28s -> %s\n", what, ql_errmsg());
    if (rc == QL_OK) model_free(&m);
}

static void replace_in_file(const char *path, const char *from, const char *to) {
    size_t n;
    char *b = read_file(path, &n);
    b[n] = 0;
    char *at = strstr(b, from);
    if (!at) { fprintf(stderr, "replace_in_file: '%s' not in %s\n", from, path); exit(1); }
    size_t nf = strlen(from), nt = strlen(to);
    char *o = malloc(n - nf + nt);
    memcpy(o, b, (size_t)(at - b));
    memcpy(o + (at - b), to, nt);
    memcpy(o + (at - b) + nt, at + nf, n - (size_t)(at - b) - nf);
    write_file(path, o, n - nf + nt);
    free(o);
    free(b);
}

static void model_cases(void) {
    expect_model("no such path", "nope", QL_EIO, SUBS("nope"));
    copy_model("notok");
    unlink(test_path(tp("notok"), "tokenizer.model"));
    expect_model("missing tokenizer", "notok", QL_EIO, SUBS("tokenizer.model"));
    copy_model("arch");
    replace_in_file(test_path(tp("arch"), "config.json"), "LlamaForCausalLM", "GPT2LMHeadModel");
    expect_model("unknown architecture", "arch", QL_EUNSUP, SUBS("config.json", "GPT2LMHeadModel", "LlamaForCausalLM"));
    copy_model("shape");
    replace_in_file(test_path(tp("shape"), "config.json"), "\"intermediate_size\": 128", "\"intermediate_size\": 129");
    expect_model("wrong shape", "shape", QL_EFORMAT, SUBS("model.safetensors", "gate_proj", "[129, 64]", "[128, 64]"));
    copy_model("missing");
    replace_in_file(test_path(tp("missing"), "config.json"), "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    expect_model("missing tensor", "missing", QL_EFORMAT, SUBS("model.layers.2.input_layernorm.weight", "missing"));
    copy_model("dtype");
    // relabel one F32 weight as I32 (same size): a dtype the loader must refuse for weights
    size_t n;
    char *b = read_file(test_path(tp("dtype"), "model.safetensors"), &n);
    char *at = strstr(b + 8, "\"model.layers.0.mlp.up_proj.weight\":{\"dtype\":\"F32\"");
    if (at) memcpy(strstr(at, "F32"), "I32", 3);
    write_file(test_path(tp("dtype"), "model.safetensors"), b, n);
    free(b);
    CHECKF(at != NULL, "fixture header layout changed");
    expect_model("wrong dtype", "dtype", QL_EUNSUP, SUBS("up_proj", "I32", "F32, F16 or BF16"));
    copy_model("trunc");
    b = read_file(test_path(tp("trunc"), "model.safetensors"), &n);
    write_file(test_path(tp("trunc"), "model.safetensors"), b, n / 2);
    free(b);
    expect_model("truncated safetensors", "trunc", QL_EFORMAT, SUBS("model.safetensors"));
    copy_model("badcfg");
    const char *badcfg = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":\"64\"}";
    write_file(test_path(tp("badcfg"), "config.json"), badcfg, strlen(badcfg));
    expect_model("config field type", "badcfg", QL_EFORMAT, SUBS("hidden_size", "expected a number, found a string"));
    // base files
    const char *badq = "QLORAXXX0000000000000000000000000000";
    write_file(tp("bad.qlb"), badq, strlen(badq));
    expect_model("base file bad magic", "bad.qlb", QL_EFORMAT, SUBS("not a qlora base file"));
    model m;
    char good[4096];
    snprintf(good, sizeof good, "%s/tests/fixtures/models/tiny_mha", test_source_dir());
    CHECK_OK(model_load(&m, good, DT_NF4));
    if (!test_failures) {
        CHECK_OK(model_save_base(&m, tp("good.qlb")));
        model_free(&m);
        b = read_file(tp("good.qlb"), &n);
        write_file(tp("cut.qlb"), b, n - 100);
        expect_model("base file truncated", "cut.qlb", QL_EFORMAT, SUBS("cut.qlb", "truncated"));
        b[8] = 9;
        write_file(tp("ver.qlb"), b, n);
        expect_model("base file version", "ver.qlb", QL_EUNSUP, SUBS("version 9"));
        free(b);
        CHECK_OK(model_load(&m, tp("good.qlb"), DT_NF4));
        if (!test_failures) model_free(&m);
    }
}

static void tokenizer_cases(void) {
    tokenizer *s = NULL;
    const char junk[] = "\x01\x02\x03 not a model";
    write_file(tp("junk.model"), junk, sizeof junk - 1);
    CHECK(tok_load_file(&s, tp("junk.model")) != QL_OK && s == NULL);
    CHECK(strstr(ql_errmsg(), "junk.model") != NULL);
}

int main(void) {
    snprintf(tmp, sizeof tmp, "/tmp/qlora_bad_input_XXXXXX");
    if (!mkdtemp(tmp)) { perror("mkdtemp"); return 1; }
    safetensors_cases();
    model_cases();
    tokenizer_cases();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return test_finish("test_bad_input");
}
