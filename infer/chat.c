// chat.c: see chat.h. One KV slot holds the conversation so far; `fed` mirrors
// the tokens in it, so a turn runs only what differs from the last one.
#include "chat.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef QLORA_HAVE_LIBEDIT
#include <histedit.h>
#endif

#include "../common/err.h"
#include "../common/interrupt.h"
#include "../model/forward.h"
#include "../common/log.h"
#include "engine.h"
#include "generate.h"
#include "store.h"

typedef struct {
    ds_message *m;
    int n, cap;
    int first;  // 1 when m[0] is the system prompt
} convo;

static int convo_add(convo *c, ds_role role, const char *text) {
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        ds_message *nm = realloc(c->m, sizeof *nm * (size_t)cap);
        if (!nm) return ql_err(QL_ENOMEM, "out of memory");
        c->m = nm, c->cap = cap;
    }
    char *s = strdup(text);
    if (!s) return ql_err(QL_ENOMEM, "out of memory");
    c->m[c->n++] = (ds_message){role, s};
    return QL_OK;
}

// Removes n messages starting at i.
static void convo_drop(convo *c, int i, int n) {
    if (n == 0) return;  // c->m may still be NULL: memmove's pointers must not be (UBSan)
    for (int k = i; k < i + n; k++) free((char *)c->m[k].content);
    memmove(c->m + i, c->m + i + n, sizeof *c->m * (size_t)(c->n - i - n));
    c->n -= n;
}

static void stream_out(void *ctx, const char *txt, size_t len) {
    fwrite(txt, 1, len, (FILE *)ctx);
    fflush((FILE *)ctx);
}

// The loaded entry with this serial, or NULL (0: the base).
static const store_entry *by_serial(const adapter_store *st, int serial) {
    for (int i = 0; i < st->n && serial; i++)
        if (st->e[i].serial == serial && st->e[i].ok) return &st->e[i];
    return NULL;
}

// The chat template of a turn answered by e (NULL: the base): --chat-template when
// given, else the one e was trained in (its training_record.json), else the base's.
// A --chat-template that differs from e's recorded one is said once per adapter.
static ds_template template_for(const chat_opts *co, const store_entry *e) {
    if (!e) return co->tmpl;
    static int said[64];  // by serial; past 64 adapters loaded, no more warnings
    int past = 1;
    return store_pick_template(e->name, e->has_tmpl, e->tmpl, co->tmpl_given, co->tmpl, co->tmpl, "answering in",
                               e->serial < 64 ? &said[e->serial] : &past);
}

static void list_adapters(const adapter_store *st, int cur, FILE *f) {
    fprintf(f, "%c base\n", cur ? ' ' : '*');
    for (int i = 0; i < st->n; i++) {
        const store_entry *e = &st->e[i];
        if (e->ok)
            fprintf(f, "%c %s (r %d, scale %g, %.1f MB)\n", e->serial == cur ? '*' : ' ', e->name, e->a.rank,
                    (double)e->scale, e->bytes / 1e6);
        else fprintf(f, "  %s: not loaded: %s\n", e->name, e->err);
    }
}

// Renders the conversation; drops the oldest exchanges (after the system
// prompt) until the prompt leaves room to answer in max_T; *fits = 0 when even
// the new message alone does not.
static int render_fit(convo *c, const tokenizer *tok, const dataset_options *dopt, int max_T, int **ids, int *n, int *fits) {
    for (*fits = 1;;) {
        QL_CHECK(ds_render_prompt(ids, n, c->m, c->n, tok, dopt));
        if (*n < max_T - 1) return QL_OK;
        free(*ids);
        *ids = NULL;
        if (c->n - c->first < 3) return *fits = 0, QL_OK;  // only the new question is left
        convo_drop(c, c->first, 2);
        log_info("chat: the conversation outgrew the context (%d tokens); dropped the oldest exchange", max_T);
    }
}

// ---- the line editor (libedit's own API) ----
// While a line is edited the terminal does not turn Ctrl-C into SIGINT (-isig):
// it is a key bound to "discard the line", so it works whatever the timing (a
// signal can land between two reads of the editor). During an answer the terminal
// is as usual and SIGINT stops the answer (interrupt.h).
typedef struct {
#ifdef QLORA_HAVE_LIBEDIT
    EditLine *el;
    History *h;
#endif
    int discard;
} line_editor;

#ifdef QLORA_HAVE_LIBEDIT
static char *editor_prompt(EditLine *el) {
    (void)el;
    return "you> ";
}

static unsigned char editor_discard(EditLine *el, int ch) {
    (void)ch;
    line_editor *ed;
    el_get(el, EL_CLIENTDATA, &ed);
    ed->discard = 1;
    return CC_EOF;
}

static int editor_open(line_editor *ed) {
    ed->el = el_init("qlora", stdin, stderr, stderr);
    ed->h = history_init();
    if (!ed->el || !ed->h) {
        if (ed->el) el_end(ed->el);
        if (ed->h) history_end(ed->h);
        return -1;
    }
    HistEvent ev;
    history(ed->h, &ev, H_SETSIZE, 1000);
    el_set(ed->el, EL_CLIENTDATA, ed);
    el_set(ed->el, EL_EDITOR, "emacs");  // arrows, Ctrl-A/E, Ctrl-R search
    el_set(ed->el, EL_HIST, history, ed->h);
    el_set(ed->el, EL_PROMPT, editor_prompt);
    el_set(ed->el, EL_ADDFN, "qlora-discard", "discard the line", editor_discard);
    el_set(ed->el, EL_BIND, "^C", "qlora-discard", NULL);
    el_set(ed->el, EL_SETTY, "-d", "-isig", NULL);
    el_source(ed->el, NULL);  // the user's ~/.editrc, if any
    return 0;
}

// The next line into *line (no newline), its length; -1 at Ctrl-D (end of input);
// *discarded set (and 0 returned) when Ctrl-C dropped the line.
static ssize_t editor_read(line_editor *ed, char **line, size_t *cap, int *discarded) {
    int n = 0;
    ed->discard = 0;
    const char *l = el_gets(ed->el, &n);
    if (ed->discard) {
        fputs("^C\n", stderr);
        *discarded = 1;
        return 0;
    }
    if (!l || n <= 0) return -1;
    size_t len = (size_t)n;
    while (len > 0 && (l[len - 1] == '\n' || l[len - 1] == '\r')) len--;
    if (len + 1 > *cap) {
        char *g = realloc(*line, len + 1);
        if (!g) return -1;
        *line = g, *cap = len + 1;
    }
    memcpy(*line, l, len);
    (*line)[len] = '\0';
    if (len) {
        HistEvent ev;
        history(ed->h, &ev, H_ENTER, *line);
    }
    return (ssize_t)len;
}

static void editor_close(line_editor *ed) {
    el_end(ed->el);
    history_end(ed->h);
}
#endif

int chat_run(model *m, const tokenizer *tok, ops *o, const chat_opts *co, FILE *in, FILE *out) {
    adapter_store st;
    int rc = store_open(&st, &m->cfg, co->adapter_dir, co->adapters, co->follow_symlinks);
    if (rc) return rc;
    const store_entry *e0 = NULL;
    if (co->adapter[0] && strcmp(co->adapter, "base")) {
        if (store_check_name(co->adapter, strlen(co->adapter))) rc = ql_err(QL_EINVAL, "--adapter: %s", ql_errmsg());
        else if (!(e0 = store_find(&st, co->adapter)))
            rc = ql_err(QL_EINVAL, "--adapter %s: not a loaded adapter of the store (see /adapters)", co->adapter);
        if (rc) {
            store_free(&st);
            return rc;
        }
    }
    int cur = e0 ? e0->serial : 0;  // the adapter answering (by serial: entries move as adapters come and go)
    int T = co->ctx > 0 ? co->ctx : m->cfg.max_pos < 2048 ? m->cfg.max_pos : 2048;
    if (T > m->cfg.max_pos) T = m->cfg.max_pos;
    fwd_state f = {0};
    // --n N: N answers a turn, one slot each (the prefix cache needs a single slot: N > 1 runs the whole prompt)
    const int nc = co->n_choices > 1 ? co->n_choices : 1;
    rc = fwd_init_slots(&f, m, o, T, T < 512 ? T : 512, nc);
    dataset_options dopt;  // each turn's, in the answering adapter's template
    ds_template tmpl = template_for(co, e0);
    convo c = {0};
    char **alt = calloc((size_t)nc, sizeof(char *));  // the last turn's answers (--n): /pick K keeps answer K
    int turn = 0;
    if (!rc && !alt) rc = ql_err(QL_ENOMEM, "out of memory");
    if (!rc && co->system[0]) rc = convo_add(&c, DS_ROLE_SYSTEM, co->system), c.first = 1;
    int *fed = malloc(sizeof(int) * (size_t)T), nfed = 0;  // the tokens in the KV cache
    int fed_with = -1;                                       // and the adapter that made them
    if (!rc && !fed) rc = ql_err(QL_ENOMEM, "out of memory");
    sampler smp;
    sampler_init(&smp, co->temperature, co->top_k, co->top_p, (uint64_t)co->seed);
    sampler_penalties(&smp, co->pen.repetition, co->pen.frequency, co->pen.presence, co->pen.min_p);
    int tty = isatty(fileno(in));
    if (!rc)
        fprintf(stderr, "qlora chat: %s template, context %d; answering with %s. /adapter NAME, /adapters, /load, /unload, /reset, "
                        "/quit%s; Ctrl-C stops an answer, Ctrl-D leaves\n", ds_template_name(tmpl), T, e0 ? e0->name : "base",
                nc > 1 ? ", /pick K" : "");
    char *line = NULL;
    size_t cap = 0;
    // A terminal gets line editing and history (libedit: arrow keys, Ctrl-R); the
    // prompt goes to stderr, so that stdout holds only the answers
    line_editor ed = {0};
    int edit = 0;
#ifdef QLORA_HAVE_LIBEDIT
    edit = tty && in == stdin && editor_open(&ed) == 0;
#endif
    // Ctrl-C stops the answer being generated (back to the prompt); at a terminal's
    // prompt it discards the line (twice at once quits); Ctrl-D or /quit leaves
    intr_install(NULL);
    while (!rc) {
        ssize_t len;
        if (edit) {
#ifdef QLORA_HAVE_LIBEDIT
            int discarded = 0;
            len = editor_read(&ed, &line, &cap, &discarded);
            if (discarded) continue;  // Ctrl-C: a fresh line
            if (len < 0) break;       // Ctrl-D
#endif
        } else {
            if (tty) fprintf(stderr, "you> "), fflush(stderr);
            len = getline(&line, &cap, in);
            if (len < 0) break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (!line[0]) continue;
        if (line[0] == '/') {
            char *arg = strchr(line, ' ');
            if (arg) *arg++ = '\0';
            while (arg && *arg == ' ') arg++;
            if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
            if (!strcmp(line, "/adapters")) list_adapters(&st, cur, out);
            else if (!strcmp(line, "/load") && arg && *arg) {
                rc = store_add(&st, &m->cfg, co->adapter_dir, arg);
                if (rc == QL_ENOMEM) break;
                const store_entry *e = rc ? NULL : &st.e[st.n - 1];
                if (rc) fprintf(out, "(%s)\n", ql_errmsg());
                else if (!e->ok) {
                    fprintf(out, "(%s: not loaded: %s)\n", e->name, e->err);
                    store_drop(&st, e->name);
                } else
                    fprintf(out, "(loaded %s: r %d, %.1f MB in %.1f ms; /adapter %s to use it)\n", e->name, e->a.rank,
                            e->bytes / 1e6, e->load_s * 1e3, e->name);
                rc = QL_OK;
            } else if (!strcmp(line, "/unload") && arg && *arg) {
                const store_entry *e = store_find(&st, arg);
                int was = e && e->serial == cur;
                if (e) fwd_forget_adapter(&f, &e->a);
                if (store_drop(&st, arg)) fprintf(out, "(%s)\n", ql_errmsg());
                else fprintf(out, "(unloaded %s%s)\n", arg, was ? "; answering with base" : "");
                if (was) cur = 0;
            }
            else if (!strcmp(line, "/reset")) {
                convo_drop(&c, c.first, c.n - c.first);
                fprintf(out, "(conversation cleared)\n");
            } else if (!strcmp(line, "/adapter") && arg && *arg) {
                int base = !strcmp(arg, "base") || !strcmp(arg, "none");
                const store_entry *e = base ? NULL : store_find(&st, arg);
                if (!base && store_check_name(arg, strlen(arg))) fprintf(out, "(%s)\n", ql_errmsg());
                else if (e || base) {
                    cur = e ? e->serial : 0;
                    ds_template t = template_for(co, e);
                    fprintf(out, "(answering with %s%s%s)\n", e ? e->name : "base", t != tmpl ? ", chat template " : "",
                            t != tmpl ? ds_template_name(t) : "");
                } else fprintf(out, "(no loaded adapter '%s'; /adapters lists them)\n", arg);
            } else if (!strcmp(line, "/pick") && arg && *arg) {
                int k = atoi(arg);
                if (nc < 2 || k < 1 || k > nc || !alt[k - 1] || c.n == 0 || c.m[c.n - 1].role != DS_ROLE_ASSISTANT)
                    fprintf(out, "(/pick K: K from 1 to %d, after a turn with --n answers)\n", nc);
                else {
                    convo_drop(&c, c.n - 1, 1);
                    rc = convo_add(&c, DS_ROLE_ASSISTANT, alt[k - 1]);
                    fprintf(out, "(kept answer %d)\n", k);
                }
            } else fprintf(out, "(commands: /adapter NAME, /adapters, /load NAME|PATH[:scale], /unload NAME, /reset, %s/quit)\n",
                           nc > 1 ? "/pick K, " : "");
            fflush(out);
            continue;
        }
        const store_entry *ce = by_serial(&st, cur);
        tmpl = template_for(co, ce);  // the answering adapter's own template
        prompt_options(&dopt, m, tmpl);
        rc = convo_add(&c, DS_ROLE_USER, line);
        int *ids = NULL, n = 0, fits = 1;
        if (!rc) rc = render_fit(&c, tok, &dopt, T, &ids, &n, &fits);
        if (rc) break;
        if (!fits) {
            fprintf(out, "(that message does not fit the context of %d tokens)\n", T);
            convo_drop(&c, c.n - 1, 1);
            continue;
        }
        int keep = 0;  // the prefix the cache already holds
        if (fed_with == cur && nc == 1)
            while (keep < nfed && keep < n - 1 && fed[keep] == ids[keep]) keep++;
        eng_req r[nc];
        for (int k = 0; k < nc; k++) {
            r[k] = (eng_req){.prompt = ids, .n_prompt = n, .max_tokens = co->max_tokens < T - n ? co->max_tokens : T - n,
                             .stop_at_eos = 1, .smp = smp, .cached = keep};
            if (nc == 1) r[k].on_text = stream_out, r[k].on_text_ctx = out;  // N answers are printed when done
            else sampler_init(&r[k].smp, co->temperature, co->top_k, co->top_p,
                              (uint64_t)co->seed + (uint64_t)turn * (uint64_t)nc + (uint64_t)k),
                 sampler_penalties(&r[k].smp, co->pen.repetition, co->pen.frequency, co->pen.presence, co->pen.min_p);
            if (ce) r[k].adapter = &ce->a, r[k].scale = ce->scale;
            const char *const *ts = ds_template_stops(tmpl);
            for (int i = 0; ts[i]; i++) r[k].stop[i] = ts[i];
        }
        if (nc == 1) fprintf(out, "%s> ", ce ? ce->name : "base");
        fflush(out);
        eng_stats es;
        intr_clear();  // a Ctrl-C pressed at the prompt does not stop this answer
        rc = engine_run(&f, tok, r, nc, &es);
        turn++;
        for (int k = 0; k < nc && !rc && nc > 1; k++) {
            fprintf(out, "%s [%d/%d]> %s%s\n", ce ? ce->name : "base", k + 1, nc, r[k].text ? r[k].text : "",
                    r[k].finish && !strcmp(r[k].finish, "cancelled") ? " (stopped)" : "");
            free(alt[k]);
            alt[k] = strdup(r[k].text ? r[k].text : "");
        }
        if (!rc && nc == 1 && r[0].finish && !strcmp(r[0].finish, "cancelled")) fprintf(out, " (stopped)");
        intr_clear();
        if (nc == 1) fprintf(out, "\n");
        else if (!rc) fprintf(out, "(answer 1 goes on in the conversation; /pick K keeps answer K instead)\n");
        fflush(out);
        if (!rc && !strcmp(r[0].finish, "error")) rc = ql_err(QL_EINVAL, "chat: %s", r[0].err);
        if (!rc) {
            smp = r[0].smp;
            // the cache (one slot) now holds the prompt and every generated token but the last
            nfed = n;
            memcpy(fed, ids, sizeof(int) * (size_t)n);
            for (int i = 0; i + 1 < r[0].n_ids && nfed < T; i++) fed[nfed++] = r[0].ids[i];
            fed_with = cur;
            rc = convo_add(&c, DS_ROLE_ASSISTANT, r[0].text);
            log_debug("chat: %d prompt tokens (%d cached), %d generated in %.2f s", n, keep, r[0].n_ids, es.seconds);
        }
        for (int k = 0; k < nc; k++) eng_req_free(&r[k]);
        free(ids);
    }
    intr_restore();
#ifdef QLORA_HAVE_LIBEDIT
    if (edit) editor_close(&ed);
#endif
    for (int k = 0; alt && k < nc; k++) free(alt[k]);
    free(alt);
    free(line);
    free(fed);
    convo_drop(&c, 0, c.n);
    free(c.m);
    fwd_free(&f);
    store_free(&st);
    return rc;
}
