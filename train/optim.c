// optim.c: see optim.h.
#include "optim.h"

#include <math.h>
#include <string.h>

#include "../common/err.h"

float lr_at(const adamw_config *c, int step) {
    if (c->warmup > 0 && step < c->warmup) return c->lr * (float)(step + 1) / (float)c->warmup;
    int span = c->total_steps - c->warmup;
    if (span <= 0 || c->schedule == SCHED_CONSTANT) return c->lr;
    double frac = (double)(step - c->warmup) / span;
    if (frac > 1) frac = 1;
    if (c->schedule == SCHED_LINEAR) return (float)(c->lr * (1.0 - frac));
    return (float)(c->lr * 0.5 * (1.0 + cos(M_PI * frac)));
}

int sched_parse(int *out, const char *name) {
    if (!strcmp(name, "cosine")) *out = SCHED_COSINE;
    else if (!strcmp(name, "linear")) *out = SCHED_LINEAR;
    else if (!strcmp(name, "constant")) *out = SCHED_CONSTANT;
    else return ql_err(QL_EINVAL, "--schedule: expected cosine, linear or constant, found '%s'", name);
    return QL_OK;
}

const char *sched_name(int s) { return s == SCHED_LINEAR ? "linear" : s == SCHED_CONSTANT ? "constant" : "cosine"; }
