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
    int max_tokens, top_k, seed, stop_at_eos, with_base, json;
    float temperature, top_p;
    sample_penalties pen;
} fanout_opts;

// Fan-out: one prompt through the base (with --with-base) and every chosen adapter
// in one batch; answers printed in labelled blocks (or JSON) in the store's order.
static int fanout(session *s, const adapter_store *st, const int *ids, int nids, int T, const char *prompt,
                  const fanout_opts *fo) {
    int n = fo->with_base, nbad = 0;
    for (int i = 0; i < st->n; i++) n += st->e[i].ok;
    eng_req *r = calloc((size_t)(n > 0 ? n : 1), sizeof(eng_req));
    if (!r) return ql_err(QL_ENOMEM, "out of memory");
    int k = 0;
    for (int i = -1; i < st->n; i++) {
        if (i < 0 ? !fo->with_base : !st->e[i].ok) continue;
        r[k] = (eng_req){.prompt = ids, .n_prompt = nids, .max_tokens = fo->max_tokens, .stop_at_eos = fo->stop_at_eos};
        if (i >= 0) r[k].adapter = &st->e[i].a, r[k].scale = st->e[i].scale;
        sampler_init(&r[k].smp, fo->temperature, fo->top_k, fo->top_p, (uint64_t)fo->seed);  // same draws for all
        sampler_penalties(&r[k].smp, fo->pen.repetition, fo->pen.frequency, fo->pen.presence, fo->pen.min_p);
        k++;
    }
    fwd_state f = {0};
    int max_N = n * nids < 512 ? n * nids : 512;
    int rc = n ? fwd_init_slots(&f, &s->m, s->o, T, max_N > n ? max_N : n, n) : QL_OK;
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
            } else {
                eng_req *q = &r[j++];
                if (fo->json) {
                    char *qt = json_quote(q->text ? q->text : "");
                    printf("%s\n  {\"adapter\": %s, \"scale\": %g, \"text\": %s, \"tokens\": %d, \"finish_reason\": \"%s\"}",
                           first ? "" : ",", qn, i < 0 ? 0.0 : (double)st->e[i].scale, qt, q->n_ids,
                           q->finish ? q->finish : "error");
                    free(qt);
                } else {
                    if (i < 0) printf("=== base ===\n");
                    else printf("=== %s (scale %g) ===\n", name, (double)st->e[i].scale);
                    printf("%s\n\n", q->finish && !strcmp(q->finish, "error") ? q->err : q->text ? q->text : "");
                }
            }
            free(qn);
            first = 0;
        }
        if (fo->json) printf("\n]}\n");
        fflush(stdout);
        log_info("%d sequences in one batch: %lld prompt + %lld generated tokens in %d steps, %.2f s (%.1f tok/s)", n,
                 es.prompt_tokens, es.generated, es.steps, es.seconds, es.generated / (es.seconds + 1e-9));
    }
    for (int i = 0; i < n; i++) eng_req_free(&r[i]);
    free(r);
    fwd_free(&f);
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
    int max_tokens, top_k, seed, threads, ctx, verbose, no_stop, with_base, batch, follow;
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
         "llama2, chatml, zephyr or llama3: --prompt becomes a user turn in it; empty: the raw prompt (and for "
         "--requests \"messages\" the base's template, else llama2)"},
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
    if (tmpl_name[0] && ds_template_parse(&tmpl, tmpl_name)) return fail("infer", QL_EINVAL);
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
    if (!rc && requests[0] && !tmpl_name[0]) rc = ds_template_choose(&tmpl, "", s.m.chat_template);
    if (!rc && requests[0]) {
        requests_opts ro = {requests, out, store_dir, store_list, batch, ctx, tmpl, max_tokens, top_k, seed, !no_stop,
                            temperature, top_p, follow, pen};
        int failed = 0;
        rc = requests_run(&s.m, s.tok, s.o, &ro, &failed);
        if (!rc && failed) rc = ql_err(QL_EFORMAT, "%d requests failed (their results say why)", failed);
    }
    if (rc || requests[0]) {
        int code = rc ? fail("infer", rc) : interrupted_code();
        session_close(&s);
        return code;
    }
    int *ids = NULL, nids = 0;
    if (!rc && tmpl_name[0]) {  // the prompt as the user's turn, the way chat-trained adapters saw it
        ds_message um = {DS_ROLE_USER, prompt};
        dataset_options dopt;
        prompt_options(&dopt, &s.m, tmpl);
        rc = ds_render_prompt(&ids, &nids, &um, 1, s.tok, &dopt);
    } else if (!rc) rc = tokenize_prompt(&s.m, s.tok, prompt, &ids, &nids);
    fwd_state f = {0};
    if (!rc) {
        long long want = ctx > 0 ? ctx : (long long)nids + max_tokens;
        int T = want > s.m.cfg.max_pos ? s.m.cfg.max_pos : (int)want;
        if (nids >= T) rc = ql_err(QL_EINVAL, "the prompt has %d tokens; the context holds %d (--ctx, max_position_embeddings %d)", nids, T, s.m.cfg.max_pos);
        else if (fan) {
            adapter_store st;
            rc = store_open(&st, &s.m.cfg, store_dir, store_list, follow);
            fanout_opts fo = {max_tokens, top_k, seed, !no_stop, with_base, !strcmp(format, "json"), temperature, top_p,
                              pen};
            if (!rc) rc = fanout(&s, &st, ids, nids, T, prompt, &fo);
            store_free(&st);
            free(ids);
            if (rc) { int code = fail("infer", rc); session_close(&s); return code; }
            session_close(&s);
            return interrupted_code();
        } else rc = fwd_init(&f, &s.m, s.o, T, T < 512 ? T : 512);
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
        {"--chat-template", OPT_STR, &tmpl_name, "", "llama2, chatml, zephyr or llama3 (the one the adapters were trained with); empty: the base's, else llama2"},
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
    if (co.max_tokens < 1 || co.ctx < 0 || co.temperature < 0 || co.top_k < 0 || co.top_p <= 0 || co.top_p > 1) {
        fprintf(stderr, "qlora chat: error: --max-tokens must be >= 1, --ctx, --temperature and --top-k >= 0, --top-p in (0, 1]\n");
        return 2;
    }
    session s;
    int rc = session_open(&s, base, base_dtype, backend, threads);
    if (!rc) rc = ds_template_choose(&co.tmpl, tmpl_name, s.m.chat_template);
    if (!rc) rc = chat_run(&s.m, s.tok, s.o, &co, stdin, stdout);
    int code = rc ? fail("chat", rc) : 0;
    session_close(&s);
    return code;
}

int cmd_eval(int argc, char **argv) {
    const char *base, *data, *base_dtype, *backend, *adapter_dir;
    int threads, verbose;
    cli_opt opts[] = {
        {"--base", OPT_STR, &base, NULL, "model: a Hugging Face directory or a qlora base file"},
        {"--data", OPT_STR, &data, NULL, "text file (one sample per non-empty line) or .jsonl with a \"text\" field"},
        {"--adapter", OPT_STR, &adapter_dir, "", "a LoRA adapter directory (PEFT layout) to apply; empty is none"},
        {"--base-dtype", OPT_STR, &base_dtype, "nf4", "linear weights of a model directory: nf4, f16 or f32"},
        {"--backend", OPT_STR, &backend, "auto", "auto (the GPU when one is usable, else the CPU), cpu or cuda"},
        {"--threads", OPT_INT, &threads, "0", "CPU threads; 0 is all cores"},
        {"--verbose", OPT_FLAG, &verbose, NULL, "log more"},
    };
    int pr = cli_parse("eval", "Mean token loss and perplexity. The last line is loss=<f> ppl=<f> tokens=<n>.", opts,
                       (int)(sizeof opts / sizeof *opts), argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (verbose) log_set_level(LOG_DEBUG);
    session s;
    int rc = session_open(&s, base, base_dtype, backend, threads);
    eval_result r;
    lora_adapter ad = {0};
    if (!rc && adapter_dir[0]) rc = adapter_open(&ad, NULL, &s.m, adapter_dir);
    if (!rc) rc = eval_file(&s.m, s.o, s.tok, data, adapter_dir[0] ? &ad : NULL, &r);
    lora_free(&ad);
    if (rc) { int code = fail("eval", rc); session_close(&s); return code; }
    if (r.truncated) log_warn("%d samples were cut at max_position_embeddings %d", r.truncated, s.m.cfg.max_pos);
    log_info("%d samples", r.samples);
    printf("loss=%.6f ppl=%.6f tokens=%lld\n", r.loss, r.ppl, r.tokens);
    session_close(&s);
    return 0;
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
