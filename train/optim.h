// optim.h: AdamW over the adapter's fp32 master weights, the learning-rate
// schedule and global-norm gradient clipping.
#ifndef QL_OPTIM_H
#define QL_OPTIM_H

#include <stddef.h>

enum { SCHED_COSINE = 0, SCHED_LINEAR, SCHED_CONSTANT };

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int warmup;       // steps of linear warmup from 0
    int schedule;     // SCHED_*: decay to 0 at total_steps after warmup
    int total_steps;
    float max_grad_norm;  // <= 0: no clipping
} adamw_config;

// One parameter tensor and its state (all host fp32).
typedef struct {
    float *p, *g, *m, *v;
    size_t n;
} adamw_param;

// Learning rate at step (0-based): warmup, then the schedule.
float lr_at(const adamw_config *c, int step);
// Global L2 norm of all gradients (double accumulation).
double grad_norm(const adamw_param *ps, int n);
// One AdamW step (torch.optim.AdamW semantics: decoupled weight decay p -= lr*wd*p,
// bias-corrected moments), after scaling gradients by clip = min(1, max_norm/norm).
// step is 1-based for the bias correction.
void adamw_step(const adamw_config *c, adamw_param *ps, int n, int step, float lr, float clip);

int sched_parse(int *out, const char *name);
const char *sched_name(int s);

#endif
