// commands.c: qlora infer, eval and quantize.
#include "commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/cli.h"
#include "../common/err.h"
#include "../common/forward.h"
#include "../common/log.h"
#include "../common/model.h"
#include "../common/spm.h"
#include "../train/peft.h"
#include "eval.h"
#include "generate.h"
#include "sample.h"

// What every command that runs a model shares.
typedef struct {
    model m;
    spm *tok;
    ops *o;
} session;

static int fail(const char *cmd, int rc) {
    fprintf(stderr, "qlora %s: error: %s\n", cmd, ql_errmsg());
    return rc == QL_EINVAL ? 2 : 1;
}

static int session_open(session *s, const char *base, const char *base_dtype, const char *backend, int threads) {
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
    int rc = spm_load_bytes(&s->tok, s->m.tokenizer, s->m.tokenizer_len);
    if (rc) return ql_err(rc, "%s: tokenizer: %s", base, ql_errmsg());
    if (spm_vocab_size(s->tok) > s->m.cfg.vocab_size)
        return ql_err(QL_EFORMAT, "%s: the tokenizer has %d pieces but the model's vocab_size is %d", base,
                      spm_vocab_size(s->tok), s->m.cfg.vocab_size);
    log_info("backend: %s", s->o->name);
    return QL_OK;
}

static void session_close(session *s) {
    ops_delete(s->o);
    spm_free(s->tok);
    model_free(&s->m);
}

// --adapter DIR: load a PEFT adapter directory against the model's config and,
// when f is not NULL, apply it to f. An empty dir is no adapter.
static int adapter_open(lora_adapter *a, fwd_state *f, const model *m, const char *dir) {
    if (!dir[0]) return QL_OK;
    int rc = lora_load_peft(a, &m->cfg, dir);
    if (rc) return rc;
    int np = 0;
    for (int i = 0; i < a->n_layers * LORA_NMODULES; i++) np += a->w[i].A != NULL;
    log_info("adapter %s: r %d, alpha %g, scaling %g, %d of %d linears", dir, a->rank, (double)a->alpha,
             (double)a->scaling, np, a->n_layers * LORA_NMODULES);
    return f ? fwd_set_adapter(f, a) : QL_OK;
}

int cmd_infer(int argc, char **argv) {
    const char *base, *prompt, *base_dtype, *backend, *adapter_dir;
    int max_tokens, top_k, seed, threads, ctx, verbose, no_stop;
    float temperature, top_p;
    cli_opt opts[] = {
        {"--base", OPT_STR, &base, NULL, "model: a Hugging Face directory or a qlora base file"},
        {"--prompt", OPT_STR, &prompt, NULL, "the prompt text"},
        {"--adapter", OPT_STR, &adapter_dir, "", "a LoRA adapter directory (PEFT layout) to apply; empty is none"},
        {"--max-tokens", OPT_INT, &max_tokens, "128", "tokens to generate at most"},
        {"--temperature", OPT_FLOAT, &temperature, "0.8", "sampling temperature; 0 is greedy"},
        {"--top-k", OPT_INT, &top_k, "40", "sample from the k most likely tokens; 0 is off"},
        {"--top-p", OPT_FLOAT, &top_p, "0.95", "nucleus sampling mass; 1 is off"},
        {"--seed", OPT_INT, &seed, "1", "random seed for sampling"},
        {"--ignore-eos", OPT_FLAG, &no_stop, NULL, "keep generating after the end-of-sequence token"},
        {"--base-dtype", OPT_STR, &base_dtype, "nf4", "linear weights of a model directory: nf4, f16 or f32"},
        {"--backend", OPT_STR, &backend, "cpu", "auto, cpu or cuda"},
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
    session s;
    int rc = session_open(&s, base, base_dtype, backend, threads);
    int *ids = NULL, nids = 0;
    if (!rc) rc = tokenize_prompt(&s.m, s.tok, prompt, &ids, &nids);
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
    return 0;
}

int cmd_eval(int argc, char **argv) {
    const char *base, *data, *base_dtype, *backend, *adapter_dir;
    int threads, verbose;
    cli_opt opts[] = {
        {"--base", OPT_STR, &base, NULL, "model: a Hugging Face directory or a qlora base file"},
        {"--data", OPT_STR, &data, NULL, "text file (one sample per non-empty line) or .jsonl with a \"text\" field"},
        {"--adapter", OPT_STR, &adapter_dir, "", "a LoRA adapter directory (PEFT layout) to apply; empty is none"},
        {"--base-dtype", OPT_STR, &base_dtype, "nf4", "linear weights of a model directory: nf4, f16 or f32"},
        {"--backend", OPT_STR, &backend, "cpu", "auto, cpu or cuda"},
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
