// test_tokenizer_real.c: common/spm.h on the real Llama tokenizers in
// ../shared/models (stories260K's 512 pieces, Llama 2's 32000): encode, decode
// and streaming decode equal Debian's spm_encode/spm_decode as recorded in
// tests/fixtures/tokenizer/{stories260K,llama2-32000}.txt. Skips (77) without
// the models directory.
#include "common/spm.h"
#include "tests/testutil.h"
#include "tests/tokenizer_fixture.h"

int main(void) {
    const char *dir = test_models_dir();
    if (!dir) {
        fprintf(stderr, "test_tokenizer_real: no models directory, skipped\n");
        return TEST_SKIP;
    }
    const char *fix = test_path(test_source_dir(), "tests/fixtures/tokenizer");
    fixture_check(test_path(dir, "stories260K/tokenizer.model"), test_path(fix, "stories260K.txt"));
    fixture_check(test_path(dir, "tokenizers/llama2-32000/tokenizer.model"), test_path(fix, "llama2-32000.txt"));
    return test_finish("test_tokenizer_real");
}
