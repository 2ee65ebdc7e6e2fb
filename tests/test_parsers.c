// test_parsers: what config.json, generation_config.json, tokenizer_config.json and
// the quantized base file (.qlb) may say that qlora does not implement or that lies
// is refused with an error naming the file and field; and no reader waits on a FIFO.
// (The fuzz harnesses in tests/fuzz replay their corpora as fuzz_replay_*; these are
// the defects of issue 18 each as a named case.)
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"
#include "common/err.h"
#include "common/json.h"
#include "common/safetensors.h"
#include "model/model.h"
#include "testutil.h"
#include "train/peft.h"

static char dir[] = "/tmp/test_parsers_XXXXXX";

static const char *tp(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

#define BASE_CFG \
    "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 16, " \
    "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"vocab_size\": 16"

// config.json text (BASE_CFG + extra + "}") gives rc and, when refused, a message with want
static void config_case(const char *extra, int want_rc, const char *want) {
    char js[1024];
    snprintf(js, sizeof js, "%s%s}", BASE_CFG, extra);
    model_config c;
    int rc = config_parse(&c, js, strlen(js), "config.json");
    CHECKF(rc == want_rc, "config %s: rc %d, want %d (%s)", extra, rc, want_rc, ql_errmsg());
    if (rc && want)
        CHECKF(strstr(ql_errmsg(), want) && strstr(ql_errmsg(), "config.json"), "config %s: '%s' not in: %s", extra, want,
               ql_errmsg());
    if (rc) printf("  %-40s -> %s\n", extra, ql_errmsg());
}

static void configs(void) {
    config_case("", QL_OK, NULL);
    config_case(", \"model_type\": \"llama\", \"hidden_act\": \"silu\", \"attention_bias\": false, \"mlp_bias\": false", QL_OK, NULL);
    config_case(", \"model_type\": \"mistral\", \"hidden_act\": \"swish\", \"attention_bias\": null", QL_OK, NULL);
    config_case(", \"hidden_act\": \"gelu\"", QL_EUNSUP, "field 'hidden_act': \"gelu\" is not supported");
    config_case(", \"hidden_act\": \"gelu_pytorch_tanh\"", QL_EUNSUP, "hidden_act");
    config_case(", \"hidden_act\": 1", QL_EFORMAT, "field 'hidden_act': expected a string");
    config_case(", \"attention_bias\": true", QL_EUNSUP, "field 'attention_bias': true is not supported");
    config_case(", \"mlp_bias\": true", QL_EUNSUP, "field 'mlp_bias': true is not supported");
    config_case(", \"attention_bias\": \"no\"", QL_EFORMAT, "field 'attention_bias': expected true or false");
    config_case(", \"model_type\": \"qwen2\"", QL_EUNSUP, "field 'model_type': \"qwen2\" is not supported");
    config_case(", \"model_type\": \"gemma\"", QL_EUNSUP, "expected llama or mistral");
    // found by fuzz_config: a positive double that is 0 or infinite as a float
    config_case(", \"rms_norm_eps\": 1e-86", QL_EFORMAT, "field 'rms_norm_eps': expected a positive number within float range");
    config_case(", \"rope_theta\": 1e300", QL_EFORMAT, "field 'rope_theta': expected a positive number within float range");
    config_case(", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1, "
                "\"high_freq_factor\": 4, \"original_max_position_embeddings\": 1e30}", QL_EFORMAT,
                "field 'original_max_position_embeddings': expected an integer, found 1e+30");
    config_case(", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1, "
                "\"high_freq_factor\": 4, \"original_max_position_embeddings\": 1000000000}", QL_EFORMAT,
                "field 'original_max_position_embeddings': expected a value in [1, 1.67772e+07], found 1e+09");
    // found by fuzz_config: a fraction became the context length 0
    config_case(", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1, "
                "\"high_freq_factor\": 4, \"original_max_position_embeddings\": 61e-4}", QL_EFORMAT,
                "field 'original_max_position_embeddings': expected an integer, found 0.0061");
    config_case(", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1, "
                "\"high_freq_factor\": 4}", QL_EFORMAT, "missing required field 'original_max_position_embeddings'");
    // found by fuzz_config: an absent head_dim defaults to hidden_size / heads, which was 0 here
    char small[512];
    snprintf(small, sizeof small, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 4, "
             "\"intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 62, \"vocab_size\": 16}");
    model_config z;
    CHECK(config_parse(&z, small, strlen(small), "config.json") == QL_EFORMAT);
    CHECKF(strstr(ql_errmsg(), "head_dim 0 (hidden_size 4 / num_attention_heads 62"), "%s", ql_errmsg());
    // a config.json that means two things (Hugging Face would take the last rope_theta)
    config_case(", \"rope_theta\": 10000, \"rope_theta\": 500000", QL_EFORMAT, "key 'rope_theta' appears twice");

    model_config c;
    const char *js = BASE_CFG ", \"eos_token_id\": 2}";
    CHECK_OK(config_parse(&c, js, strlen(js), "config.json"));
    model_config g = c;
    const char *gen = "{\"eos_token_id\": [2, 7]}";
    CHECK_OK(config_parse_generation(&g, gen, strlen(gen), "generation_config.json"));
    CHECK(g.n_eos == 2 && g.eos_ids[1] == 7);
    g = c;
    gen = "{\"eos_token_id\": [2, 16]}";  // past vocab_size 16
    CHECK(config_parse_generation(&g, gen, strlen(gen), "generation_config.json") == QL_EFORMAT);
    CHECKF(strstr(ql_errmsg(), "generation_config.json") && strstr(ql_errmsg(), "16"), "%s", ql_errmsg());
    gen = "[2]";
    CHECK(config_parse_generation(&g, gen, strlen(gen), "generation_config.json") == QL_EFORMAT);
    g = c;
    const char *tc = "{\"add_bos_token\": false}";
    CHECK_OK(config_parse_tokenizer_config(&g, tc, strlen(tc), "tokenizer_config.json"));
    CHECK(g.add_bos == 0);
    tc = "{\"add_bos_token\": \"yes\"}";
    CHECK(config_parse_tokenizer_config(&g, tc, strlen(tc), "tokenizer_config.json") == QL_EFORMAT);
    CHECKF(strstr(ql_errmsg(), "tokenizer_config.json: field 'add_bos_token'"), "%s", ql_errmsg());
}

// ---- the base file ----

static unsigned char *slurp(const char *path, size_t *n) {
    char *b = NULL;
    CHECK_OK(file_read_all(path, (size_t)1 << 28, &b, n));
    return (unsigned char *)b;
}

static void spit(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(b, 1, n, f) == n);
    if (f) fclose(f);
}

// base file bytes b (n) written as name: model_load must refuse with rc and want
static void base_case(const char *name, const unsigned char *b, size_t n, int want_rc, const char *want) {
    spit(tp(name), b, n);
    model m;
    int rc = model_load(&m, tp(name), DT_NF4);
    CHECKF(rc == want_rc, "%s: rc %d, want %d (%s)", name, rc, want_rc, rc ? ql_errmsg() : "loaded");
    if (rc == QL_OK) model_free(&m);
    else {
        CHECKF(strstr(ql_errmsg(), want) && strstr(ql_errmsg(), name), "%s: '%s' not in: %s", name, want, ql_errmsg());
        printf("  %-22s -> %s\n", name, ql_errmsg());
    }
}

// Replaces the first `from` after `after` in b with `to` (same length).
static int patch(unsigned char *b, size_t n, const char *after, const char *from, const char *to) {
    size_t la = strlen(after), lf = strlen(from);
    CHECK(lf == strlen(to));
    for (size_t i = 0; i + la <= n; i++)
        if (!memcmp(b + i, after, la))
            for (size_t j = i + la; j + lf <= n; j++)
                if (!memcmp(b + j, from, lf)) { memcpy(b + j, to, lf); return 1; }
    return 0;
}

static void bases(void) {
    model_config c = {.arch = ARCH_LLAMA, .dim = 8, .hidden_dim = 16, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1,
                      .head_dim = 4, .vocab_size = 16, .max_pos = 64, .norm_eps = 1e-5f, .rope_theta = 10000,
                      .tie_embeddings = 1, .bos_id = 1, .eos_id = 2, .eos_ids = {2}, .n_eos = 1, .add_bos = 1};
    model m;
    CHECK_OK(model_init_random(&m, &c, DT_NF4, 7));
    CHECK_OK(model_save_base(&m, tp("good.qlb")));
    model_free(&m);
    size_t n;
    unsigned char *good = slurp(tp("good.qlb"), &n), *b = malloc(n + 64);
    base_case("good.qlb", good, n, QL_OK, NULL);

    memcpy(b, good, n), b[12] = 1;
    base_case("flags.qlb", b, n, QL_EUNSUP, "flags 0x1");
    memcpy(b, good, n), b[30] = 9;
    base_case("reserved.qlb", b, n, QL_EFORMAT, "reserved field");
    // one more byte of header (a space): the data area starts 1 past a multiple of 64
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | good[32 + k];
    memcpy(b, good, 40 + hlen);
    b[40 + hlen] = ' ';
    memcpy(b + 41 + hlen, good + 40 + hlen, n - 40 - hlen);
    uint64_t image = n + 1 - 32, h1 = hlen + 1;
    for (int k = 0; k < 8; k++) b[16 + k] = (unsigned char)(image >> 8 * k), b[32 + k] = (unsigned char)(h1 >> 8 * k);
    base_case("misaligned.qlb", b, n + 1, QL_EFORMAT, "not a multiple of 64");
    memcpy(b, good, n);
    CHECK(patch(b, n, "add_bos_token", "\"true\"", "\"TRUE\""));
    base_case("add_bos.qlb", b, n, QL_EFORMAT, "add_bos_token \"TRUE\": expected true or false");
    memcpy(b, good, n);
    CHECK(patch(b, n, "base_dtype", "\"nf4\"", "\"nf8\""));
    base_case("dtype_name.qlb", b, n, QL_EFORMAT, "base_dtype \"nf8\"");
    memcpy(b, good, n);
    CHECK(patch(b, n, "base_dtype", "\"nf4\"", "\"f16\""));
    base_case("dtype_lie.qlb", b, n, QL_EFORMAT, "but the metadata says base_dtype f16");
    memcpy(b, good, n);
    CHECK(patch(b, n, "\"config\"", "LlamaForCausalLM", "GemmaForCausalLM"));
    base_case("arch.qlb", b, n, QL_EUNSUP, "unknown architecture 'GemmaForCausalLM'");
    free(good), free(b);
}

// ---- FIFOs: every reader refuses them at once (the old ones waited for a writer) ----

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "test_parsers: a reader blocked on a FIFO (10 s)\n";
    if (write(2, msg, sizeof msg - 1)) {}
    _exit(1);
}

static void fifos(void) {
    signal(SIGALRM, on_alarm);
    alarm(10);
    CHECK(mkfifo(tp("fifo.qlb"), 0600) == 0);
    model m;
    CHECK(model_load(&m, tp("fifo.qlb"), DT_NF4) == QL_EIO);
    CHECKF(strstr(ql_errmsg(), "not a model directory or a regular file"), "%s", ql_errmsg());
    st_file f;
    CHECK(st_open(&f, tp("fifo.qlb")) == QL_EIO);
    CHECKF(strstr(ql_errmsg(), "not a regular file"), "%s", ql_errmsg());
    // a model directory whose config.json is a FIFO
    CHECK(mkdir(tp("fifo_model"), 0700) == 0);
    CHECK(mkfifo(tp("fifo_model/config.json"), 0600) == 0);
    model_config c;
    CHECK(config_load_dir(&c, tp("fifo_model")) == QL_EIO);
    CHECKF(strstr(ql_errmsg(), "config.json: not a regular file"), "%s", ql_errmsg());
    // an adapter directory whose adapter_config.json is a FIFO (the hang)
    CHECK(mkdir(tp("fifo_adapter"), 0700) == 0);
    CHECK(mkfifo(tp("fifo_adapter/adapter_config.json"), 0600) == 0);
    const char *js = BASE_CFG "}";
    CHECK_OK(config_parse(&c, js, strlen(js), "config.json"));
    lora_adapter a;
    CHECK(lora_load_peft(&a, &c, tp("fifo_adapter")) != QL_OK);
    CHECKF(strstr(ql_errmsg(), "adapter_config.json"), "%s", ql_errmsg());
    lora_free(&a);
    alarm(0);
    unlink(tp("fifo.qlb")), unlink(tp("fifo_model/config.json")), unlink(tp("fifo_adapter/adapter_config.json"));
    rmdir(tp("fifo_model")), rmdir(tp("fifo_adapter"));
}

int main(void) {
    CHECK(mkdtemp(dir) != NULL);
    configs();
    bases();
    fifos();
    static const char *const files[] = {"good.qlb", "flags.qlb", "reserved.qlb", "misaligned.qlb", "add_bos.qlb",
                                        "dtype_name.qlb", "dtype_lie.qlb", "arch.qlb"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) unlink(tp(files[i]));
    rmdir(dir);
    return test_finish("test_parsers");
}
