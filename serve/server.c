// server.c: see server.h.
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../common/err.h"
#include "../model/forward.h"
#include "../common/json.h"
#include "../common/log.h"
#include "../infer/generate.h"
#include "metrics.h"
#include "openai.h"
#include "playground.h"
#include "registry.h"
#include "scheduler.h"

struct server {
    server_opts o;
    struct MHD_Daemon *d;
    model *m;
    const tokenizer *tok;
    fwd_state f;
    registry g;
    metrics mx;
    scheduler sch;
    int quiesced, port;
    uint64_t ids;  // response ids and default seeds
    pthread_mutex_t id_mu;
};

// What one connection's current request has read so far.
typedef struct {
    strbuf body;
    int too_large;
} conn;

// A streamed response: owned by libmicrohttpd's response (freed in stream_free).
typedef struct {
    server *sv;
    srv_job *job;
    int fd;                 // the client's socket: a closed one cancels the job
    strbuf out;             // bytes for the client
    size_t sent;
    int opened, ended;
    char id[48];
    long long created;
} stream;

// ---- small helpers ----

static uint64_t next_id(server *sv) {
    pthread_mutex_lock(&sv->id_mu);
    uint64_t x = ++sv->ids;
    pthread_mutex_unlock(&sv->id_mu);
    x ^= (uint64_t)time(NULL) << 20;  // splitmix64's finalizer: ids that do not repeat across restarts
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static int client_gone(int fd) {
    char b;
    ssize_t r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static int conn_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cv, mu, &ts);
}

static enum MHD_Result send_body(server *sv, struct MHD_Connection *c, const char *endpoint, int status,
                                 const char *type, const char *body, size_t n, const char *retry_after) {
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (retry_after) MHD_add_response_header(r, "Retry-After", retry_after);
    if (status == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    metrics_request(&sv->mx, endpoint, status);
    return ok;
}

static enum MHD_Result send_json(server *sv, struct MHD_Connection *c, const char *endpoint, int status, strbuf *b) {
    enum MHD_Result ok = send_body(sv, c, endpoint, status, "application/json", b->s ? b->s : "{}", b->s ? b->n : 2, NULL);
    sb_free(b);
    return ok;
}

static const char *error_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 503: return "server_overloaded";
    case 500: return "server_error";
    default: return "invalid_request_error";
    }
}

// An error; adapter (may be NULL) and index (-1: none): the target of `adapters`
// it concerns and its first choice (oai_error_json).
static enum MHD_Result send_error_for(server *sv, struct MHD_Connection *c, const char *endpoint, int status,
                                      const char *msg, const char *param, const char *code, const char *adapter,
                                      int index) {
    strbuf b = {0};
    if (oai_error_json(&b, msg, error_type(status), param, code, adapter, index)) return MHD_NO;
    enum MHD_Result ok = send_body(sv, c, endpoint, status, "application/json", b.s, b.n, status == 503 ? "1" : NULL);
    sb_free(&b);
    if (status >= 500 || status == 413) log_warn("serve: %s: %d: %s", endpoint, status, msg);
    else log_debug("serve: %s: %d: %s", endpoint, status, msg);
    return ok;
}

static enum MHD_Result send_error(server *sv, struct MHD_Connection *c, const char *endpoint, int status,
                                  const char *msg, const char *param, const char *code) {
    return send_error_for(sv, c, endpoint, status, msg, param, code, NULL, -1);
}

// Constant-time comparison of the Authorization header with "Bearer KEY".
static int authorized(server *sv, struct MHD_Connection *c) {
    if (!sv->o.api_key[0]) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7)) return 0;
    h += 7;
    size_t n = strlen(h), k = strlen(sv->o.api_key);
    unsigned char diff = n != k;
    for (size_t i = 0; i < n && i < k; i++) diff |= (unsigned char)(h[i] ^ sv->o.api_key[i]);
    return diff == 0;
}

// ---- /v1/models ----

static int is_base(const server *sv, const char *name) {
    return !strcmp(name, sv->o.served_name) || !strcmp(name, "base");
}

static int base_json(server *sv, strbuf *b, long long now) {
    int rc = sb_add(b, "{\"id\": ");
    if (!rc) rc = sb_json(b, sv->o.served_name, strlen(sv->o.served_name));
    if (!rc) rc = sb_addf(b, ", \"object\": \"model\", \"created\": %lld, \"owned_by\": \"qlora\", \"root\": ", now);
    if (!rc) rc = sb_json(b, sv->o.served_name, strlen(sv->o.served_name));
    if (!rc) rc = sb_addf(b, ", \"parent\": null, \"max_model_len\": %d, \"loaded\": true}", sv->f.max_T);
    return rc;
}

// GET /v1/models/{id}: the base or one adapter.
static enum MHD_Result model_ep(server *sv, struct MHD_Connection *c, const char *id) {
    strbuf b = {0};
    long long now = (long long)time(NULL);
    int rc = is_base(sv, id) ? base_json(sv, &b, now) : reg_model_json(&sv->g, &b, id, sv->o.served_name, now);
    if (rc) {
        sb_free(&b);
        char msg[1200];
        snprintf(msg, sizeof msg, "%s", ql_errmsg());
        return send_error(sv, c, "/v1/models/{id}", rc == QL_ENOENT ? 404 : rc == QL_EINVAL ? 400 : 500, msg, NULL,
                          rc == QL_ENOENT ? "model_not_found" : NULL);
    }
    return send_json(sv, c, "/v1/models/{id}", 200, &b);
}

static enum MHD_Result models(server *sv, struct MHD_Connection *c) {
    strbuf b = {0};
    long long now = (long long)time(NULL);
    int rc = sb_add(&b, "{\"object\": \"list\", \"data\": [");
    if (!rc) rc = base_json(sv, &b, now);
    if (!rc) {
        strbuf a = {0};
        rc = reg_list_json(&sv->g, &a, sv->o.served_name, now);
        if (!rc && a.n && !(rc = sb_add(&b, ", "))) rc = sb_add(&b, a.s);
        sb_free(&a);
    }
    if (!rc) rc = sb_add(&b, "]}");
    if (rc) {
        sb_free(&b);
        return send_error(sv, c, "/v1/models", 500, ql_errmsg(), NULL, NULL);
    }
    return send_json(sv, c, "/v1/models", 200, &b);
}

// ---- jobs ----

// The status for an error from reg_acquire: 404 for a name that is not there.
static int acquire_status(int rc) { return rc == QL_ENOENT ? 404 : rc == QL_ENOMEM ? 500 : 400; }

// A chat's template on target t: the adapter's own, else the base's, else --chat-template.
static ds_template target_template(const server *sv, const srv_target *t) {
    if (t->ad && t->ad->has_template) return t->ad->tmpl;
    return sv->o.base_has_tmpl ? sv->o.base_tmpl : sv->o.fallback_tmpl;
}

// Builds the job for a parsed request; on failure *status and the message say
// why, and bad (cap OAI_NAME_MAX) names the target of `adapters` it concerns and
// *bad_i its first choice (empty and -1 when it concerns the request as a whole).
static int build_job(server *sv, srv_job *j, int *status, char *param, size_t pcap, char *bad, int *bad_i) {
    oai_request *q = &j->req;
    *status = 400;
    param[0] = bad[0] = '\0';
    *bad_i = -1;
    // the model must exist even when "adapters" picks what runs
    if (!is_base(sv, q->model)) {
        reg_adapter *a;
        int rc = reg_acquire(&sv->g, q->model, &a);
        if (rc) {
            *status = acquire_status(rc);
            snprintf(param, pcap, "model");
            if (rc == QL_ENOENT)
                return ql_err(rc, "the model '%s' does not exist: %s (the base is '%s'; GET /v1/models lists them)",
                              q->model, ql_errmsg(), sv->o.served_name);
            return rc;
        }
        if (q->n_targets == 0) {  // the model is the one target: keep this reference
            j->t = calloc(1, sizeof *j->t);
            if (!j->t) return reg_release(&sv->g, a), ql_err(QL_ENOMEM, "out of memory");
            j->n_t = 1;
            j->t[0].ad = a;
            snprintf(j->t[0].name, sizeof j->t[0].name, "%s", q->model);
            j->t[0].scale = q->lora_scale;
        } else reg_release(&sv->g, a);
    }
    if (!j->t) {
        int n = q->n_targets ? q->n_targets : 1;
        j->t = calloc((size_t)n, sizeof *j->t);
        if (!j->t) return ql_err(QL_ENOMEM, "out of memory");
        for (int i = 0; i < n; i++) {
            const char *name = q->n_targets ? q->targets[i].name : q->model;
            srv_target *t = &j->t[j->n_t++];
            snprintf(t->name, sizeof t->name, "%s", is_base(sv, name) ? "base" : name);
            t->scale = q->n_targets && q->targets[i].scale >= 0 ? q->targets[i].scale : q->lora_scale;
            if (is_base(sv, name)) continue;
            int rc = reg_acquire(&sv->g, name, &t->ad);
            if (rc) {
                *status = acquire_status(rc);
                snprintf(param, pcap, "adapters");
                snprintf(bad, OAI_NAME_MAX, "%s", name);
                *bad_i = i * q->n;
                return ql_err(rc, "adapter '%s': %s", name, ql_errmsg());
            }
        }
    }
    // prompts: one per target (a chat renders with each adapter's template)
    const int T = sv->f.max_T;
    for (int i = 0; i < j->n_t; i++) {
        srv_target *t = &j->t[i];
        int rc;
        // a chat's prompt is this target's own (its template): an error in it is this target's
        if (q->n_targets && q->kind == OAI_CHAT) snprintf(bad, OAI_NAME_MAX, "%s", q->targets[i].name), *bad_i = i * q->n;
        if (q->kind == OAI_COMPLETIONS) {
            rc = i > 0 ? QL_OK : tokenize_prompt(sv->m, sv->tok, q->prompt, &t->prompt, &t->n_prompt);
            if (i > 0) {
                t->n_prompt = j->t[0].n_prompt;
                t->prompt = malloc(sizeof(int) * (size_t)t->n_prompt);
                if (!t->prompt) rc = ql_err(QL_ENOMEM, "out of memory");
                else memcpy(t->prompt, j->t[0].prompt, sizeof(int) * (size_t)t->n_prompt);
            }
        } else {
            dataset_options dopt;
            prompt_options(&dopt, sv->m, target_template(sv, t));
            rc = ds_render_prompt(&t->prompt, &t->n_prompt, q->msgs, q->n_msgs, sv->tok, &dopt);
            if (rc == QL_EFORMAT) snprintf(param, pcap, "messages");
        }
        if (rc) {
            *status = rc == QL_ENOMEM ? 500 : 400;
            return rc;
        }
        int max_tokens = q->max_tokens >= 0 ? q->max_tokens : q->kind == OAI_COMPLETIONS ? 16 : T - t->n_prompt;
        if (t->n_prompt >= T) {
            snprintf(param, pcap, "%s", q->kind == OAI_COMPLETIONS ? "prompt" : "messages");
            return ql_err(QL_EINVAL, "this model's context is %d tokens, and the prompt alone has %d%s%s", T,
                          t->n_prompt, j->n_t > 1 ? " for " : "", j->n_t > 1 ? t->name : "");
        }
        if (t->n_prompt + max_tokens > T) {
            snprintf(param, pcap, "max_tokens");
            return ql_err(QL_EINVAL,
                          "this model's context is %d tokens: the prompt has %d and max_tokens asks for %d more (%d "
                          "in all); ask for at most %d",
                          T, t->n_prompt, max_tokens, t->n_prompt + max_tokens, T - t->n_prompt);
        }
        if (i == 0) q->max_tokens = max_tokens;  // the same limit for every target
        else if (max_tokens < q->max_tokens) q->max_tokens = max_tokens;
    }
    bad[0] = '\0', *bad_i = -1;
    // choices: target-major, n per target, each with its own seed (seed + k)
    j->n_ch = j->n_t * q->n;
    j->ch = calloc((size_t)j->n_ch, sizeof *j->ch);
    if (!j->ch) return *status = 500, ql_err(QL_ENOMEM, "out of memory");
    uint64_t seed = q->seed >= 0 ? (uint64_t)q->seed : next_id(sv);
    for (int i = 0; i < j->n_ch; i++) {
        srv_choice *c = &j->ch[i];
        srv_target *t = &j->t[i / q->n];
        c->job = j, c->target = i / q->n;
        c->r = (eng_req){.prompt = t->prompt, .n_prompt = t->n_prompt, .max_tokens = q->max_tokens,
                         .stop_at_eos = !q->ignore_eos};
        if (t->ad) c->r.adapter = &t->ad->a, c->r.scale = t->scale;
        int k = 0;
        for (; k < ENGINE_USER_STOPS && q->stop[k]; k++) c->r.stop[k] = q->stop[k];
        if (q->kind == OAI_CHAT) {
            for (const char *const *ts = ds_template_stops(target_template(sv, t)); *ts && k < ENGINE_MAX_STOPS; ts++) c->r.stop[k++] = *ts;
        }
        sampler_init(&c->r.smp, q->temperature, q->top_k, q->top_p, seed + (uint64_t)(i % q->n));
    }
    return QL_OK;
}

static void usage_json(strbuf *b, const srv_job *j) {
    long long p = 0, g = 0;
    for (int i = 0; i < j->n_t; i++) p += j->t[i].n_prompt;
    for (int i = 0; i < j->n_ch; i++) g += j->ch[i].r.n_ids;
    sb_addf(b, "{\"prompt_tokens\": %lld, \"completion_tokens\": %lld, \"total_tokens\": %lld}", p, g, p + g);
}

// A fan-out choice's label: its adapter ("base" for the base) and scale.
static void label_json(strbuf *b, const srv_job *j, const srv_choice *c) {
    const srv_target *t = &j->t[c->target];
    sb_add(b, ", \"adapter\": ");
    sb_json(b, t->name, strlen(t->name));
    sb_addf(b, ", \"scale\": %g", t->ad ? (double)t->scale : 0.0);
}

static const char *finish_of(const srv_choice *c) {
    return c->r.finish && (!strcmp(c->r.finish, "stop") || !strcmp(c->r.finish, "length")) ? c->r.finish : NULL;
}

// The whole response of a finished job.
static int response_json(strbuf *b, const srv_job *j, const char *id, long long created) {
    const oai_request *q = &j->req;
    int chat = q->kind == OAI_CHAT;
    sb_addf(b, "{\"id\": \"%s\", \"object\": \"%s\", \"created\": %lld, \"model\": ", id,
            chat ? "chat.completion" : "text_completion", created);
    sb_json(b, q->model, strlen(q->model));
    sb_add(b, ", \"choices\": [");
    for (int i = 0; i < j->n_ch; i++) {
        const srv_choice *c = &j->ch[i];
        const char *txt = c->r.text ? c->r.text : "";
        sb_addf(b, "%s{\"index\": %d, ", i ? ", " : "", i);
        if (chat) {
            sb_add(b, "\"message\": {\"role\": \"assistant\", \"content\": ");
            sb_json(b, txt, c->r.text_len);
            sb_add(b, "}, ");
        } else {
            sb_add(b, "\"text\": ");
            sb_json(b, txt, c->r.text_len);
            sb_add(b, ", ");
        }
        sb_addf(b, "\"logprobs\": null, \"finish_reason\": \"%s\"", finish_of(c) ? finish_of(c) : "stop");
        if (q->n_targets) label_json(b, j, c);
        sb_add(b, "}");
    }
    sb_add(b, "], \"usage\": ");
    usage_json(b, j);
    return sb_add(b, "}");
}

// ---- streaming (server-sent events) ----

static void chunk_head(strbuf *b, const stream *st, const srv_job *j) {
    sb_addf(b, "data: {\"id\": \"%s\", \"object\": \"%s\", \"created\": %lld, \"model\": ", st->id,
            j->req.kind == OAI_CHAT ? "chat.completion.chunk" : "text_completion", st->created);
    sb_json(b, j->req.model, strlen(j->req.model));
}

// One choice's chunk: text (may be empty), and its finish reason when it ends.
static void chunk(strbuf *b, const stream *st, const srv_job *j, int i, const char *txt, size_t n, const char *role,
                  const char *finish) {
    const srv_choice *c = &j->ch[i];
    chunk_head(b, st, j);
    sb_addf(b, ", \"choices\": [{\"index\": %d, ", i);
    if (j->req.kind == OAI_CHAT) {
        sb_add(b, "\"delta\": {");
        if (role) sb_addf(b, "\"role\": \"%s\"%s", role, n || !finish ? ", " : "");
        if (n || !finish) sb_add(b, "\"content\": "), sb_json(b, txt, n);
        sb_add(b, "}, ");
    } else {
        sb_add(b, "\"text\": ");
        sb_json(b, txt, n);
        sb_add(b, ", ");
    }
    sb_add(b, "\"logprobs\": null, \"finish_reason\": ");
    if (finish) sb_addf(b, "\"%s\"", finish);
    else sb_add(b, "null");
    if (j->req.n_targets) label_json(b, j, c);
    if (j->req.n_targets && finish) sb_addf(b, ", \"completion_tokens\": %d", c->r.n_ids);
    sb_add(b, "}]}\n\n");
}

// Moves what the scheduler produced into st->out (mu held). Returns 1 when
// something was added.
static int stream_collect(stream *st) {
    srv_job *j = st->job;
    size_t n0 = st->out.n;
    if (!st->opened) {
        st->opened = 1;
        if (j->req.kind == OAI_CHAT)
            for (int i = 0; i < j->n_ch; i++) chunk(&st->out, st, j, i, "", 0, "assistant", NULL);
    }
    int all = 1;
    for (int i = 0; i < j->n_ch; i++) {
        srv_choice *c = &j->ch[i];
        if (c->out.n) {
            chunk(&st->out, st, j, i, c->out.s, c->out.n, NULL, NULL);
            c->out.n = 0;
        }
        if (c->done && !c->reported) {
            c->reported = 1;
            if (finish_of(c)) chunk(&st->out, st, j, i, "", 0, NULL, finish_of(c));
            else {  // an error or a cancellation: say so in the stream, in OpenAI's error shape
                strbuf e = {0};
                const char *why = !strcmp(c->r.finish ? c->r.finish : "", "error") ? c->r.err : "the server is shutting down";
                oai_error_json(&e, why, "server_error", NULL, NULL, j->req.n_targets ? j->t[c->target].name : NULL, i);
                sb_addf(&st->out, "data: %s\n\n", e.s ? e.s : "{}");
                sb_free(&e);
            }
        }
        all &= c->reported;
    }
    if (all && !st->ended) {
        if (j->req.include_usage) {
            chunk_head(&st->out, st, j);
            sb_add(&st->out, ", \"choices\": [], \"usage\": ");
            usage_json(&st->out, j);
            sb_add(&st->out, "}\n\n");
        }
        sb_add(&st->out, "data: [DONE]\n\n");
        st->ended = 1;
    }
    return st->out.n > n0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream *st = cls;
    scheduler *s = &st->sv->sch;
    for (;;) {
        if (st->sent < st->out.n) {
            size_t k = st->out.n - st->sent < max ? st->out.n - st->sent : max;
            memcpy(buf, st->out.s + st->sent, k);
            st->sent += k;
            return (ssize_t)k;
        }
        if (st->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        st->out.n = st->sent = 0;
        pthread_mutex_lock(&s->mu);
        int got = stream_collect(st);
        if (!got) timed_wait(&s->progress, &s->mu, 100);
        pthread_mutex_unlock(&s->mu);
        if (!got && st->fd >= 0 && client_gone(st->fd)) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void stream_free(void *cls) {
    stream *st = cls;
    sched_release(&st->sv->sch, st->job);  // cancels the job if it still runs: the client left
    sb_free(&st->out);
    free(st);
}

// ---- the generation endpoints ----

static enum MHD_Result generate_ep(server *sv, struct MHD_Connection *c, const char *ep, oai_kind kind, conn *cx) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return send_error(sv, c, ep, 500, "out of memory", NULL, NULL);
    char param[64];
    int rc = oai_parse(&j->req, kind, cx->body.s ? cx->body.s : "", cx->body.n, param, sizeof param), status = 400;
    if (rc) {
        srv_job_free(j);
        return send_error(sv, c, ep, rc == QL_ENOMEM ? 500 : 400, ql_errmsg(), param, NULL);
    }
    j->t_arrive = time_now();
    char bad[OAI_NAME_MAX];
    int bad_i;
    rc = build_job(sv, j, &status, param, sizeof param, bad, &bad_i);
    if (!rc && sv->quiesced) rc = ql_err(QL_EINVAL, "the server is shutting down"), status = 503;
    if (!rc && (rc = sched_submit(&sv->sch, j))) status = 503;
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ql_errmsg());
        for (int i = 0; i < j->n_t; i++) reg_release(&sv->g, j->t[i].ad), free(j->t[i].prompt);
        free(j->t);
        srv_job_free(j);
        return send_error_for(sv, c, ep, status, msg, param, status == 404 ? "model_not_found" : NULL, bad[0] ? bad : NULL,
                              bad[0] ? bad_i : -1);
    }
    char id[48];
    long long created = (long long)time(NULL);
    snprintf(id, sizeof id, "%s-%016llx", kind == OAI_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)next_id(sv));
    int fd = conn_fd(c);
    if (j->req.stream) {
        stream *st = calloc(1, sizeof *st);
        struct MHD_Response *r = st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, st, stream_free) : NULL;
        if (!r) {
            free(st);
            sched_release(&sv->sch, j);
            return send_error(sv, c, ep, 500, "out of memory", NULL, NULL);
        }
        st->sv = sv, st->job = j, st->fd = fd, st->created = created;
        snprintf(st->id, sizeof st->id, "%s", id);
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        enum MHD_Result ok = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        metrics_request(&sv->mx, ep, 200);
        return ok;
    }
    // not streamed: wait here (this connection's own thread) for every choice
    scheduler *s = &sv->sch;
    pthread_mutex_lock(&s->mu);
    int gone = 0;
    while (j->n_done < j->n_ch && !gone) {
        timed_wait(&s->progress, &s->mu, 100);
        if (j->n_done < j->n_ch && fd >= 0 && client_gone(fd)) gone = 1;
    }
    pthread_mutex_unlock(&s->mu);
    if (gone) {
        sched_release(s, j);
        metrics_request(&sv->mx, ep, 499);  // nginx's "client closed request"
        return MHD_NO;
    }
    const char *err = NULL;
    int cancelled = 0;
    for (int i = 0; i < j->n_ch; i++) {
        const char *f = j->ch[i].r.finish ? j->ch[i].r.finish : "error";
        if (!strcmp(f, "error")) err = j->ch[i].r.err;
        cancelled |= !strcmp(f, "cancelled");
    }
    enum MHD_Result ok;
    if (err || cancelled) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s", err ? err : "the server is shutting down");
        ok = send_error(sv, c, ep, err ? 500 : 503, msg, NULL, NULL);
    } else {
        strbuf b = {0};
        response_json(&b, j, id, created);
        ok = send_json(sv, c, ep, 200, &b);
    }
    sched_release(s, j);
    return ok;
}

// ---- adapter endpoints (vLLM's) ----

static enum MHD_Result adapter_ep(server *sv, struct MHD_Connection *c, const char *ep, int load, conn *cx) {
    json_doc d;
    char *name = NULL, *path = NULL;
    const char *param = NULL;
    int rc = json_parse(&d, cx->body.s ? cx->body.s : "", cx->body.n, "request body");
    if (rc) return send_error(sv, c, ep, 400, ql_errmsg(), NULL, NULL);
    int two;
    if (json_type(&d, 0) != JSON_OBJECT || json_bad_member(&d, &two) >= 0)
        rc = ql_err(QL_EFORMAT, "request body: expected a JSON object with \"lora_name\"%s", load ? " and \"lora_path\"" : "");
    for (int k = 0; !rc && k < json_size(&d, 0); k++) {
        int key = json_member(&d, 0, k, NULL);
        if (!json_eq(&d, key, "lora_name") && !(load && json_eq(&d, key, "lora_path")) && !json_eq(&d, key, "lora_int_id")) {
            int n = d.tok[key].end - d.tok[key].start;
            rc = ql_err(QL_EFORMAT, "request body: unknown field \"%.*s\"", n > 40 ? 40 : n, d.js + d.tok[key].start);
        }
    }
    int v = rc ? -1 : json_find(&d, 0, "lora_name");
    if (!rc && v < 0) rc = ql_err(QL_EFORMAT, "request body: field 'lora_name' is missing"), param = "lora_name";
    if (!rc && (rc = json_get_string(&d, v, "lora_name", &name, NULL))) param = "lora_name";
    if (!rc && load) {
        v = json_find(&d, 0, "lora_path");
        if (v < 0) rc = ql_err(QL_EFORMAT, "request body: field 'lora_path' is missing"), param = "lora_path";
        else if ((rc = json_get_string(&d, v, "lora_path", &path, NULL))) param = "lora_path";
    }
    json_free(&d);
    int status = 400;
    if (!rc) {
        rc = load ? reg_load(&sv->g, name, path) : reg_unload(&sv->g, name);
        if (rc) status = rc == QL_ENOENT ? 404 : 400, param = load && rc != QL_EINVAL ? "lora_path" : "lora_name";
    }
    enum MHD_Result ok;
    if (rc) {
        ok = send_error(sv, c, ep, status, ql_errmsg(), param, status == 404 ? "model_not_found" : NULL);
    } else {
        char msg[256];
        snprintf(msg, sizeof msg, "Success: LoRA adapter '%s' %s successfully.", name, load ? "added" : "removed");
        ok = send_body(sv, c, ep, 200, "text/plain; charset=utf-8", msg, strlen(msg), NULL);
    }
    free(name), free(path);
    return ok;
}

// ---- the playground (serve/playground.h) ----

// A page file or a loss curve: data is copied unless it is the binary's own
// (persistent); csp is the Content-Security-Policy it runs under.
static enum MHD_Result send_file(server *sv, struct MHD_Connection *c, const char *ep, const char *type,
                                 const void *data, size_t n, int persistent, const char *csp) {
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)data, persistent ? MHD_RESPMEM_PERSISTENT
                                                                                           : MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Content-Security-Policy", csp);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Cache-Control", "no-cache");  // a new binary's page, a retrained adapter's curve
    enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    metrics_request(&sv->mx, ep, 200);
    return ok;
}

// GET of a page file (GET / is the page); another method is 405.
static enum MHD_Result asset_ep(server *sv, struct MHD_Connection *c, const web_asset *a, int get) {
    const char *ep = !strcmp(a->url, "/") ? "/" : "/playground/{file}";
    if (!get) return send_error(sv, c, ep, 405, "the playground's files take GET", NULL, NULL);
    return send_file(sv, c, ep, a->type, a->data, a->len, 1, PG_CSP);
}

// GET /v1/qlora/store
static enum MHD_Result store_ep(server *sv, struct MHD_Connection *c, const char *ep) {
    pg_base base = {.id = sv->o.served_name, .max_model_len = sv->f.max_T,
                    .tmpl = sv->o.base_has_tmpl ? sv->o.base_tmpl : sv->o.fallback_tmpl,
                    .tmpl_from = sv->o.base_has_tmpl ? "tokenizer_config.json" : "--chat-template"};
    strbuf b = {0};
    if (pg_store_json(&b, &sv->g, &base)) {
        sb_free(&b);
        return send_error(sv, c, ep, 500, ql_errmsg(), NULL, NULL);
    }
    return send_json(sv, c, ep, 200, &b);
}

// GET /v1/qlora/store/NAME/loss.svg
static enum MHD_Result curve_ep(server *sv, struct MHD_Connection *c, const char *ep, const char *name) {
    char *svg = NULL;
    size_t n = 0;
    int rc = pg_curve(&sv->g, name, &svg, &n);
    if (rc) {
        char msg[1200];
        snprintf(msg, sizeof msg, "%s", ql_errmsg());
        return send_error(sv, c, ep, rc == QL_ENOENT ? 404 : rc == QL_ENOMEM || rc == QL_EIO ? 500 : 400, msg, NULL,
                          rc == QL_ENOENT ? "not_found" : NULL);
    }
    enum MHD_Result ok = send_file(sv, c, ep, "image/svg+xml", svg, n, 0, PG_SVG_CSP);
    free(svg);
    return ok;
}

// ---- routing ----

static enum MHD_Result route(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                             const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    server *sv = cls;
    conn *cx = *con_cls;
    if (!cx) {  // the headers are in: refuse a body over the limit before reading it
        if (!(cx = calloc(1, sizeof *cx))) return MHD_NO;
        *con_cls = cx;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > sv->o.max_body) cx->too_large = 1;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cx->too_large && cx->body.n + *upload_size > sv->o.max_body) cx->too_large = 1;
        if (!cx->too_large && sb_addn(&cx->body, upload, *upload_size)) cx->too_large = 1;
        *upload_size = 0;
        return MHD_YES;
    }
    const char *ep = url;
    static const char *const known[] = {"/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions",
                                        "/v1/load_lora_adapter", "/v1/unload_lora_adapter", NULL};
    int k = 0;
    while (known[k] && strcmp(url, known[k])) k++;
    int model_id = !known[k] && !strncmp(url, "/v1/models/", 11) && url[11];
    if (model_id) ep = "/v1/models/{id}";
    else if (!known[k]) ep = "other";
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    if (cx->too_large) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request body is over the limit of %zu bytes (--max-body)", sv->o.max_body);
        return send_error(sv, c, ep, 413, msg, NULL, NULL);
    }
    if (k == 0 && get) return send_body(sv, c, ep, 200, "application/json", "{\"status\": \"ok\"}", 16, NULL);
    // the page's files hold no data and a browser cannot send a key to open a page: open, as /health is
    const web_asset *wa = pg_asset(url);
    if (wa) return asset_ep(sv, c, wa, get);
    if (!authorized(sv, c)) return send_error(sv, c, ep, 401, "a missing or wrong API key (Authorization: Bearer KEY)", NULL, "invalid_api_key");
    char name[OAI_NAME_MAX + 1];
    if (!strcmp(url, "/v1/qlora/store"))
        return get ? store_ep(sv, c, url) : send_error(sv, c, url, 405, "/v1/qlora/store takes GET", NULL, NULL);
    if (pg_curve_url(url, name, sizeof name)) {
        ep = "/v1/qlora/store/{name}/loss.svg";
        return get ? curve_ep(sv, c, ep, name) : send_error(sv, c, ep, 405, "loss.svg takes GET", NULL, NULL);
    }
    if (model_id) {
        if (!get) return send_error(sv, c, ep, 405, "/v1/models/{id} takes GET", NULL, NULL);
        return model_ep(sv, c, url + 11);
    }
    if (!known[k]) {
        char msg[300];
        snprintf(msg, sizeof msg, "no such endpoint: %s %.200s", method, url);
        return send_error(sv, c, ep, 404, msg, NULL, NULL);
    }
    int wants_get = k <= 2;
    if (wants_get ? !get : !post) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s takes %s, not %s", url, wants_get ? "GET" : "POST", method);
        return send_error(sv, c, ep, 405, msg, NULL, NULL);
    }
    if (sv->quiesced && k >= 3) return send_error(sv, c, ep, 503, "the server is shutting down", NULL, NULL);
    switch (k) {
    case 1: {
        strbuf b = {0};
        if (metrics_write(&sv->mx, &b)) return send_error(sv, c, ep, 500, ql_errmsg(), NULL, NULL);
        enum MHD_Result ok = send_body(sv, c, ep, 200, "text/plain; version=0.0.4", b.s, b.n, NULL);
        sb_free(&b);
        return ok;
    }
    case 2: return models(sv, c);
    case 3: return generate_ep(sv, c, ep, OAI_COMPLETIONS, cx);
    case 4: return generate_ep(sv, c, ep, OAI_CHAT, cx);
    case 5: return adapter_ep(sv, c, ep, 1, cx);
    default: return adapter_ep(sv, c, ep, 0, cx);
    }
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
    conn *cx = *con_cls;
    if (!cx) return;
    sb_free(&cx->body);
    free(cx);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = '\0';
    log_debug("libmicrohttpd: %s", msg);
}

// ---- start and stop ----

int server_start(server **out, model *m, const tokenizer *tok, ops *o, const server_opts *so) {
    *out = NULL;
    server *sv = calloc(1, sizeof *sv);
    if (!sv) return ql_err(QL_ENOMEM, "out of memory");
    sv->o = *so, sv->m = m, sv->tok = tok;
    pthread_mutex_init(&sv->id_mu, NULL);
    metrics_init(&sv->mx);
    int T = so->ctx, S = so->max_batch;
    int rc = reg_init(&sv->g, &m->cfg, so->adapter_dir, so->max_loras, so->allow_any_path, so->follow_symlinks);
    if (rc) {
        metrics_free(&sv->mx);
        free(sv);
        return rc;
    }
    rc = fwd_init_slots(&sv->f, m, o, T, S > 512 ? S : 512, S);
    if (!rc) {
        const model_config *c = &m->cfg;
        double kv = 2.0 * c->n_layers * S * T * (c->n_kv_heads * (c->dim / c->n_heads)) * sizeof(float);
        log_info("serve: %d sequences per batch, context %d tokens each (KV cache %.0f MB)", S, T, kv / 1e6);
        double ram = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
        if (o->host_memory && ram > 0 && kv > 0.5 * ram)
            log_warn("serve: the KV cache (%.1f GB) is over half of this machine's memory (%.1f GB) once every slot "
                     "is full; lower --max-batch or --ctx", kv / 1e9, ram / 1e9);
        rc = sched_open(&sv->sch, &sv->f, tok, &sv->g, &sv->mx, so->max_queue, so->threads);
    }
    if (rc) {
        fwd_free(&sv->f);
        reg_free(&sv->g);
        metrics_free(&sv->mx);
        free(sv);
        return rc;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, so->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET, a4->sin_port = htons((uint16_t)so->port);
    } else if (inet_pton(AF_INET6, so->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6, a6->sin6_port = htons((uint16_t)so->port);
        flags |= MHD_USE_IPv6;
    } else {
        rc = ql_err(QL_EINVAL, "--host: expected an IPv4 or IPv6 address (127.0.0.1, ::1, 0.0.0.0), found '%s'", so->host);
    }
    if (!rc) {
        sv->d = MHD_start_daemon(flags, (uint16_t)so->port, NULL, NULL, route, sv, MHD_OPTION_SOCK_ADDR, &ss,
                                 MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
                                 (unsigned)300, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                                 MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
        if (!sv->d) rc = ql_err(QL_EIO, "cannot listen on %s port %d (in use, or not an address of this machine?)", so->host, so->port);
    }
    if (rc) {
        sched_close(&sv->sch);
        fwd_free(&sv->f);
        reg_free(&sv->g);
        metrics_free(&sv->mx);
        free(sv);
        return rc;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(sv->d, MHD_DAEMON_INFO_BIND_PORT);
    sv->port = di ? di->port : so->port;
    *out = sv;
    return QL_OK;
}

int server_port(const server *sv) { return sv->port; }

int server_busy(server *sv) { return sched_busy(&sv->sch); }

void server_quiesce(server *sv) {
    sv->quiesced = 1;
    MHD_socket fd = MHD_quiesce_daemon(sv->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

void server_stop(server *sv) {
    if (!sv) return;
    sv->quiesced = 1;
    sched_stop(&sv->sch);      // waiting HTTP threads wake with their jobs cancelled
    MHD_stop_daemon(sv->d);    // then every connection's thread ends
    sched_close(&sv->sch);
    fwd_free(&sv->f);
    reg_free(&sv->g);
    metrics_free(&sv->mx);
    pthread_mutex_destroy(&sv->id_mu);
    free(sv);
}
