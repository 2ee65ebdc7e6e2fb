// fuzz_generation_config: generation_config.json through config_parse_generation
// (config_load_dir's call), on top of the tiny_gqa fixture's config.json.
#include "fuzz_util.h"

#include "common/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    model_config c = *fz_fixture_config();
    if (config_parse_generation(&c, (const char *)data, size, "generation_config.json") == 0)
        for (int i = 0; i < c.n_eos; i++)
            if (c.eos_ids[i] < 0 || c.eos_ids[i] >= c.vocab_size) abort();
    return 0;
}
