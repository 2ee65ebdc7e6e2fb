// metrics.c: see metrics.h.
#include "metrics.h"

#include <string.h>

#include "../common/err.h"

// vLLM's buckets for the same two histograms (vllm/engine/metrics.py).
static const double ttft_le[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0};
static const double itl_le[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5};

void metrics_init(metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    m->ttft.le = ttft_le, m->ttft.n = (int)(sizeof ttft_le / sizeof *ttft_le);
    m->itl.le = itl_le, m->itl.n = (int)(sizeof itl_le / sizeof *itl_le);
}

void metrics_free(metrics *m) { pthread_mutex_destroy(&m->mu); }

void metrics_request(metrics *m, const char *endpoint, int status) {
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->n_req && (m->req[i].status != status || strcmp(m->req[i].endpoint, endpoint))) i++;
    if (i == m->n_req && i < METRICS_MAX_STATUS) {
        snprintf(m->req[i].endpoint, sizeof m->req[i].endpoint, "%s", endpoint);
        m->req[i].status = status, m->req[i].n = 0;
        m->n_req++;
    }
    if (i < m->n_req) m->req[i].n++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_tokens(metrics *m, long long prompt, long long generated) {
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += prompt, m->generated_tokens += generated;
    pthread_mutex_unlock(&m->mu);
}

void metrics_gauges(metrics *m, int running, int waiting, int batch, int adapters) {
    pthread_mutex_lock(&m->mu);
    m->running = running, m->waiting = waiting, m->batch = batch, m->adapters = adapters;
    pthread_mutex_unlock(&m->mu);
}

static void observe(metrics *m, histogram *h, double x) {
    pthread_mutex_lock(&m->mu);
    int b = 0;
    while (b < h->n && x > h->le[b]) b++;
    h->count[b]++, h->total++, h->sum += x;
    pthread_mutex_unlock(&m->mu);
}

void metrics_ttft(metrics *m, double s) { observe(m, &m->ttft, s); }
void metrics_itl(metrics *m, double s) { observe(m, &m->itl, s); }

static int write_hist(strbuf *b, const char *name, const char *help, const histogram *h) {
    QL_CHECK(sb_addf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name));
    long long cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += h->count[i];
        QL_CHECK(sb_addf(b, "%s_bucket{le=\"%g\"} %lld\n", name, h->le[i], cum));
    }
    QL_CHECK(sb_addf(b, "%s_bucket{le=\"+Inf\"} %lld\n", name, h->total));
    return sb_addf(b, "%s_sum %.6f\n%s_count %lld\n", name, h->sum, name, h->total);
}

int metrics_write(metrics *m, strbuf *b) {
    pthread_mutex_lock(&m->mu);
    int rc = sb_add(b, "# HELP qlora_requests_total HTTP requests by endpoint and status code.\n"
                       "# TYPE qlora_requests_total counter\n");
    for (int i = 0; i < m->n_req && !rc; i++)
        rc = sb_addf(b, "qlora_requests_total{endpoint=\"%s\",status=\"%d\"} %lld\n", m->req[i].endpoint,
                     m->req[i].status, m->req[i].n);
    if (!rc)
        rc = sb_addf(b,
                     "# HELP qlora_prompt_tokens_total Prompt tokens processed.\n# TYPE qlora_prompt_tokens_total counter\n"
                     "qlora_prompt_tokens_total %lld\n"
                     "# HELP qlora_generation_tokens_total Tokens generated.\n# TYPE qlora_generation_tokens_total counter\n"
                     "qlora_generation_tokens_total %lld\n"
                     "# HELP qlora_requests_running Sequences in the running batch.\n# TYPE qlora_requests_running gauge\n"
                     "qlora_requests_running %d\n"
                     "# HELP qlora_requests_waiting Sequences queued for a slot.\n# TYPE qlora_requests_waiting gauge\n"
                     "qlora_requests_waiting %d\n"
                     "# HELP qlora_batch_size Sequences in the last step.\n# TYPE qlora_batch_size gauge\n"
                     "qlora_batch_size %d\n"
                     "# HELP qlora_adapters_loaded LoRA adapters in memory.\n# TYPE qlora_adapters_loaded gauge\n"
                     "qlora_adapters_loaded %d\n",
                     m->prompt_tokens, m->generated_tokens, m->running, m->waiting, m->batch, m->adapters);
    if (!rc) rc = write_hist(b, "qlora_time_to_first_token_seconds", "Time from arrival to the first generated token.", &m->ttft);
    if (!rc) rc = write_hist(b, "qlora_inter_token_latency_seconds", "Time between two tokens of one sequence.", &m->itl);
    pthread_mutex_unlock(&m->mu);
    return rc;
}
