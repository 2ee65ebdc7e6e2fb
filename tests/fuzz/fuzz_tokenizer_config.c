// fuzz_tokenizer_config: tokenizer_config.json through config_parse_tokenizer_config
// (config_load_dir's call), on top of the tiny_gqa fixture's config.json.
#include "fuzz_util.h"

#include "common/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    model_config c = *fz_fixture_config();
    if (config_parse_tokenizer_config(&c, (const char *)data, size, "tokenizer_config.json") == 0 &&
        c.add_bos != 0 && c.add_bos != 1)
        abort();
    return 0;
}
