// dataset.c: options, names and freeing (see dataset.h). Reading is in
// jsonl.c, rendering in chat.c, order/split/packing in pack.c.
#include "datasets/dataset.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"

void dataset_options_default(dataset_options *o) {
    memset(o, 0, sizeof *o);
    o->chat_template = DS_TEMPLATE_LLAMA2;
    o->seq_len = 512;
    o->add_bos = 1;
    o->bos_id = -1;
    o->eos_id = -1;
    o->max_file_bytes = (size_t)1 << 30;
}

void dataset_free(dataset *d) {
    if (!d) return;
    for (int i = 0; i < d->n_samples; i++) {
        free(d->samples[i].ids);
        free(d->samples[i].mask);
    }
    free(d->samples);
    free(d->skip_summary);
    memset(d, 0, sizeof *d);
}

const char *ds_format_name(ds_format f) {
    switch (f) {
    case DS_FORMAT_TEXT: return "text";
    case DS_FORMAT_PROMPT: return "prompt/completion";
    case DS_FORMAT_CHAT: return "messages";
    case DS_FORMAT_ALPACA: return "alpaca";
    case DS_FORMAT_SHAREGPT: return "sharegpt";
    default: return "none";
    }
}

static const char *const template_names[] = {"llama2", "chatml", "zephyr", "llama3"};

const char *const *ds_template_stops(ds_template t) {
    static const char *const llama2[] = {"[INST]", NULL}, *const chatml[] = {"<|im_end|>", "<|im_start|>", NULL},
                             *const zephyr[] = {"<|user|>", "</s>", NULL}, *const llama3[] = {"<|eot_id|>", NULL};
    return t == DS_TEMPLATE_CHATML ? chatml : t == DS_TEMPLATE_ZEPHYR ? zephyr : t == DS_TEMPLATE_LLAMA3 ? llama3 : llama2;
}

const char *ds_template_name(ds_template t) {
    return t >= DS_TEMPLATE_LLAMA2 && t <= DS_TEMPLATE_LLAMA3 ? template_names[t] : "unknown";
}

int ds_template_parse(ds_template *out, const char *name) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, template_names[i])) {
            *out = (ds_template)i;
            return QL_OK;
        }
    return ql_err(QL_EINVAL, "unknown chat template '%s' (expected llama2, chatml, zephyr or llama3)", name);
}

int ds_template_recognize(ds_template *out, const char *jinja) {
    if (strstr(jinja, "<|start_header_id|>") && strstr(jinja, "<|eot_id|>")) *out = DS_TEMPLATE_LLAMA3;
    else if (strstr(jinja, "<|im_start|>")) *out = DS_TEMPLATE_CHATML;
    else if (strstr(jinja, "<|user|>")) *out = DS_TEMPLATE_ZEPHYR;
    else if (strstr(jinja, "[INST]")) *out = DS_TEMPLATE_LLAMA2;
    else return ql_err(QL_ENOENT, "the chat template is none of llama2, chatml, zephyr and llama3 (give --chat-template)");
    return QL_OK;
}

int ds_template_choose(ds_template *out, const char *option, const char *jinja) {
    if (option && option[0]) return ds_template_parse(out, option);
    *out = DS_TEMPLATE_LLAMA2;
    if (!jinja) return QL_OK;
    if (ds_template_recognize(out, jinja) == QL_OK) return QL_OK;
    return ql_err(QL_EINVAL, "the model's chat template (tokenizer_config.json) is none of llama2, chatml, zephyr and "
                             "llama3: give --chat-template");
}
