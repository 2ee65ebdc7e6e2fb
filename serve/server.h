// server.h: qlora serve's HTTP side, over libmicrohttpd: routing, the API key,
// body limits, the OpenAI endpoints (JSON in through openai.c, jobs to the
// scheduler, JSON or server-sent events out), the adapter endpoints, /health and
// /metrics. Each connection has its own thread (libmicrohttpd's
// thread-per-connection mode), which parses, tokenizes, queues, then waits on the
// scheduler and streams; only the scheduler thread runs the model.
#ifndef QL_SERVER_H
#define QL_SERVER_H

#include <stddef.h>

#include "../model/model.h"
#include "../common/tokenizer.h"
#include "../datasets/dataset.h"
#include "../kernels/ops.h"

typedef struct {
    const char *host;          // address to bind ("127.0.0.1", "::1", "0.0.0.0")
    int port;                  // 0: any free port (server_port says which)
    const char *adapter_dir;   // the LoRA store ("": none)
    const char *served_name;   // the base's id in "model"
    const char *api_key;       // "": no key
    int max_batch, max_queue, max_loras, ctx, threads, allow_any_path;
    int follow_symlinks;       // links in the store may point out of it
    size_t max_body;           // bytes
    ds_template fallback_tmpl; // chat: when neither the adapter nor the base names one
    int base_has_tmpl;         // the base's tokenizer_config.json names one
    ds_template base_tmpl;
} server_opts;

typedef struct server server;

// Loads nothing: m, tok and o are the caller's and outlive the server. Starts the
// scheduler and the listener.
int server_start(server **out /* out */, model *m, const tokenizer *tok, ops *o, const server_opts *so);
int server_port(const server *sv);
// Requests queued or running.
int server_busy(server *sv);
// Stops accepting connections (a request on an open connection gets 503).
void server_quiesce(server *sv);
// Cancels what still runs, closes every connection, frees everything.
void server_stop(server *sv);

#endif
