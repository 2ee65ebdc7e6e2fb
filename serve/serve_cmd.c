// serve_cmd.c: qlora serve: options, the model, then the server until SIGINT or
// SIGTERM. The signals are taken by sigwait on the main thread (blocked in every
// other thread), so shutting down is ordinary code: stop accepting, let what runs
// finish for up to --drain-timeout seconds, cancel the rest, exit 0.
#include "serve_cmd.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/cli.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../infer/commands.h"
#include "server.h"

// The base's default id: its directory's last name, or its base file's without ".qlb".
static void base_name(char *out, size_t cap, const char *base) {
    size_t n = strlen(base);
    while (n > 1 && base[n - 1] == '/') n--;
    size_t i = n;
    while (i > 0 && base[i - 1] != '/') i--;
    if (n - i > 4 && !strncmp(base + n - 4, ".qlb", 4)) n -= 4;
    snprintf(out, cap, "%.*s", (int)(n - i), base + i);
}

int cmd_serve(int argc, char **argv) {
    const char *base, *adapter_dir, *host, *api_key, *served, *tmpl_name, *base_dtype, *backend;
    int port, max_batch, max_queue, max_loras, threads, ctx, verbose, allow_any, follow, max_body, drain;
    cli_opt opts[] = {
        {"--base", OPT_STR, &base, NULL, "model: a Hugging Face directory or a qlora base file"},
        {"--adapter-dir", OPT_STR, &adapter_dir, "", "the LoRA store: each subfolder is an adapter, loaded on first use"},
        {"--host", OPT_STR, &host, "127.0.0.1", "address to listen on (0.0.0.0: every interface)"},
        {"--port", OPT_INT, &port, "8080", "TCP port; 0 picks a free one (the log says which)"},
        {"--max-batch", OPT_INT, &max_batch, "16", "sequences in one batch (KV cache slots)"},
        {"--max-queue", OPT_INT, &max_queue, "256", "requests waiting for a slot; past it, 503"},
        {"--max-loras", OPT_INT, &max_loras, "64", "adapters in memory; past it the least recently used idle one is unloaded"},
        {"--api-key", OPT_STR, &api_key, "", "require Authorization: Bearer KEY (also QLORA_API_KEY); /health is open"},
        {"--served-model-name", OPT_STR, &served, "", "the base's id in \"model\"; empty: the base's folder name (or file name without .qlb)"},
        {"--chat-template", OPT_STR, &tmpl_name, "llama2",
         "chat requests: llama2, chatml, zephyr or llama3, when neither the adapter's training_record.json nor the base names one"},
        {"--allow-any-adapter-path", OPT_FLAG, &allow_any, NULL, "let /v1/load_lora_adapter load from outside --adapter-dir"},
        {"--follow-symlinks", OPT_FLAG, &follow, NULL, "use links in --adapter-dir that point out of it"},
        {"--max-body", OPT_INT, &max_body, "1048576", "request body limit in bytes; past it, 413"},
        {"--drain-timeout", OPT_INT, &drain, "10", "seconds to finish running requests on SIGINT/SIGTERM before cancelling them"},
        {"--ctx", OPT_INT, &ctx, "0", "context per sequence; 0 is max_position_embeddings, at most 2048"},
        {"--base-dtype", OPT_STR, &base_dtype, "nf4", "linear weights of a model directory: nf4, f16 or f32"},
        {"--backend", OPT_STR, &backend, "auto", "auto (the GPU when one is usable, else the CPU), cpu or cuda"},
        {"--threads", OPT_INT, &threads, "0", "CPU threads; 0 is all cores"},
        {"--verbose", OPT_FLAG, &verbose, NULL, "log more (every request's status)"},
    };
    int n = (int)(sizeof opts / sizeof *opts);
    int pr = cli_parse("serve",
                       "An OpenAI-compatible HTTP server over one frozen base and a LoRA store: /v1/completions, "
                       "/v1/chat/completions, /v1/models, /v1/load_lora_adapter, /v1/unload_lora_adapter, /health, /metrics; "
                       "and at / the playground, a page that compares the base and adapters side by side.",
                       opts, n, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (verbose) log_set_level(LOG_DEBUG);
    if (port < 0 || port > 65535 || max_batch < 1 || max_batch > 1024 || max_queue < 1 || max_loras < 1 || ctx < 0 ||
        max_body < 1024 || drain < 0) {
        fprintf(stderr, "qlora serve: error: --port in [0, 65535], --max-batch in [1, 1024], --max-queue and "
                        "--max-loras >= 1, --ctx >= 0, --max-body >= 1024, --drain-timeout >= 0\n");
        return 2;
    }
    server_opts so = {.host = host, .port = port, .adapter_dir = adapter_dir, .api_key = api_key,
                      .max_batch = max_batch, .max_queue = max_queue, .max_loras = max_loras, .threads = threads,
                      .allow_any_path = allow_any, .follow_symlinks = follow,
                      .max_body = (size_t)max_body};
    if (!so.api_key[0] && getenv("QLORA_API_KEY")) so.api_key = getenv("QLORA_API_KEY");
    if (ds_template_parse(&so.fallback_tmpl, tmpl_name)) {
        fprintf(stderr, "qlora serve: error: --chat-template: %s\n", ql_errmsg());
        return 2;
    }
    char name[256];
    if (served[0]) snprintf(name, sizeof name, "%s", served);
    else base_name(name, sizeof name, base);
    so.served_name = name;

    // SIGINT and SIGTERM go to sigwait below, whatever thread they hit; a closed
    // client's socket must not kill the server
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    session s;
    int rc = session_open(&s, base, base_dtype, backend, threads);
    server *sv = NULL;
    if (!rc) {
        so.ctx = ctx ? ctx : s.m.cfg.max_pos < 2048 ? s.m.cfg.max_pos : 2048;
        if (so.ctx > s.m.cfg.max_pos)
            rc = ql_err(QL_EINVAL, "--ctx %d: the model's max_position_embeddings is %d", ctx, s.m.cfg.max_pos);
    }
    if (!rc && s.m.chat_template) {  // the base's own template (its tokenizer_config.json, kept in a base file too)
        so.base_has_tmpl = ds_template_recognize(&so.base_tmpl, s.m.chat_template) == QL_OK;
        if (!so.base_has_tmpl) log_warn("serve: the base's chat template is none of ours; chat requests use --chat-template");
    }
    if (!rc) rc = server_start(&sv, &s.m, s.tok, s.o, &so);
    if (rc) {
        fprintf(stderr, "qlora serve: error: %s\n", ql_errmsg());
        session_close(&s);
        return rc == QL_EINVAL ? 2 : 1;
    }
    log_info("serve: model '%s'%s%s; chat template: adapters' own, else %s (%s)", name, adapter_dir[0] ? ", adapters from " : "",
             adapter_dir, ds_template_name(so.base_has_tmpl ? so.base_tmpl : so.fallback_tmpl),
             so.base_has_tmpl ? "the base's tokenizer_config.json" : "--chat-template");
    log_info("serve: listening on http://%s%s%s:%d%s", strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
             server_port(sv), so.api_key[0] ? " (API key required)" : "");
    // a wildcard address is not one a browser can open: name the loopback one instead
    const char *page_host = !strcmp(host, "0.0.0.0") ? "127.0.0.1" : !strcmp(host, "::") ? "::1" : host;
    log_info("serve: the playground: http://%s%s%s:%d/", strchr(page_host, ':') ? "[" : "", page_host,
             strchr(page_host, ':') ? "]" : "", server_port(sv));
    int sig = 0;
    sigwait(&sigs, &sig);
    int busy = server_busy(sv);
    log_info("serve: %s: no new connections; %d requests still running or queued (up to %d s to finish)",
             sig == SIGINT ? "SIGINT" : "SIGTERM", busy, drain);
    server_quiesce(sv);
    double t0 = time_now();
    while (server_busy(sv) && time_now() - t0 < drain) usleep(20000);
    busy = server_busy(sv);
    if (busy) log_warn("serve: cancelling %d requests", busy);
    server_stop(sv);
    session_close(&s);
    log_info("serve: stopped");
    return 0;
}
