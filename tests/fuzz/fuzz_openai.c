// fuzz_openai: an HTTP request body through oai_parse, as POST /v1/completions and
// POST /v1/chat/completions (serve/server.c) call it: every input is tried as both.
#include "fuzz_util.h"

#include "serve/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_dir();
    for (int kind = OAI_COMPLETIONS; kind <= OAI_CHAT; kind++) {
        oai_request r;
        char param[64];
        (void)oai_parse(&r, (oai_kind)kind, (const char *)data, size, param, sizeof param);
        oai_request_free(&r);
    }
    return 0;
}
