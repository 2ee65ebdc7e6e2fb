// fuzz_dataset: a training JSONL file (any of the four formats: text,
// prompt/completion, messages, alpaca) through dataset_load_mem, as dataset_load
// calls it, with the tiny_gqa fixture's SentencePiece tokenizer; twice, with the
// defaults (llama2, strict) and with a template chosen by the input's length,
// skip_invalid, train_on_inputs and a short seq_len; an accepted set is packed.
#include "fuzz_util.h"

#include "common/tokenizer.h"
#include "datasets/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static tokenizer *tok;
    if (!tok) {
        fz_dir();
        if (tok_load_file(&tok, FZ_FIXTURE("models/tiny_gqa/tokenizer.model"))) {
            fprintf(stderr, "fuzz: %s\n", ql_errmsg());
            abort();
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        dataset_options o;
        dataset_options_default(&o);
        if (pass) {
            o.chat_template = (ds_template)(size % 4);
            o.skip_invalid = 1, o.train_on_inputs = 1, o.seq_len = 16;
        }
        dataset d;
        if (dataset_load_mem(&d, (const char *)data, size, "fuzz.jsonl", tok, &o) == 0) {
            for (int i = 0; i < d.n_samples; i++)
                if (d.samples[i].n < 2 || d.samples[i].n > o.seq_len || d.samples[i].mask[0]) abort();
            ds_packed p;
            if (dataset_pack(&p, &d, o.seq_len, 0) == 0) ds_packed_free(&p);
        }
        dataset_free(&d);
    }
    return 0;
}
