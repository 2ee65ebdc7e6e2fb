// metrics.h: the server's counters, gauges and latency histograms, written out
// in Prometheus' text exposition format (GET /metrics). Names follow vLLM's
// where it has one (vllm:time_to_first_token_seconds -> qlora_time_to_first_token_seconds).
// Thread-safe.
#ifndef QL_METRICS_H
#define QL_METRICS_H

#include <pthread.h>

#include "../common/strbuf.h"

#define METRICS_MAX_STATUS 48
#define METRICS_NBUCKETS 16

typedef struct {
    const double *le;           // upper bounds, increasing (n of them; +Inf is implicit)
    int n;
    long long count[METRICS_NBUCKETS + 1];  // per bucket (not cumulative); the last is +Inf
    double sum;
    long long total;
} histogram;

typedef struct {
    pthread_mutex_t mu;
    struct { char endpoint[40]; int status; long long n; } req[METRICS_MAX_STATUS];
    int n_req;
    long long prompt_tokens, generated_tokens;
    int running, waiting, batch, adapters;   // gauges, set by the scheduler
    histogram ttft, itl;
} metrics;

void metrics_init(metrics *m);
void metrics_free(metrics *m);
void metrics_request(metrics *m, const char *endpoint, int status);
void metrics_tokens(metrics *m, long long prompt, long long generated);
void metrics_gauges(metrics *m, int running, int waiting, int batch, int adapters);
void metrics_ttft(metrics *m, double seconds);
void metrics_itl(metrics *m, double seconds);
int metrics_write(metrics *m, strbuf *b);

#endif
