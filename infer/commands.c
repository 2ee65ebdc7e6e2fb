// commands.c: qlora infer, eval and quantize.
#include "commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/cli.h"
#include "../common/err.h"
#include "../common/interrupt.h"
#include "../model/forward.h"
#include "../common/log.h"
#include "../model/model.h"
#include "../common/tokenizer.h"
#include "../train/peft.h"
#include "../common/json.h"
#include "../datasets/dataset.h"
#include "chat.h"
#include "engine.h"
#include "eval.h"
#include "generate.h"
#include "requests.h"
#include "sample.h"
#include "store.h"

static int fail(const char *cmd, int rc) {
    fprintf(stderr, "qlora %s: error: %s\n", cmd, ql_errmsg());
    return rc == QL_EINVAL ? 2 : 1;
}

int session_open(session *s, const char *base, const char *base_dtype, const char *backend, int threads) {
    memset(s, 0, sizeof *s);
    int bd = base_dtype_parse(base_dtype);
    if (bd < 0) return ql_err(QL_EINVAL, "--base-dtype: expected nf4, f16 or f32, found '%s'", base_dtype);
    s->o = ops_new(backend, threads);  // first: a bad --backend is a usage error
    if (!s->o) return QL_EINVAL;
    double t0 = time_now();
    QL_CHECK(model_load(&s->m, base, (dtype)bd));
    size_t np;
    size_t lb = model_linear_bytes(&s->m, &np);
    log_info("loaded %s in %.2f s: %d layers, dim %d, vocab %d, linear weights %s %.1f MB (%.4f bytes/param)", base,
             time_now() - t0, s->m.cfg.n_layers, s->m.cfg.dim, s->m.cfg.vocab_size, base_dtype_name(s->m.base_dtype),
             lb / 1e6, (double)lb / (double)np);
    int rc = tok_load_bytes(&s->tok, (tok_kind)s->m.tokenizer_kind, s->m.tokenizer, s->m.tokenizer_len, base);
    if (rc) return ql_err(rc, "%s: tokenizer: %s", base, ql_errmsg());
    if (tok_vocab_size(s->tok) > s->m.cfg.vocab_size)
        return ql_err(QL_EFORMAT, "%s: the tokenizer has %d pieces but the model's vocab_size is %d", base,
                      tok_vocab_size(s->tok), s->m.cfg.vocab_size);
    log_info("backend: %s", s->o->name);
    return QL_OK;
}

void session_close(session *s) {
    ops_delete(s->o);
    tok_free(s->tok);
    model_free(&s->m);
}

// --adapter DIR: load a PEFT adapter directory against the model's config and,
// when f is not NULL, apply it to f. An empty dir is no adapter.
static int adapter_open(lora_adapter *a, fwd_state *f, const model *m, const char *dir) {
    if (!dir[0]) return QL_OK;
    int rc = lora_load_peft_resident(a, &m->cfg, dir);
    if (rc) return rc;
    int np = 0;
    for (int i = 0; i < a->n_layers * LORA_NMODULES; i++) np += lora_pair_on(&a->w[i]);
    log_info("adapter %s: r %d, alpha %g, scaling %g, %d of %d linears", dir, a->rank, (double)a->alpha,
             (double)a->scaling, np, a->n_layers * LORA_NMODULES);
    return f ? fwd_set_adapter(f, a) : QL_OK;
}

typedef struct {
    int max_tokens, top_k, seed, stop_at_eos, with_base, json, n_choices, ctx;
    float temperature, top_p;
    sample_penalties pen;
    int tmpl_mode;      // TMPL_AUTO, TMPL_GIVEN (tmpl for every prompt) or TMPL_NONE (raw prompts)
    ds_template tmpl;
} fanout_opts;

enum { TMPL_AUTO, TMPL_GIVEN, TMPL_NONE };

// --prompt as target e sees it (NULL: the base): a user turn in the chat template
// e was trained in (TMPL_AUTO and a training_record.json that names one), or in
// --chat-template (TMPL_GIVEN; a different recorded one is warned about); else the
// raw text.
static int target_prompt(const session *s, const char *prompt, const char *name, int has_tmpl, ds_template rec,
                         int mode, ds_template given, int **ids, int *n) {
    ds_template t = store_pick_template(name, has_tmpl, rec, mode == TMPL_GIVEN, given, rec, "its prompt is rendered in", NULL);
    if (mode == TMPL_NONE || (mode == TMPL_AUTO && !has_tmpl)) return tokenize_prompt(&s->m, s->tok, prompt, ids, n);
    ds_message um = {DS_ROLE_USER, prompt};
    dataset_options dopt;
    prompt_options(&dopt, &s->m, t);
    if (mode == TMPL_AUTO) log_info("%s: the prompt is a user turn in its chat template %s (its training_record.json)", name,
                                    ds_template_name(rec));
    return ds_render_prompt(ids, n, &um, 1, s->tok, &dopt);
}

// Fan-out: one prompt through the base (with --with-base) and every chosen adapter
// in one batch, each target's prompt in its own chat template (target_prompt), with
// --n answers per target (seed + k); answers printed in labelled blocks (or JSON) in
// the store's order.
static int fanout(session *s, const adapter_store *st, const char *prompt, const fanout_opts *fo) {
    const int nc = fo->n_choices;
    int nt = fo->with_base, nbad = 0, rc = QL_OK;
    for (int i = 0; i < st->n; i++) nt += st->e[i].ok;
    int n = nt * nc;
    eng_req *r = calloc((size_t)(n > 0 ? n : 1), sizeof(eng_req));
    int **tids = calloc((size_t)(nt > 0 ? nt : 1), sizeof(int *));
    if (!r || !tids) { free(r), free(tids); return ql_err(QL_ENOMEM, "out of memory"); }
    int k = 0, t = 0, nids = 0;
    long long T = 0, all_prompt = 0;
    for (int i = -1; i < st->n && !rc; i++) {
        if (i < 0 ? !fo->with_base : !st->e[i].ok) continue;
        const store_entry *e = i < 0 ? NULL : &st->e[i];
        rc = target_prompt(s, prompt, e ? e->name : "base", e && e->has_tmpl, e ? e->tmpl : fo->tmpl, fo->tmpl_mode,
                           fo->tmpl, &tids[t], &nids);
        if (rc) break;
        long long want = fo->ctx > 0 ? fo->ctx : (long long)nids + fo->max_tokens;
        if (want > T) T = want;
        all_prompt += nids;
        for (int c = 0; c < nc; c++, k++) {
            r[k] = (eng_req){.prompt = tids[t], .n_prompt = nids, .max_tokens = fo->max_tokens, .stop_at_eos = fo->stop_at_eos};
            if (e) r[k].adapter = &e->a, r[k].scale = e->scale;
            // every target draws the same numbers: choice c of each has seed + c
            sampler_init(&r[k].smp, fo->temperature, fo->top_k, fo->top_p, (uint64_t)fo->seed + (uint64_t)c);
            sampler_penalties(&r[k].smp, fo->pen.repetition, fo->pen.frequency, fo->pen.presence, fo->pen.min_p);
        }
        t++;
    }
    if (T > s->m.cfg.max_pos) T = s->m.cfg.max_pos;
    fwd_state f = {0};
    int max_N = all_prompt * nc < 512 ? (int)(all_prompt * nc) : 512;
    if (!rc && n) rc = fwd_init_slots(&f, &s->m, s->o, (int)T, max_N > n ? max_N : n, n);
    eng_stats es = {0};
    if (!rc && n) rc = engine_run(&f, s->tok, r, n, &es);
    if (!rc) {
        if (fo->json) {
            char *q = json_quote(prompt);
            printf("{\"prompt\": %s, \"results\": [", q ? q : "null");
            free(q);
        }
        int first = 1;
        for (int i = -1, j = 0; i < st->n; i++) {  // the same order as the requests, bad adapters in place
            int bad = i >= 0 && !st->e[i].ok;
            if (i < 0 && !fo->with_base) continue;
            const char *name = i < 0 ? "base" : st->e[i].name;
            char *qn = fo->json ? json_quote(name) : NULL;
            if (bad) {
                nbad++;
                if (fo->json) {
                    char *qe = json_quote(st->e[i].err);
                    printf("%s\n  {\"adapter\": %s, \"error\": %s}", first ? "" : ",", qn, qe);
                    free(qe);
                } else {
                    printf("=== %s: not loaded ===\n%s\n\n", name, st->e[i].err);
                }
            } else for (int c = 0; c < nc; c++) {
                eng_req *q = &r[j++];
                if (fo->json) {
                    char *qt = json_quote(q->text ? q->text : "");
                    char idx[32] = "";
                    if (nc > 1) snprintf(idx, sizeof idx, ", \"index\": %d", c);
                    printf("%s\n  {\"adapter\": %s%s, \"scale\": %g, \"text\": %s, \"tokens\": %d, \"finish_reason\": \"%s\"}",
                           first && !c ? "" : ",", qn, idx, i < 0 ? 0.0 : (double)st->e[i].scale, qt, q->n_ids,
                           q->finish ? q->finish : "error");
                    free(qt);
                } else {
                    char of[32] = "";
                    if (nc > 1) snprintf(of, sizeof of, " [%d/%d]", c + 1, nc);
                    if (i < 0) printf("=== base%s ===\n", of);
                    else printf("=== %s (scale %g)%s ===\n", name, (double)st->e[i].scale, of);
                    printf("%s\n\n", q->finish && !strcmp(q->finish, "error") ? q->err : q->text ? q->text : "");
                }
            }
            free(qn);
            first = 0;
        }
        if (fo->json) printf("\n]}\n");
        fflush(stdout);
        int nerr = 0;  // a prompt longer than the context, say: in its block, and the exit status
        for (int i = 0; i < n; i++) nerr += r[i].finish && !strcmp(r[i].finish, "error");
        if (nerr) rc = ql_err(QL_EINVAL, "%d of %d answers failed (their blocks say why)", nerr, n);
        log_info("%d sequences in one batch: %lld prompt + %lld generated tokens in %d steps, %.2f s (%.1f tok/s)", n,
                 es.prompt_tokens, es.generated, es.steps, es.seconds, es.generated / (es.seconds + 1e-9));
    }
    for (int i = 0; i < n; i++) eng_req_free(&r[i]);
    for (int i = 0; i < nt; i++) free(tids[i]);
    free(r), free(tids);
    if (f.o) fwd_free(&f);
    if (!rc && nbad) rc = ql_err(QL_EFORMAT, "%d of %d adapters were not loaded (see their blocks)", nbad, st->n);
    return rc;
}

// After a command that intr_install'ed: 130 when Ctrl-C stopped it (said on
// stderr), else 0; SIGINT gets its default back either way.
static int interrupted_code(void) {
    int hit = intr_requested();
    intr_restore();
    if (hit) log_warn("interrupted: the output holds what was generated until Ctrl-C");
    return hit ? QL_EXIT_INTERRUPTED : 0;
}

int cmd_infer(int argc, char **argv) {
    const char *base, *prompt, *base_dtype, *backend, *adapter_dir, *store_dir, *store_list, *format, *requests,
        *out, *tmpl_name;
    int max_tokens, top_k, seed, threads, ctx, verbose, no_stop, with_base, batch, follow, n_choices;
    float temperature, top_p;
    sample_penalties pen;
    cli_opt opts[] = {
        {"--base", OPT_STR, &base, NULL, "model: a Hugging Face directory or a qlora base file"},
        {"--prompt", OPT_STR, &prompt, "", "the prompt text (required unless --requests)"},
        {"--requests", OPT_STR, &requests, "", "a JSONL file of requests (id, prompt|messages, adapter as NAME or "
                                               "NAME:SCALE, scale, max_tokens, temperature, top_p, top_k, seed, stop, "
                                               "repetition_penalty, frequency_penalty, presence_penalty, min_p; "
                                               "other fields are ignored with a warning); JSONL results in input order"},
        {"--out", OPT_STR, &out, "", "--requests: write the results to this file (atomically); empty is stdout"},
        {"--batch", OPT_INT, &batch, "16", "--requests: sequences in one batch at most"},
        {"--chat-template", OPT_STR, &tmpl_name, "",
         "llama2, chatml, zephyr or llama3: --prompt becomes a user turn in it for every target; none: the raw prompt; "
         "empty: for an adapter trained on chat data a user turn in its template (its training_record.json), else the "
         "raw prompt (--requests \"messages\": the adapter's template, else the base's, else llama2)"},
        {"--n", OPT_INT, &n_choices, "1", "answers per target (1 to 16), the k-th with --seed + k; more than 1 prints labelled blocks"},
        {"--adapter", OPT_STR, &adapter_dir, "", "a LoRA adapter directory (PEFT layout) to apply; empty is none"},
        {"--adapter-dir", OPT_STR, &store_dir, "", "a LoRA store: each subfolder is one adapter (fan-out mode)"},
        {"--adapters", OPT_STR, &store_list, "",
         "fan-out to these adapters: names of folders in --adapter-dir (without it: paths), name:scale; empty is all"},
        {"--follow-symlinks", OPT_FLAG, &follow, NULL, "use links in --adapter-dir that point out of it"},
        {"--with-base", OPT_FLAG, &with_base, NULL, "fan-out: add the base model's answer"},
        {"--format", OPT_STR, &format, "text", "fan-out output: text (labelled blocks) or json"},
        {"--max-tokens", OPT_INT, &max_tokens, "128", "tokens to generate at most"},
        {"--temperature", OPT_FLOAT, &temperature, "0.8", "sampling temperature; 0 is greedy"},
        {"--top-k", OPT_INT, &top_k, "40", "sample from the k most likely tokens; 0 is off"},
        {"--top-p", OPT_FLOAT, &top_p, "0.95", "nucleus sampling mass; 1 is off"},
        {"--seed", OPT_INT, &seed, "1", "random seed for sampling"},
        {"--repetition-penalty", OPT_FLOAT, &pen.repetition, "1", "divide the logit of a token this answer already has (x it when negative); 1 is off"},
        {"--frequency-penalty", OPT_FLOAT, &pen.frequency, "0", "subtract this times the token's count in the answer so far; 0 is off"},
        {"--presence-penalty", OPT_FLOAT, &pen.presence, "0", "subtract this from every token the answer already has; 0 is off"},
        {"--min-p", OPT_FLOAT, &pen.min_p, "0", "keep only tokens at least this times as likely as the most likely; 0 is off"},
        {"--ignore-eos", OPT_FLAG, &no_stop, NULL, "keep generating after the end-of-sequence token"},
        {"--base-dtype", OPT_STR, &base_dtype, "nf4", "linear weights of a model directory: nf4, f16 or f32"},
        {"--backend", OPT_STR, &backend, "auto", "auto (the GPU when one is usable, else the CPU), cpu or cuda"},
        {"--threads", OPT_INT, &threads, "0", "CPU threads; 0 is all cores"},
        {"--ctx", OPT_INT, &ctx, "0", "context length; 0 is prompt + max-tokens, at most max_position_embeddings"},
        {"--verbose", OPT_FLAG, &verbose, NULL, "log more"},
    };
    int n = (int)(sizeof opts / sizeof *opts);
    int pr = cli_parse("infer", "Generate text from a prompt. stdout carries only the generated text.", opts, n, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (verbose) log_set_level(LOG_DEBUG);
    if (max_tokens < 0 || ctx < 0 || temperature < 0 || top_k < 0 || top_p <= 0 || top_p > 1) {
        fprintf(stderr, "qlora infer: error: --max-tokens, --ctx, --temperature and --top-k must be >= 0, --top-p in (0, 1]\n");
        return 2;
    }
    const char *bad_pen = sample_penalties_check(&pen);
    if (bad_pen) {
        fprintf(stderr, "qlora infer: error: --%s\n", bad_pen);
        return 2;
    }
    int fan = store_dir[0] || store_list[0];
    ds_template tmpl = DS_TEMPLATE_LLAMA2;
    const int tmode = !tmpl_name[0] ? TMPL_AUTO : !strcmp(tmpl_name, "none") ? TMPL_NONE : TMPL_GIVEN;
    if (tmode == TMPL_GIVEN && ds_template_parse(&tmpl, tmpl_name)) return fail("infer", QL_EINVAL);
    if (n_choices < 1 || n_choices > 16) {
        fprintf(stderr, "qlora infer: error: --n: expected 1 to 16, found %d\n", n_choices);
        return 2;
    }
    if (!!prompt[0] == !!requests[0]) {
        fprintf(stderr, "qlora infer: error: give --prompt or --requests (one of them)\n");
        return 2;
    }
    if (requests[0] && (adapter_dir[0] || with_base || strcmp(format, "text"))) {
        fprintf(stderr, "qlora infer: error: --requests: each line names its adapter (\"adapter\" from --adapter-dir); "
                        "--adapter, --with-base and --format do not apply\n");
        return 2;
    }
    struct stat rs, os;  // the results would replace the requests they answer
    if (requests[0] && out[0] && stat(requests, &rs) == 0 && stat(out, &os) == 0 && rs.st_dev == os.st_dev &&
        rs.st_ino == os.st_ino) {
        fprintf(stderr, "qlora infer: error: --out %s is the --requests file; write the results elsewhere\n", out);
        return 2;
    }
    if (batch < 1 || batch > 512) {
        fprintf(stderr, "qlora infer: error: --batch: expected 1 to 512, found %d\n", batch);
        return 2;
    }
    if (strcmp(format, "text") && strcmp(format, "json")) {
        fprintf(stderr, "qlora infer: error: --format: expected text or json, found '%s'\n", format);
        return 2;
    }
    if (fan && adapter_dir[0]) {
        fprintf(stderr, "qlora infer: error: --adapter is one adapter; with --adapter-dir/--adapters name it in --adapters\n");
        return 2;
    }
    session s;
    int rc = session_open(&s, base, base_dtype, backend, threads);
    // Ctrl-C: generation stops and what each request has is printed (written), exit 130
    intr_install("\nCtrl-C: stopping; what was generated is kept (Ctrl-C again to quit at once)\n");
    if (!rc && requests[0] && tmode != TMPL_GIVEN) rc = ds_template_choose(&tmpl, "", s.m.chat_template);
    if (!rc && requests[0]) {
        requests_opts ro = {requests, out, store_dir, store_list, batch, ctx, tmpl, max_tokens, top_k, seed, !no_stop,
                            temperature, top_p, follow, pen, n_choices, tmode == TMPL_GIVEN};
        int failed = 0;
        rc = requests_run(&s.m, s.tok, s.o, &ro, &failed);
        if (!rc && failed) rc = ql_err(QL_EFORMAT, "%d requests failed (their results say why)", failed);
    }
    if (rc || requests[0]) {
        int code = rc ? fail("infer", rc) : interrupted_code();
        session_close(&s);
        return code;
    }
    if (n_choices > 1 && !fan) {  // several answers: a fan-out over the one target
        fan = 1;
        if (adapter_dir[0]) store_list = adapter_dir, adapter_dir = "";
        else with_base = 1;
    }
    if (fan) {
        adapter_store st;
        rc = store_open(&st, &s.m.cfg, store_dir, store_list, follow);
        fanout_opts fo = {max_tokens, top_k, seed, !no_stop, with_base, !strcmp(format, "json"), n_choices, ctx,
                          temperature, top_p, pen, tmode, tmpl};
        if (!rc) rc = fanout(&s, &st, prompt, &fo);
        store_free(&st);
        int code = rc ? fail("infer", rc) : interrupted_code();
        session_close(&s);
        return code;
    }
    int *ids = NULL, nids = 0;
    ds_template rec = tmpl;
    int has_rec = adapter_dir[0] && store_record_template(adapter_dir, &rec);
    rc = target_prompt(&s, prompt, adapter_dir[0] ? adapter_dir : "base", has_rec, rec, tmode, tmpl, &ids, &nids);
    fwd_state f = {0};
    if (!rc) {
        long long want = ctx > 0 ? ctx : (long long)nids + max_tokens;
        int T = want > s.m.cfg.max_pos ? s.m.cfg.max_pos : (int)want;
        if (nids >= T) rc = ql_err(QL_EINVAL, "the prompt has %d tokens; the context holds %d (--ctx, max_position_embeddings %d)", nids, T, s.m.cfg.max_pos);
        else rc = fwd_init(&f, &s.m, s.o, T, T < 512 ? T : 512);
    }
    lora_adapter ad = {0};
    if (!rc) rc = adapter_open(&ad, &f, &s.m, adapter_dir);
    if (!rc) {
        sampler smp;
        sampler_init(&smp, temperature, top_k, top_p, (uint64_t)seed);
        sampler_penalties(&smp, pen.repetition, pen.frequency, pen.presence, pen.min_p);
        gen_options go = {.max_tokens = max_tokens, .stop_at_eos = !no_stop, .max_prefill = 512};
        gen_stats st;
        rc = generate(&f, s.tok, &smp, &go, ids, nids, stdout, NULL, &st);
        fputc('\n', stdout);
        fflush(stdout);
        if (!rc)
            log_info("prompt %d tokens in %.3f s (%.1f tok/s), generated %d tokens in %.3f s (%.2f tok/s), peak RSS %.1f MB",
                     st.prompt_tokens, st.prefill_s, st.prompt_tokens / (st.prefill_s + 1e-9), st.generated,
                     st.decode_s, st.generated / (st.decode_s + 1e-9), mem_peak_rss() / 1e6);
    }
    free(ids);
    fwd_free(&f);
    lora_free(&ad);
    if (rc) { int code = fail("infer", rc); session_close(&s); return code; }
    session_close(&s);
    return interrupted_code();
}

int cmd_chat(int argc, char **argv) {
    const char *base, *base_dtype, *backend, *tmpl_name;
    int threads, verbose;
    chat_opts co;
    cli_opt opts[] = {
        {"--base", OPT_STR, &base, NULL, "model: a Hugging Face directory or a qlora base file"},
        {"--adapter-dir", OPT_STR, &co.adapter_dir, "", "a LoRA store: each subfolder is one adapter"},
        {"--adapters", OPT_STR, &co.adapters, "", "load only these: names of folders in --adapter-dir (without it: paths), name:scale"},
        {"--follow-symlinks", OPT_FLAG, &co.follow_symlinks, NULL, "use links in --adapter-dir that point out of it"},
        {"--adapter", OPT_STR, &co.adapter, "", "the adapter to start with (switch with /adapter NAME); empty is the base"},
        {"--system", OPT_STR, &co.system, "", "a system prompt"},
        {"--chat-template", OPT_STR, &tmpl_name, "", "llama2, chatml, zephyr or llama3 for every turn; empty: each adapter's own (its training_record.json), else the base's, else llama2"},
        {"--n", OPT_INT, &co.n_choices, "1", "answers a turn (1 to 16); the first goes on in the conversation, /pick K keeps another"},
        {"--max-tokens", OPT_INT, &co.max_tokens, "256", "tokens per answer at most"},
        {"--temperature", OPT_FLOAT, &co.temperature, "0.8", "sampling temperature; 0 is greedy"},
        {"--top-k", OPT_INT, &co.top_k, "40", "sample from the k most likely tokens; 0 is off"},
        {"--top-p", OPT_FLOAT, &co.top_p, "0.95", "nucleus sampling mass; 1 is off"},
        {"--seed", OPT_INT, &co.seed, "1", "random seed for sampling"},
        {"--repetition-penalty", OPT_FLOAT, &co.pen.repetition, "1", "divide the logit of a token this answer already has (x it when negative); 1 is off"},
        {"--frequency-penalty", OPT_FLOAT, &co.pen.frequency, "0", "subtract this times the token's count in the answer so far; 0 is off"},
        {"--presence-penalty", OPT_FLOAT, &co.pen.presence, "0", "subtract this from every token the answer already has; 0 is off"},
        {"--min-p", OPT_FLOAT, &co.pen.min_p, "0", "keep only tokens at least this times as likely as the most likely; 0 is off"},

        {"--ctx", OPT_INT, &co.ctx, "0", "context length; 0 is max_position_embeddings, at most 2048"},
        {"--base-dtype", OPT_STR, &base_dtype, "nf4", "linear weights of a model directory: nf4, f16 or f32"},
        {"--backend", OPT_STR, &backend, "auto", "auto (the GPU when one is usable, else the CPU), cpu or cuda"},
        {"--threads", OPT_INT, &threads, "0", "CPU threads; 0 is all cores"},
        {"--verbose", OPT_FLAG, &verbose, NULL, "log more"},
    };
    int pr = cli_parse("chat",
                       "Chat through a template with the base or an adapter; /adapter NAME switches, /adapters lists, "
                       "/load NAME|PATH[:scale] and /unload NAME hot-swap, /reset, /quit. Answers go to stdout as "
                       "NAME> lines.",
                       opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (verbose) log_set_level(LOG_DEBUG);
    if (tmpl_name[0] && ds_template_parse(&co.tmpl, tmpl_name)) return fail("chat", QL_EINVAL);
    const char *bad_pen = sample_penalties_check(&co.pen);
    if (bad_pen) {
        fprintf(stderr, "qlora chat: error: --%s\n", bad_pen);
        return 2;
    }
    if (co.max_tokens < 1 || co.ctx < 0 || co.temperature < 0 || co.top_k < 0 || co.top_p <= 0 || co.top_p > 1 ||
        co.n_choices < 1 || co.n_choices > 16) {
        fprintf(stderr, "qlora chat: error: --max-tokens must be >= 1, --ctx, --temperature and --top-k >= 0, --top-p in (0, 1], --n 1 to 16\n");
        return 2;
    }
    co.tmpl_given = tmpl_name[0] != '\0';
    session s;
    int rc = session_open(&s, base, base_dtype, backend, threads);
    if (!rc) rc = ds_template_choose(&co.tmpl, tmpl_name, s.m.chat_template);
    if (!rc) rc = chat_run(&s.m, s.tok, s.o, &co, stdin, stdout);
    int code = rc ? fail("chat", rc) : 0;
    session_close(&s);
    return code;
}

// An adapter's name in eval's result lines: as is, or JSON-quoted when it holds
// a space, '=', '"', '\' or a byte that is not printable ASCII, so that a line
// always splits on spaces into key=value fields.
static void eval_print_line(const char *name, double scale, const eval_result *r) {
    int plain = name[0] != '\0';
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        plain &= *c > ' ' && *c < 0x7f && *c != '=' && *c != '"' && *c != '\\';
    char *q = plain ? NULL : json_quote(name);
    printf("adapter=%s scale=%g loss=%.6f ppl=%.6f tokens=%lld samples=%d\n", q ? q : name, scale, r->loss, r->ppl,
           r->tokens, r->samples);
    free(q);
}

int cmd_eval(int argc, char **argv) {
    const char *base, *data, *base_dtype, *backend, *adapter_dir, *store_dir, *store_list, *tmpl_name;
    int threads, verbose, seq_len, train_on_inputs, with_base, follow;
    cli_opt opts[] = {
        {"--base", OPT_STR, &base, NULL, "model: a Hugging Face directory or a qlora base file"},
        {"--data", OPT_STR, &data, NULL,
         "held-out data: a .jsonl file in any training format (text, prompt/completion, messages, alpaca, "
         "sharegpt), rendered and masked as train does; any other file is plain text, one sample per non-blank "
         "line (BOS + the line, every token after the first scored, no EOS)"},
        {"--adapter", OPT_STR, &adapter_dir, "", "one LoRA adapter directory (PEFT layout) to apply; empty is none"},
        {"--adapter-dir", OPT_STR, &store_dir, "", "a LoRA store: each subfolder is one adapter; all are scored unless --adapters names some"},
        {"--adapters", OPT_STR, &store_list, "",
         "score each of these, side by side: names of folders in --adapter-dir (without it: paths), name:scale"},
        {"--follow-symlinks", OPT_FLAG, &follow, NULL, "use links in --adapter-dir that point out of it"},
        {"--with-base", OPT_FLAG, &with_base, NULL, "with adapters: score the base too (its line first: adapter=base scale=0)"},
        {"--chat-template", OPT_STR, &tmpl_name, "",
         "llama2, chatml, zephyr or llama3 for messages, alpaca and sharegpt lines; empty: each adapter's own (its "
         "training_record.json), else the model's, else llama2 (as train)"},
        {"--train-on-inputs", OPT_FLAG, &train_on_inputs, NULL, "score prompt tokens too (as train --train-on-inputs)"},
        {"--seq-len", OPT_INT, &seq_len, "0", "longer samples are cut (a warning says how many); 0 is max_position_embeddings"},
        {"--base-dtype", OPT_STR, &base_dtype, "nf4", "linear weights of a model directory: nf4, f16 or f32"},
        {"--backend", OPT_STR, &backend, "auto", "auto (the GPU when one is usable, else the CPU), cpu or cuda"},
        {"--threads", OPT_INT, &threads, "0", "CPU threads; 0 is all cores"},
        {"--verbose", OPT_FLAG, &verbose, NULL, "log more"},
    };
    int pr = cli_parse("eval",
                       "Mean loss and perplexity over the trained tokens of held-out data: the loss train reports\n"
                       "(mean -log p over tokens with loss mask 1). stdout, one line per adapter in the order given\n"
                       "(--adapter-dir alone: by name), NAME JSON-quoted when it holds a space, '=' or '\"':\n"
                       "  adapter=NAME scale=<f> loss=<f> ppl=<f> tokens=<n> samples=<n>\n"
                       "When one model is scored (the base, or one adapter), the last line is\n"
                       "  loss=<f> ppl=<f> tokens=<n>\n"
                       "(tokens: trained tokens scored). An adapter that does not load is named on stderr, the\n"
                       "others are still scored, and the exit status is 1.",
                       opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (verbose) log_set_level(LOG_DEBUG);
    int fan = store_dir[0] || store_list[0];
    if (fan && adapter_dir[0]) {
        fprintf(stderr, "qlora eval: error: --adapter is one adapter; with --adapter-dir/--adapters name it in --adapters\n");
        return 2;
    }
    if (seq_len < 0 || seq_len == 1) {
        fprintf(stderr, "qlora eval: error: --seq-len: expected 0 (max_position_embeddings) or at least 2, found %d\n",
                seq_len);
        return 2;
    }
    ds_template tmpl = DS_TEMPLATE_LLAMA2;
    if (tmpl_name[0] && ds_template_parse(&tmpl, tmpl_name)) return fail("eval", QL_EINVAL);
    session s;
    int rc = session_open(&s, base, base_dtype, backend, threads);
    if (!rc && seq_len > s.m.cfg.max_pos)
        rc = ql_err(QL_EINVAL, "--seq-len %d: the model's max_position_embeddings is %d", seq_len, s.m.cfg.max_pos);
    int T = seq_len ? seq_len : s.m.cfg.max_pos;
    size_t dl = strlen(data);
    int jsonl = dl > 6 && !strcmp(data + dl - 6, ".jsonl");  // the only data a template applies to
    if (!rc && jsonl) rc = ds_template_choose(&tmpl, tmpl_name, s.m.chat_template);
    dataset d = {0};
    dataset_options dopt;
    if (!rc) {
        eval_options(&dopt, &s.m, tmpl, T, train_on_inputs);
        rc = eval_load(&d, data, s.tok, &dopt);
    }
    if (!rc) {
        if (d.skip_summary) log_warn("%s", d.skip_summary);
        int chat = jsonl && d.format != DS_FORMAT_TEXT && d.format != DS_FORMAT_PROMPT;
        log_info("data %s: %s, %d samples, %ld trained tokens%s%s", data, jsonl ? ds_format_name(d.format) : "plain text",
                 d.n_samples, d.stats.trained_tokens, chat ? ", template " : "", chat ? ds_template_name(tmpl) : "");
        if (d.stats.truncated)
            log_warn("%ld of %d samples of %s are longer than %d tokens (--seq-len%s) and were cut: their ends are not scored",
                     d.stats.truncated, d.n_samples, data, T, seq_len ? "" : " 0: max_position_embeddings");
    }
    // what to score: the base (alone, or with --with-base), then each adapter
    adapter_store st = {0};
    lora_adapter ad = {0};
    char one_name[STORE_NAME_MAX];
    if (!rc && fan) rc = store_open(&st, &s.m.cfg, store_dir, store_list, follow);
    if (!rc && adapter_dir[0]) {
        rc = adapter_open(&ad, NULL, &s.m, adapter_dir);  // its messages name the directory
        if (!rc && fwd_check_adapter(&s.m.cfg, &ad)) rc = ql_err(QL_EINVAL, "--adapter %s: %s", adapter_dir, ql_errmsg());
        size_t n = strlen(adapter_dir);  // named after its last component, as --adapters names a path
        while (n > 1 && adapter_dir[n - 1] == '/') n--;
        size_t b = n;
        while (b > 0 && adapter_dir[b - 1] != '/') b--;
        snprintf(one_name, sizeof one_name, "%.*s", (int)(n - b), adapter_dir + b);
    }
    int n_ad = adapter_dir[0] ? 1 : st.n, nbad = 0;
    if (!rc && with_base && ((fan && store_find(&st, "base")) || (adapter_dir[0] && !strcmp(one_name, "base"))))
        rc = ql_err(QL_EINVAL, "--with-base: an adapter is called 'base' too; its line could not be told from the base's");
    eval_target *t = calloc((size_t)n_ad + 1, sizeof *t);
    const char **names = calloc((size_t)n_ad + 1, sizeof *names);
    float *scales = calloc((size_t)n_ad + 1, sizeof *scales);
    eval_result *r = calloc((size_t)n_ad + 1, sizeof *r);
    if (!rc && (!t || !names || !scales || !r)) rc = ql_err(QL_ENOMEM, "out of memory");
    int nt = 0;
    if (!rc && (with_base || n_ad == 0)) t[nt] = (eval_target){NULL, 0.0f}, names[nt++] = "base";
    if (!rc && adapter_dir[0]) t[nt] = (eval_target){&ad, 1.0f}, scales[nt] = 1.0f, names[nt++] = one_name;
    for (int i = 0; !rc && fan && i < st.n; i++) {
        if (!st.e[i].ok) {
            nbad++;
            fprintf(stderr, "qlora eval: adapter '%s': not loaded: %s\n", st.e[i].name, st.e[i].err);
            continue;
        }
        t[nt] = (eval_target){&st.e[i].a, st.e[i].scale}, scales[nt] = st.e[i].scale, names[nt++] = st.e[i].name;
    }
    if (!rc && nt == 0) rc = ql_err(QL_ENOENT, "no adapter was loaded (%d named above)", st.n);
    // chat data: each adapter is scored in the template it was trained in (its
    // training_record.json) unless --chat-template is given; one pass per template
    ds_template *tt = rc ? NULL : calloc((size_t)nt, sizeof *tt);
    if (!rc && !tt) rc = ql_err(QL_ENOMEM, "out of memory");
    int chat_data = jsonl && d.format != DS_FORMAT_TEXT && d.format != DS_FORMAT_PROMPT;
    for (int j = 0; !rc && j < nt; j++) {
        ds_template rec = tmpl;
        const store_entry *e = fan && t[j].adapter ? store_find(&st, names[j]) : NULL;
        int has = e ? e->has_tmpl : t[j].adapter && store_record_template(adapter_dir, &rec);
        if (e) rec = e->tmpl;
        int quiet = !chat_data;  // the template applies to chat data only
        tt[j] = store_pick_template(names[j], has, rec, tmpl_name[0] != '\0', tmpl, tmpl, "it is scored in", &quiet);
        if (chat_data && has && !tmpl_name[0] && rec != tmpl)
            log_info("adapter %s: scored in its chat template %s (its training_record.json)", names[j], ds_template_name(rec));
    }
    if (!rc) {
        double t0 = time_now();
        if (!chat_data) rc = eval_run(r, &s.m, s.o, &d, t, nt);
        int *idx = chat_data ? malloc(sizeof(int) * (size_t)nt) : NULL;  // the targets of one template
        eval_target *tk = chat_data ? malloc(sizeof *tk * (size_t)nt) : NULL;
        eval_result *rk = chat_data ? malloc(sizeof *rk * (size_t)nt) : NULL;
        if (chat_data && (!idx || !tk || !rk)) rc = ql_err(QL_ENOMEM, "out of memory");
        for (int k = 0; chat_data && k < DS_TEMPLATE_LLAMA3 + 1 && !rc; k++) {
            int m = 0;
            for (int j = 0; j < nt; j++)
                if ((int)tt[j] == k) idx[m] = j, tk[m++] = t[j];
            if (!m) continue;
            dataset dk = {0};
            if ((ds_template)k != tmpl) {  // the data again, in this template
                eval_options(&dopt, &s.m, (ds_template)k, T, train_on_inputs);
                rc = eval_load(&dk, data, s.tok, &dopt);
            }
            if (!rc) rc = eval_run(rk, &s.m, s.o, (ds_template)k != tmpl ? &dk : &d, tk, m);
            for (int i = 0; !rc && i < m; i++) r[idx[i]] = rk[i];
            dataset_free(&dk);
        }
        free(idx), free(tk), free(rk);
        if (!rc)
            log_info("%d samples, %lld trained tokens, %d model%s scored in %.2f s", r[0].samples, r[0].tokens, nt,
                     nt > 1 ? "s" : "", time_now() - t0);
    }
    int nonfinite = 0;
    for (int j = 0; !rc && j < nt; j++) {
        if (t[j].adapter || n_ad > 0) eval_print_line(names[j], scales[j], &r[j]);
        nonfinite += !(r[j].loss < 1e300);  // NaN or Inf (a loss is >= 0)
    }
    if (!rc && nt == 1) printf("loss=%.6f ppl=%.6f tokens=%lld\n", r[0].loss, r[0].ppl, r[0].tokens);
    fflush(stdout);
    if (!rc && nonfinite) rc = ql_err(QL_EFORMAT, "%d of %d losses are not finite (NaN or Inf logits)", nonfinite, nt);
    if (!rc && nbad) rc = ql_err(QL_ENOENT, "%d of %d adapters were not loaded (named above)", nbad, st.n);
    free(t), free(names), free(scales), free(r), free(tt);
    store_free(&st);
    lora_free(&ad);
    dataset_free(&d);
    int code = rc ? fail("eval", rc) : 0;
    session_close(&s);
    return code;
}

int cmd_quantize(int argc, char **argv) {
    const char *base, *out, *base_dtype;
    int verbose;
    cli_opt opts[] = {
        {"--base", OPT_STR, &base, NULL, "a Hugging Face model directory"},
        {"--out", OPT_STR, &out, NULL, "the base file to write (one mmap-able file: config, weights, tokenizer)"},
        {"--base-dtype", OPT_STR, &base_dtype, "nf4", "linear weights: nf4, f16 or f32"},
        {"--verbose", OPT_FLAG, &verbose, NULL, "log more"},
    };
    int pr = cli_parse("quantize", "Freeze a model's linear weights in NF4 and write a base file.", opts,
                       (int)(sizeof opts / sizeof *opts), argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (verbose) log_set_level(LOG_DEBUG);
    int bd = base_dtype_parse(base_dtype);
    if (bd < 0) {
        fprintf(stderr, "qlora quantize: error: --base-dtype: expected nf4, f16 or f32, found '%s'\n", base_dtype);
        return 2;
    }
    model m;
    double t0 = time_now();
    int rc = model_load(&m, base, (dtype)bd);
    if (!rc) {
        double t1 = time_now();
        rc = model_save_base(&m, out);
        size_t np, lb = model_linear_bytes(&m, &np);
        if (!rc)
            log_info("%s: %s linear weights %.1f MB for %zu parameters (%.4f bytes/param); quantized in %.1f s, written in %.1f s",
                     out, base_dtype_name(m.base_dtype), lb / 1e6, np, (double)lb / (double)np, t1 - t0, time_now() - t1);
        model_free(&m);
    }
    if (rc) return fail("quantize", rc);
    return 0;
}
