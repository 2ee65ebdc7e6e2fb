// fuzz_requests: a --requests JSONL file through requests_parse (what requests_run
// calls on the file's text) with the tiny_gqa fixture's config and tokenizer: every
// line becomes a runnable request or an error result.
#include "fuzz_util.h"

#include "common/config.h"
#include "common/tokenizer.h"
#include "infer/requests.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static tokenizer *tok;
    static model m;
    if (!tok) {
        m.cfg = *fz_fixture_config();
        if (tok_load_file(&tok, FZ_FIXTURE("models/tiny_gqa/tokenizer.model"))) {
            fprintf(stderr, "fuzz: %s\n", ql_errmsg());
            abort();
        }
    }
    requests_opts ro = {.path = "requests.jsonl", .out = "", .adapter_dir = "", .adapters = "", .batch = 8,
                        .tmpl = DS_TEMPLATE_LLAMA2, .max_tokens = 16, .top_k = 0, .seed = 0, .stop_at_eos = 1,
                        .temperature = 1, .top_p = 1};
    req_line *q = NULL;
    int n = 0;
    if (requests_parse(&q, &n, (const char *)data, size, ro.path, &m, tok, &ro) == 0) {
        for (int i = 0; i < n; i++) (void)strlen(requests_line_error(q, i));
        requests_lines_free(q, n);
    }
    return 0;
}
