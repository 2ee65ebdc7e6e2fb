// scheduler.h: qlora serve's one thread that owns the engine and the backend.
//
// HTTP threads build a job (a parsed request, its adapters acquired, its prompts
// tokenized and checked against the context) and submit it; the scheduler admits
// the job's sequences into free KV slots between two engine steps (continuous
// batching: a request joins the running batch at the next step, with its own
// adapter, scale, sampler, stop strings and limit), runs steps while any sequence
// is active, and hands each sequence's new text back to the HTTP thread that
// streams or collects it. A job whose client went away is cancelled: its
// sequences leave the batch at the next step.
//
// One mutex (mu) guards the queue and every job's shared fields; engine steps run
// without it. Lock order: mu, then the registry's.
#ifndef QL_SCHEDULER_H
#define QL_SCHEDULER_H

#include <pthread.h>

#include "../model/forward.h"
#include "../common/strbuf.h"
#include "../infer/engine.h"
#include "metrics.h"
#include "openai.h"
#include "registry.h"

typedef struct srv_job srv_job;

// One sequence of a job: one choice of the response.
typedef struct {
    eng_req r;              // the engine's request (its adapter, sampler, limits)
    srv_job *job;
    int target;             // index in job->t
    strbuf fresh;           // text of the current step (the scheduler's alone)
    strbuf out;             // text not yet taken by the HTTP thread (under mu)
    int started, done;      // done: r.finish is set, no more text (under mu)
    int reported;           // the HTTP thread has sent its end
    int n_seen;             // tokens seen by the metrics
    double t_last;
} srv_choice;

// One adapter (or the base) a job runs on, with its rendered prompt.
typedef struct {
    reg_adapter *ad;        // NULL: the base
    char name[OAI_NAME_MAX];  // the label: the adapter's name or the base's id
    float scale;
    int *prompt, n_prompt;
} srv_target;

struct srv_job {
    srv_job *next;          // the queue
    oai_request req;        // owns the stop strings the choices point at
    srv_target *t;
    int n_t;
    srv_choice *ch;         // n_t * req.n, target-major
    int n_ch;
    int next_start;         // the first choice not yet admitted
    int n_done;
    int cancelled;          // the client went away (or the server stops)
    int refs;               // the HTTP thread and the scheduler
    double t_arrive;
};

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t work;    // to the scheduler: a job arrived or was cancelled
    pthread_cond_t progress;  // to HTTP threads: text, a finish or a cancellation
    pthread_t thread;
    int started;
    fwd_state *f;
    engine e;
    srv_choice **running;   // (n_slots) the choice in each slot
    srv_job *head, *tail;   // jobs with choices not yet admitted
    int queued, max_queue;  // jobs in the queue
    int stop;               // cancel everything and leave
    int threads;            // CPU threads for the steps (0: all)
    registry *g;
    metrics *mx;
} scheduler;

// Starts the thread; f (and its model and backend) belong to it from now on.
int sched_open(scheduler *s, fwd_state *f, const tokenizer *tok, registry *g, metrics *mx, int max_queue, int threads);
// Stops admitting: every job is cancelled, waiting HTTP threads wake (the thread
// ends once nothing runs; sched_close joins it).
void sched_stop(scheduler *s);
// Cancels what is left, joins the thread, frees what is left.
void sched_close(scheduler *s);
// j: filled by the caller (choices' eng_req, targets, req); the scheduler takes a
// reference. QL_EINVAL when the queue holds max_queue jobs already (the caller
// still owns j then).
int sched_submit(scheduler *s, srv_job *j);
// With mu held: marks j cancelled and wakes the scheduler.
void sched_cancel_locked(scheduler *s, srv_job *j);
// The HTTP thread is done with j (mu not held): frees it when the scheduler is too.
void sched_release(scheduler *s, srv_job *j);
// Frees a job nobody else holds (one that was never submitted).
void srv_job_free(srv_job *j);
// Jobs queued or with a sequence running.
int sched_busy(scheduler *s);

#endif
