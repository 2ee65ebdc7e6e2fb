// chat.c: rendering one record into token ids and a loss mask: the raw formats
// (text, prompt/completion) and the chat templates llama2, chatml, zephyr, llama3.
// Every text part is encoded on its own with tok_encode (special-token text stays literal), so each part starts
// with SentencePiece's dummy-prefix "▁"; docs/datasets.md shows every layout.
#include "datasets/dataset.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"

typedef struct {
    int *ids;
    uint8_t *mask;
    int n, cap;
    const tokenizer *tok;
    int train_all;  // train_on_inputs
    int open;       // a generation prompt: ends with the assistant's header, no reply
} seqbuf;

static int grow(seqbuf *b, int extra) {
    if (b->n + extra <= b->cap) return QL_OK;
    int cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra) cap *= 2;
    int *ids = realloc(b->ids, sizeof(int) * (size_t)cap);
    if (!ids) return ql_err(QL_ENOMEM, "out of memory rendering a sample");
    b->ids = ids;
    uint8_t *mask = realloc(b->mask, (size_t)cap);
    if (!mask) return ql_err(QL_ENOMEM, "out of memory rendering a sample");
    b->mask = mask;
    b->cap = cap;
    return QL_OK;
}

static int push_id(seqbuf *b, int id, int trained) {
    QL_CHECK(grow(b, 1));
    b->ids[b->n] = id;
    b->mask[b->n] = (uint8_t)(trained || b->train_all);
    b->n++;
    return QL_OK;
}

// Encodes the concatenation of up to 5 strings (NULL ends the list early) as one part.
static int push_text(seqbuf *b, int trained, const char *s0, const char *s1, const char *s2, const char *s3,
                     const char *s4) {
    const char *s[5] = {s0, s1, s2, s3, s4};
    size_t len = 0;
    for (int k = 0; k < 5 && s[k]; k++) len += strlen(s[k]);
    char *text = malloc(len + 1);
    if (!text) return ql_err(QL_ENOMEM, "out of memory rendering a sample");
    size_t o = 0;
    for (int k = 0; k < 5 && s[k]; k++) {
        size_t l = strlen(s[k]);
        memcpy(text + o, s[k], l);
        o += l;
    }
    text[o] = 0;
    int *ids = NULL, n = 0;
    int rc = tok_encode(b->tok, text, len, 0, &ids, &n);
    free(text);
    if (rc != QL_OK) return rc;
    rc = grow(b, n);
    if (rc == QL_OK) {
        memcpy(b->ids + b->n, ids, sizeof(int) * (size_t)n);
        memset(b->mask + b->n, trained || b->train_all, (size_t)n);
        b->n += n;
    }
    free(ids);
    return rc;
}

static const char *role_name(ds_role r) {
    return r == DS_ROLE_SYSTEM ? "system" : r == DS_ROLE_USER ? "user" : "assistant";
}

// llama2 (Meta's chat format): [optional system] then (user, assistant) pairs.
// Per pair: BOS, "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]" (the
// <<SYS>> block only in the first pair), "{assistant}" trained, EOS trained.
static int render_llama2(seqbuf *b, const ds_message *m, int nm, int bos, int eos) {
    int i = 0;
    const char *sys = NULL;
    if (nm > 0 && m[0].role == DS_ROLE_SYSTEM) sys = m[0].content, i = 1;
    if (i >= nm) return ql_err(QL_EFORMAT, "messages: no assistant turn (nothing to train)");
    for (int first = 1; i < nm; i += 2, first = 0) {
        if (m[i].role != DS_ROLE_USER)
            return ql_err(QL_EFORMAT,
                          "messages[%d]: the llama2 template needs user/assistant pairs after an optional first "
                          "system message, found %s",
                          i, role_name(m[i].role));
        if (b->open && i + 1 == nm) {  // the turn to answer
            QL_CHECK(push_id(b, bos, 0));
            if (first && sys) return push_text(b, 0, "[INST] <<SYS>>\n", sys, "\n<</SYS>>\n\n", m[i].content, " [/INST]");
            return push_text(b, 0, "[INST] ", m[i].content, " [/INST]", NULL, NULL);
        }
        if (i + 1 >= nm || m[i + 1].role != DS_ROLE_ASSISTANT)
            return ql_err(QL_EFORMAT, "messages[%d]: the llama2 template needs an assistant turn after each user turn",
                          i + 1);
        QL_CHECK(push_id(b, bos, 0));
        if (first && sys)
            QL_CHECK(push_text(b, 0, "[INST] <<SYS>>\n", sys, "\n<</SYS>>\n\n", m[i].content, " [/INST]"));
        else
            QL_CHECK(push_text(b, 0, "[INST] ", m[i].content, " [/INST]", NULL, NULL));
        QL_CHECK(push_text(b, 1, m[i + 1].content, NULL, NULL, NULL, NULL));
        QL_CHECK(push_id(b, eos, 1));
    }
    return QL_OK;
}

// chatml: non-assistant: "<|im_start|>{role}\n{content}<|im_end|>\n";
// assistant: "<|im_start|>assistant\n", then "{content}<|im_end|>" trained, EOS trained.
static int render_chatml(seqbuf *b, const ds_message *m, int nm, int eos) {
    for (int i = 0; i < nm; i++) {
        if (m[i].role == DS_ROLE_ASSISTANT) {
            QL_CHECK(push_text(b, 0, "<|im_start|>assistant\n", NULL, NULL, NULL, NULL));
            QL_CHECK(push_text(b, 1, m[i].content, "<|im_end|>", NULL, NULL, NULL));
            QL_CHECK(push_id(b, eos, 1));
        } else {
            QL_CHECK(push_text(b, 0, "<|im_start|>", role_name(m[i].role), "\n", m[i].content, "<|im_end|>\n"));
        }
    }
    return b->open ? push_text(b, 0, "<|im_start|>assistant\n", NULL, NULL, NULL, NULL) : QL_OK;
}

// zephyr: non-assistant: "<|{role}|>\n{content}", EOS (the "</s>" of the
// template); assistant: "<|assistant|>\n", then "{content}" trained, EOS trained.
static int render_zephyr(seqbuf *b, const ds_message *m, int nm, int eos) {
    for (int i = 0; i < nm; i++) {
        if (m[i].role == DS_ROLE_ASSISTANT) {
            QL_CHECK(push_text(b, 0, "<|assistant|>\n", NULL, NULL, NULL, NULL));
            QL_CHECK(push_text(b, 1, m[i].content, NULL, NULL, NULL, NULL));
            QL_CHECK(push_id(b, eos, 1));
        } else {
            QL_CHECK(push_text(b, 0, "<|", role_name(m[i].role), "|>\n", m[i].content, NULL));
            QL_CHECK(push_id(b, eos, 0));
        }
    }
    return b->open ? push_text(b, 0, "<|assistant|>\n", NULL, NULL, NULL, NULL) : QL_OK;
}

// Jinja's trim: content without leading and trailing whitespace.
static char *trimmed(const char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\v' || *s == '\f') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == '\v' ||
                 s[n - 1] == '\f'))
        n--;
    return strndup(s, n);
}

static int special_id(const seqbuf *b, const char *text, int *id) {
    *id = tok_piece_to_id(b->tok, text);
    return *id >= 0 ? QL_OK : ql_err(QL_EFORMAT, "the llama3 template needs the special token %s, which this tokenizer lacks", text);
}

// llama3 (Meta Llama 3): per message "<|start_header_id|>{role}<|end_header_id|>\n\n{content, trimmed}<|eot_id|>",
// the three markers as their special ids (the content is never read as markup);
// an assistant's content and its <|eot_id|> are trained. The prompt to answer ends
// with the assistant's header.
static int render_llama3(seqbuf *b, const ds_message *m, int nm) {
    int sh, eh, eot;
    QL_CHECK(special_id(b, "<|start_header_id|>", &sh));
    QL_CHECK(special_id(b, "<|end_header_id|>", &eh));
    QL_CHECK(special_id(b, "<|eot_id|>", &eot));
    for (int i = 0; i <= nm; i++) {
        if (i == nm && !b->open) break;
        int asst = i == nm || m[i].role == DS_ROLE_ASSISTANT;
        QL_CHECK(push_id(b, sh, 0));
        QL_CHECK(push_text(b, 0, i == nm ? "assistant" : role_name(m[i].role), NULL, NULL, NULL, NULL));
        QL_CHECK(push_id(b, eh, 0));
        if (i == nm) return push_text(b, 0, "\n\n", NULL, NULL, NULL, NULL);
        // "\n\n" then the content. Llama 3's pre-tokenizer always splits between the two
        // (\s*[\r\n]+ ends at the trimmed content's first character), so encoding them
        // apart gives the reference's ids, and lets the assistant's content alone be trained.
        char *c = trimmed(m[i].content);
        if (!c) return ql_err(QL_ENOMEM, "out of memory rendering a sample");
        int rc = push_text(b, 0, "\n\n", NULL, NULL, NULL, NULL);
        if (!rc) rc = push_text(b, asst, c, NULL, NULL, NULL, NULL);
        free(c);
        QL_CHECK(rc);
        QL_CHECK(push_id(b, eot, asst));
    }
    return QL_OK;
}

static int render(seqbuf *b, ds_format f, const ds_message *m, int nm, const dataset_options *opt, int bos,
                  int eos) {
    switch (f) {
    case DS_FORMAT_TEXT:
        QL_ASSERT(nm >= 1);
        if (opt->add_bos) QL_CHECK(push_id(b, bos, 0));
        QL_CHECK(push_text(b, 1, m[0].content, NULL, NULL, NULL, NULL));
        return push_id(b, eos, 1);
    case DS_FORMAT_PROMPT:
        QL_ASSERT(nm >= 2);
        if (opt->add_bos) QL_CHECK(push_id(b, bos, 0));
        QL_CHECK(push_text(b, 0, m[0].content, NULL, NULL, NULL, NULL));
        QL_CHECK(push_text(b, 1, m[1].content, NULL, NULL, NULL, NULL));
        return push_id(b, eos, 1);
    case DS_FORMAT_CHAT:
    case DS_FORMAT_SHAREGPT:
    case DS_FORMAT_ALPACA: {
        int has_assistant = 0;
        for (int i = 0; i < nm; i++) has_assistant |= m[i].role == DS_ROLE_ASSISTANT;
        if (!has_assistant && !b->open) return ql_err(QL_EFORMAT, "messages: no assistant turn (nothing to train)");
        if (opt->chat_template == DS_TEMPLATE_LLAMA2) return render_llama2(b, m, nm, bos, eos);
        // Llama 3's template writes bos_token itself ({% set content = bos_token + content %}),
        // so its BOS does not depend on add_bos (the tokenizer's post-processor)
        if (opt->chat_template == DS_TEMPLATE_LLAMA3) {
            QL_CHECK(push_id(b, bos, 0));
            return render_llama3(b, m, nm);
        }
        if (opt->add_bos) QL_CHECK(push_id(b, bos, 0));
        if (opt->chat_template == DS_TEMPLATE_CHATML) return render_chatml(b, m, nm, eos);
        return render_zephyr(b, m, nm, eos);
    }
    default: return ql_err(QL_EINVAL, "ds_render: unknown format %d", (int)f);
    }
}

static int render_all(int **ids, uint8_t **mask, int *n, ds_format f, const ds_message *m, int nm, const tokenizer *tok,
                      const dataset_options *opt, int open) {
    *ids = NULL, *n = 0;
    if (mask) *mask = NULL;
    int bos = opt->bos_id >= 0 ? opt->bos_id : tok_bos_id(tok);
    int eos = opt->eos_id >= 0 ? opt->eos_id : tok_eos_id(tok);
    if (eos < 0) return ql_err(QL_EINVAL, "dataset: the tokenizer has no EOS id and none was given");
    int chat = f == DS_FORMAT_CHAT || f == DS_FORMAT_ALPACA || f == DS_FORMAT_SHAREGPT;
    if (bos < 0 && (opt->add_bos || (chat && (opt->chat_template == DS_TEMPLATE_LLAMA2 || opt->chat_template == DS_TEMPLATE_LLAMA3))))
        return ql_err(QL_EINVAL, "dataset: the tokenizer has no BOS id and none was given");
    seqbuf b = {.tok = tok, .train_all = opt->train_on_inputs, .open = open};
    int rc = render(&b, f, m, nm, opt, bos, eos);
    if (rc != QL_OK) {
        free(b.ids);
        free(b.mask);
        return rc;
    }
    if (b.n > 0) b.mask[0] = 0;  // the first token is never predicted
    *ids = b.ids, *n = b.n;
    if (mask) *mask = b.mask;
    else free(b.mask);
    return QL_OK;
}

int ds_render(int **ids, uint8_t **mask, int *n, ds_format f, const ds_message *m, int nm, const tokenizer *tok,
              const dataset_options *opt) {
    return render_all(ids, mask, n, f, m, nm, tok, opt, 0);
}

int ds_render_prompt(int **ids, int *n, const ds_message *m, int nm, const tokenizer *tok, const dataset_options *opt) {
    *ids = NULL, *n = 0;
    if (nm < 1 || m[nm - 1].role != DS_ROLE_USER)
        return ql_err(QL_EFORMAT, "messages: the last message must be the user's turn to answer, found %s",
                      nm < 1 ? "no message" : role_name(m[nm - 1].role));
    return render_all(ids, NULL, n, DS_FORMAT_CHAT, m, nm, tok, opt, 1);
}
