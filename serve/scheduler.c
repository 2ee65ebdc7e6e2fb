// scheduler.c: see scheduler.h.
#include "scheduler.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../common/err.h"
#include "../common/log.h"

void srv_job_free(srv_job *j) {
    if (!j) return;
    for (int i = 0; i < j->n_ch; i++) {
        eng_req_free(&j->ch[i].r);
        sb_free(&j->ch[i].fresh), sb_free(&j->ch[i].out);
    }
    free(j->ch);
    oai_request_free(&j->req);
    free(j);
}

// Frees j's targets' references and prompts (the registry's lock is taken).
static void job_drop(registry *g, srv_job *j) {
    for (int i = 0; i < j->n_t; i++) {
        reg_release(g, j->t[i].ad);
        free(j->t[i].prompt);
    }
    free(j->t);
    j->t = NULL, j->n_t = 0;
    srv_job_free(j);
}

static void unref(scheduler *s, srv_job *j) {  // mu held
    if (--j->refs == 0) job_drop(s->g, j);
}

// A choice's end (mu held): the job loses the scheduler's reference when it was the last.
static void choice_done(scheduler *s, srv_choice *c) {
    c->done = 1;
    if (++c->job->n_done == c->job->n_ch) unref(s, c->job);
}

static void on_text(void *ctx, const char *txt, size_t len) {
    srv_choice *c = ctx;
    if (sb_addn(&c->fresh, txt, len)) log_error("serve: out of memory for a sequence's text");
}

// Admits queued choices into free slots, and ends what was cancelled (mu held).
static int admit(scheduler *s) {
    for (int k = 0; k < s->f->n_slots; k++) {
        srv_choice *c = s->running[k];
        if (c && c->job->cancelled) {
            engine_cancel(&s->e, &c->r);
            s->running[k] = NULL;
            choice_done(s, c);
        }
    }
    int rc = QL_OK;
    while (s->head && !rc) {
        srv_job *j = s->head;
        if (!j->cancelled && engine_free_slots(&s->e) == 0) break;
        j->refs++;  // held while admitting: a choice that ends here may drop the job's last other reference
        while (!rc && j->next_start < j->n_ch && (j->cancelled || engine_free_slots(&s->e) > 0)) {
            srv_choice *c = &j->ch[j->next_start++];
            c->started = 1;
            if (j->cancelled) {
                c->r.finish = "cancelled";
                choice_done(s, c);
                continue;
            }
            c->r.on_text = on_text, c->r.on_text_ctx = c;
            if ((rc = engine_start(&s->e, &c->r))) {
                c->r.finish = "error";
                snprintf(c->r.err, sizeof c->r.err, "%s", ql_errmsg());
                choice_done(s, c);
            } else if (c->r.active) {
                s->running[c->r.slot] = c;
            } else {
                choice_done(s, c);  // finished at once (max_tokens 0)
            }
        }
        int whole = j->next_start == j->n_ch;
        if (whole) {
            s->head = j->next;
            if (!s->head) s->tail = NULL;
            s->queued--;
        }
        unref(s, j);
        if (!whole) break;
    }
    return rc;
}

static int waiting(const scheduler *s) {  // sequences not admitted yet (mu held)
    int n = 0;
    for (const srv_job *j = s->head; j; j = j->next) n += j->n_ch - j->next_start;
    return n;
}

static void forget(void *ctx, const lora_adapter *a) { fwd_forget_adapter(ctx, a); }

static void *sched_main(void *arg) {
    scheduler *s = arg;
#ifdef _OPENMP
    if (s->threads > 0) omp_set_num_threads(s->threads);  // a thread's own setting: the main thread's does not carry over
#endif
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->stop) {
            for (srv_job *j = s->head; j; j = j->next) j->cancelled = 1;
            for (int k = 0; k < s->f->n_slots; k++)
                if (s->running[k]) s->running[k]->job->cancelled = 1;
        }
        int rc = admit(s);
        if (rc) log_error("serve: %s", ql_errmsg());
        metrics_gauges(s->mx, engine_active(&s->e), waiting(s), s->e.last_batch, reg_loaded(s->g));
        pthread_cond_broadcast(&s->progress);
        if (engine_active(&s->e) == 0) {
            if (s->stop && !s->head) break;
            pthread_mutex_unlock(&s->mu);
            reg_collect(s->g, forget, s->f);
            pthread_mutex_lock(&s->mu);
            if (!s->head && !s->stop) pthread_cond_wait(&s->work, &s->mu);
            continue;
        }
        long long p0 = s->e.st.prompt_tokens, g0 = s->e.st.generated;
        pthread_mutex_unlock(&s->mu);
        rc = engine_step(&s->e);
        double now = time_now();
        reg_collect(s->g, forget, s->f);
        pthread_mutex_lock(&s->mu);
        if (rc) log_error("serve: a batch failed: %s", ql_errmsg());
        metrics_tokens(s->mx, s->e.st.prompt_tokens - p0, s->e.st.generated - g0);
        for (int k = 0; k < s->f->n_slots; k++) {
            srv_choice *c = s->running[k];
            if (!c) continue;
            if (c->fresh.n) {
                if (sb_addn(&c->out, c->fresh.s, c->fresh.n)) log_error("serve: out of memory for a sequence's text");
                c->fresh.n = 0;
            }
            if (c->r.n_ids > c->n_seen) {
                if (c->n_seen == 0) metrics_ttft(s->mx, now - c->job->t_arrive);
                else metrics_itl(s->mx, now - c->t_last);
                c->n_seen = c->r.n_ids, c->t_last = now;
            }
            if (rc && c->r.active) {  // the batch failed: every sequence in it ends with the reason
                engine_cancel(&s->e, &c->r);
                c->r.finish = "error";
                snprintf(c->r.err, sizeof c->r.err, "%s", ql_errmsg());
            }
            if (!c->r.active) {
                s->running[k] = NULL;
                choice_done(s, c);
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int sched_open(scheduler *s, fwd_state *f, const tokenizer *tok, registry *g, metrics *mx, int max_queue, int threads) {
    memset(s, 0, sizeof *s);
    s->f = f, s->g = g, s->mx = mx, s->max_queue = max_queue, s->threads = threads;
    QL_CHECK(engine_init(&s->e, f, tok));
    s->running = calloc((size_t)f->n_slots, sizeof *s->running);
    if (!s->running) {
        engine_free(&s->e);
        return ql_err(QL_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->progress, NULL);
    if (pthread_create(&s->thread, NULL, sched_main, s)) {
        sched_close(s);
        return ql_err(QL_ENOMEM, "cannot start the scheduler thread");
    }
    s->started = 1;
    return QL_OK;
}

void sched_close(scheduler *s) {
    if (s->started) {
        sched_stop(s);
        pthread_join(s->thread, NULL);
    }
    reg_collect(s->g, forget, s->f);
    engine_free(&s->e);
    free(s->running);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->progress);
    memset(s, 0, sizeof *s);
}

int sched_submit(scheduler *s, srv_job *j) {
    pthread_mutex_lock(&s->mu);
    if (s->queued >= s->max_queue || s->stop) {
        pthread_mutex_unlock(&s->mu);
        return ql_err(QL_EINVAL, s->stop ? "the server is shutting down" : "the queue is full (%d requests waiting)",
                      s->max_queue);
    }
    j->refs = 2;
    j->next = NULL;
    if (s->tail) s->tail->next = j;
    else s->head = j;
    s->tail = j;
    s->queued++;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    return QL_OK;
}

void sched_stop(scheduler *s) {
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->work);
    pthread_cond_broadcast(&s->progress);
    pthread_mutex_unlock(&s->mu);
}

void sched_cancel_locked(scheduler *s, srv_job *j) {
    if (j->n_done == j->n_ch || j->cancelled) return;
    j->cancelled = 1;
    pthread_cond_signal(&s->work);
}

void sched_release(scheduler *s, srv_job *j) {
    pthread_mutex_lock(&s->mu);
    sched_cancel_locked(s, j);
    unref(s, j);
    pthread_mutex_unlock(&s->mu);
}

int sched_busy(scheduler *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->queued + engine_active(&s->e);
    pthread_mutex_unlock(&s->mu);
    return n;
}
