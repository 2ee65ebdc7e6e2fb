// fuzz_config: config.json through config_parse (what config_load_dir and a base
// file's "config" metadata call). An accepted config must survive config_to_json
// and parse again to the same values, and give finite RoPE frequencies.
#include "fuzz_util.h"

#include <math.h>

#include "common/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_dir();
    model_config c, c2;
    if (config_parse(&c, (const char *)data, size, "config.json") != 0) return 0;
    char *js = config_to_json(&c);
    if (!js) abort();
    if (config_parse(&c2, js, strlen(js), "config_to_json")) {
        fprintf(stderr, "an accepted config.json does not round-trip: %s\n%s\n", ql_errmsg(), js);
        abort();
    }
    if (c2.dim != c.dim || c2.n_layers != c.n_layers || c2.vocab_size != c.vocab_size || c2.head_dim != c.head_dim ||
        c2.n_eos != c.n_eos || c2.rope_scaling != c.rope_scaling)
        abort();
    free(js);
    float *f = malloc(sizeof(float) * (size_t)(c.head_dim / 2 + 1));
    config_rope_inv_freq(&c, f);
    for (int i = 0; i < c.head_dim / 2; i++)
        if (isnan(f[i])) abort();
    free(f);
    return 0;
}
