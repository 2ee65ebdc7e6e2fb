// optim.h: the optimizer's settings and the learning-rate schedule. The AdamW
// step itself is a backend op (kernels/ops.h adamw), called by train_update.
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

// Learning rate at step (0-based): warmup, then the schedule.
float lr_at(const adamw_config *c, int step);
int sched_parse(int *out, const char *name);
const char *sched_name(int s);

#endif
