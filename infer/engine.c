// engine.c: see engine.h.
#include "engine.h"

#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/fileio.h"
#include "../common/interrupt.h"
#include "../common/log.h"

static void req_fail(eng_req *r, const char *msg) {
    r->finish = "error";
    snprintf(r->err, sizeof r->err, "%s", msg);
    r->active = 0;
}

// Appends piece text; returns 1 when a stop string now ends the text (which is then
// cut before it).
static int req_append(eng_req *r, const char *txt, size_t len, size_t cap) {
    if (r->text_len + len >= cap) {  // cut at a character's start
        len = cap - 1 - r->text_len;
        while (len > 0 && ((unsigned char)txt[len] & 0xC0) == 0x80) len--;
    }
    memcpy(r->text + r->text_len, txt, len);
    r->text_len += len;
    r->text[r->text_len] = '\0';
    for (int i = 0; i < ENGINE_MAX_STOPS && r->stop[i]; i++) {
        const char *hit = r->stop[i][0] ? strstr(r->text, r->stop[i]) : NULL;
        if (hit) {
            r->text_len = (size_t)(hit - r->text);
            r->text[r->text_len] = '\0';
            return 1;
        }
    }
    return 0;
}

// Passes on the text no stop string can still claim: all of it when done, else
// all but the longest stop string's length - 1 bytes.
static void req_emit(eng_req *r, int done) {
    if (!r->on_text) return;
    size_t hold = 0;
    for (int i = 0; i < ENGINE_MAX_STOPS && r->stop[i] && !done; i++)
        if (strlen(r->stop[i]) > hold + 1) hold = strlen(r->stop[i]) - 1;
    size_t upto = r->text_len > hold ? r->text_len - hold : 0;
    while (!done && upto > r->emitted && ((unsigned char)r->text[upto] & 0xC0) == 0x80) upto--;  // whole characters
    if (upto > r->emitted) r->on_text(r->on_text_ctx, r->text + r->emitted, upto - r->emitted);
    if (upto > r->emitted) r->emitted = upto;
}

// Text cap per request: generous for the longest pieces (SentencePiece pieces are
// short; byte fallback emits at most 4 bytes per token).
static size_t text_cap(const eng_req *r) { return (size_t)r->max_tokens * 64 + 64; }

static int req_start(fwd_state *f, const tokenizer *tok, eng_req *r) {
    r->ids = malloc(sizeof(int) * (size_t)(r->max_tokens > 0 ? r->max_tokens : 1));
    r->text = malloc(text_cap(r));
    if (!r->ids || !r->text) return ql_err(QL_ENOMEM, "out of memory");
    r->text[0] = '\0';
    if (r->n_prompt < 1) { req_fail(r, "the prompt is empty"); return QL_OK; }
    if (r->n_prompt >= f->max_T) {
        char m[160];
        snprintf(m, sizeof m, "the prompt has %d tokens; the context holds %d", r->n_prompt, f->max_T);
        req_fail(r, m);
        return QL_OK;
    }
    if (r->cached < 0 || r->cached >= r->n_prompt || (r->cached > 0 && f->n_slots != 1)) {
        req_fail(r, "cached prefix out of range (it must leave a prompt token to run, in a one-slot batch)");
        return QL_OK;
    }
    r->done_prompt = r->pos = r->cached;
    if (r->max_tokens == 0) { r->finish = "length"; return QL_OK; }
    QL_CHECK(tok_stream_init(&r->ss, tok));
    for (int i = 0; i < r->n_prompt; i++) {  // the prompt conditions the first piece's space rule
        const char *txt;
        size_t len;
        QL_CHECK(tok_stream_push(r->ss, r->prompt[i], &txt, &len));
    }
    r->active = 1;
    return QL_OK;
}

static void req_finish(eng_req *r, const char *why) {
    const char *txt;
    size_t len;
    if (r->ss && strcmp(why, "stop") && tok_stream_finish(r->ss, &txt, &len) == QL_OK && len)
        req_append(r, txt, len, text_cap(r));
    r->finish = why;
    r->active = 0;
    req_emit(r, 1);
}

int engine_init(engine *e, fwd_state *f, const tokenizer *tok) {
    const int S = f->n_slots, V = f->m->cfg.vocab_size;
    memset(e, 0, sizeof *e);
    e->f = f, e->tok = tok;
    e->slot = calloc((size_t)S, sizeof *e->slot);
    e->tokens = malloc(sizeof(int) * (size_t)f->max_N);
    e->in_batch = malloc(sizeof(int) * (size_t)S);
    e->seqs = malloc(sizeof(fwd_seq) * (size_t)S);
    e->logits = malloc(sizeof(float) * (size_t)S * V);
    if (e->slot && e->tokens && e->in_batch && e->seqs && e->logits) return QL_OK;
    engine_free(e);
    return ql_err(QL_ENOMEM, "out of memory");
}

void engine_free(engine *e) {
    free(e->slot), free(e->tokens), free(e->in_batch), free(e->seqs), free(e->logits);
    memset(e, 0, sizeof *e);
}

int engine_free_slots(const engine *e) {
    int n = 0;
    for (int s = 0; s < e->f->n_slots; s++) n += e->slot[s] == NULL;
    return n;
}

int engine_active(const engine *e) { return e->f->n_slots - engine_free_slots(e); }

int engine_start(engine *e, eng_req *r) {
    int s = 0;
    while (s < e->f->n_slots && e->slot[s]) s++;
    QL_ASSERT(s < e->f->n_slots);
    r->slot = s;
    sampler_reset_history(&r->smp);  // penalties count this answer's tokens only
    QL_CHECK(req_start(e->f, e->tok, r));
    if (r->active) e->slot[s] = r;
    return QL_OK;
}

void engine_cancel(engine *e, eng_req *r) {
    if (!r->active) return;
    QL_ASSERT(e->slot[r->slot] == r);
    e->slot[r->slot] = NULL;
    r->active = 0;
    r->finish = "cancelled";
}

int engine_step(engine *e) {
    fwd_state *f = e->f;
    const int V = f->m->cfg.vocab_size, S = f->n_slots;
    // One step: every active sequence, in slot order, while tokens remain.
    int ns = 0, N = 0;
    for (int s = 0; s < S; s++) {
        if (!e->slot[s] || N >= f->max_N) continue;
        eng_req *q = e->slot[s];
        int k;
        if (q->done_prompt < q->n_prompt) {  // prefill, in chunks that fit the step
            k = q->n_prompt - q->done_prompt;
            if (k > f->max_N - N) k = f->max_N - N;
            memcpy(e->tokens + N, q->prompt + q->done_prompt, sizeof(int) * (size_t)k);
        } else {
            k = 1;
            e->tokens[N] = q->ids[q->n_ids - 1];
        }
        e->seqs[ns] = (fwd_seq){k, q->pos, s, q->adapter, q->scale};
        e->in_batch[ns++] = s;
        N += k;
    }
    e->last_batch = ns;
    if (ns == 0) return QL_OK;
    double t0 = time_now();
    int rc = fwd_batch(f, e->logits, e->tokens, e->seqs, ns, 0);
    e->st.steps++;
    for (int i = 0; i < ns && !rc; i++) {
        int s = e->in_batch[i];
        eng_req *q = e->slot[s];
        int prefill = q->done_prompt < q->n_prompt;
        q->pos += e->seqs[i].n;
        if (prefill) {
            q->done_prompt += e->seqs[i].n;
            e->st.prompt_tokens += e->seqs[i].n;
            if (q->done_prompt < q->n_prompt) continue;  // more prompt to go
        }
        int id = sampler_next(&q->smp, e->logits + (size_t)i * V, V);
        q->ids[q->n_ids++] = id;
        e->st.generated++;
        const char *why = NULL;
        if (q->stop_at_eos && config_is_eos(&f->m->cfg, id)) {
            why = "stop";
        } else {
            const char *txt = "";
            size_t len = 0;
            if (id < tok_vocab_size(e->tok)) rc = tok_stream_push(q->ss, id, &txt, &len);
            if (!rc && len && req_append(q, txt, len, text_cap(q))) why = "stop";
            if (!why) req_emit(q, 0);
        }
        if (!why && (q->n_ids >= q->max_tokens || q->pos >= f->max_T)) why = "length";
        if (why) {
            req_finish(q, why);
            e->slot[s] = NULL;
        }
    }
    e->st.seconds += time_now() - t0;
    return rc;
}

int engine_run(fwd_state *f, const tokenizer *tok, eng_req *r, int n, eng_stats *st) {
    engine e;
    memset(st, 0, sizeof *st);
    QL_CHECK(engine_init(&e, f, tok));
    double t0 = time_now();
    int rc = QL_OK, next = 0;  // the first request not yet started
    while (!rc) {
        while (!rc && next < n && engine_free_slots(&e) > 0) rc = engine_start(&e, &r[next++]);
        if (rc || engine_active(&e) == 0) break;
        crash_point("decode");  // a Ctrl-C here in tests (QLORA_CRASH_SIGNAL=INT)
        if (intr_requested()) {  // Ctrl-C (interrupt.h): every request ends with what it has
            for (int i = 0; i < n; i++)
                if (r[i].active) engine_cancel(&e, &r[i]);
                else if (i >= next) r[i].finish = "cancelled";
            break;
        }
        rc = engine_step(&e);
    }
    *st = e.st;
    st->seconds = time_now() - t0;
    engine_free(&e);
    return rc;
}

void eng_req_free(eng_req *r) {
    free(r->ids), free(r->text);
    tok_stream_free(r->ss);
    r->ids = NULL, r->text = NULL, r->ss = NULL;
}
