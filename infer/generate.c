// generate.c: see generate.h.
#include "generate.h"

#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/fileio.h"
#include "../common/interrupt.h"
#include "../common/log.h"

int tokenize_prompt(const model *m, const tokenizer *tok, const char *text, int **ids_out, int *n_out) {
    int *ids, n;
    QL_CHECK(tok_encode(tok, text, strlen(text), TOK_SPECIAL, &ids, &n));
    int bos = m->cfg.add_bos && m->cfg.bos_id >= 0;
    int *all = malloc(sizeof(int) * (size_t)(n + 1));
    if (!all) { free(ids); return ql_err(QL_ENOMEM, "out of memory"); }
    if (bos) all[0] = m->cfg.bos_id;
    memcpy(all + bos, ids, sizeof(int) * (size_t)n);
    free(ids);
    *ids_out = all;
    *n_out = n + bos;
    return QL_OK;
}

void prompt_options(dataset_options *o, const model *m, ds_template t) {
    dataset_options_default(o);
    o->chat_template = t, o->add_bos = m->cfg.add_bos;
    o->bos_id = m->cfg.bos_id, o->eos_id = m->cfg.eos_id;
}

int generate(fwd_state *f, const tokenizer *tok, sampler *smp, const gen_options *opt, const int *prompt, int n_prompt,
             FILE *out, int *ids_out, gen_stats *st) {
    const model_config *c = &f->m->cfg;
    memset(st, 0, sizeof *st);
    if (n_prompt < 1) return ql_err(QL_EINVAL, "the prompt is empty (no tokens and no BOS)");
    if (n_prompt >= f->max_T)
        return ql_err(QL_EINVAL, "the prompt has %d tokens; the context holds %d", n_prompt, f->max_T);
    float *logits = malloc(sizeof(float) * (size_t)c->vocab_size);
    tok_stream *ss = NULL;
    int rc = logits ? tok_stream_init(&ss, tok) : ql_err(QL_ENOMEM, "out of memory");
    // the prompt's own text is not printed, but it conditions the first piece's space rule
    for (int i = 0; i < n_prompt && !rc; i++) {
        const char *txt;
        size_t len;
        rc = tok_stream_push(ss, prompt[i], &txt, &len);
    }
    double t0 = time_now();
    int max_chunk = opt->max_prefill > 0 && opt->max_prefill < f->max_N ? opt->max_prefill : f->max_N;
    for (int p = 0; p < n_prompt && !rc; p += max_chunk) {
        int n = n_prompt - p < max_chunk ? n_prompt - p : max_chunk;
        rc = fwd_forward(f, logits, prompt + p, n, p, 0);
    }
    double t1 = time_now();
    st->prompt_tokens = n_prompt;
    st->prefill_s = t1 - t0;
    int pos = n_prompt;
    while (!rc && st->generated < opt->max_tokens) {
        int next = sampler_next(smp, logits, c->vocab_size);
        if (ids_out) ids_out[st->generated] = next;
        st->generated++;
        if (opt->stop_at_eos && config_is_eos(c, next)) break;
        const char *txt = "";
        size_t len = 0;
        // a padded vocabulary (vocab_size > the tokenizer's pieces) has ids with no text
        if (next < tok_vocab_size(tok)) rc = tok_stream_push(ss, next, &txt, &len);
        if (!rc && out && len) {
            fwrite(txt, 1, len, out);
            fflush(out);
        }
        if (rc || st->generated >= opt->max_tokens || pos >= f->max_T) break;
        crash_point("decode");  // a Ctrl-C here in tests (QLORA_CRASH_SIGNAL=INT)
        if (intr_requested()) break;  // Ctrl-C (interrupt.h): stop with what was generated
        rc = fwd_forward(f, logits, &next, 1, pos++, 0);
    }
    if (!rc && ss) {
        const char *txt;
        size_t len;
        if (tok_stream_finish(ss, &txt, &len) == QL_OK && out && len) fwrite(txt, 1, len, out);
    }
    st->decode_s = time_now() - t1;
    tok_stream_free(ss);
    free(logits);
    return rc;
}
