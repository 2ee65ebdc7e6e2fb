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

double grad_norm(const adamw_param *ps, int n) {
    double s = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < ps[i].n; j++) s += (double)ps[i].g[j] * ps[i].g[j];
    return sqrt(s);
}

void adamw_step(const adamw_config *c, adamw_param *ps, int n, int step, float lr, float clip) {
    const double bc1 = 1.0 - pow(c->beta1, step), bc2 = 1.0 - pow(c->beta2, step);
    const float b1 = c->beta1, b2 = c->beta2, decay = 1.0f - lr * c->weight_decay;
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    for (int i = 0; i < n; i++) {
        adamw_param *q = &ps[i];
        #pragma omp parallel for if (q->n > 65536)
        for (size_t j = 0; j < q->n; j++) {
            float g = q->g[j] * clip;
            q->p[j] *= decay;
            q->m[j] = b1 * q->m[j] + (1 - b1) * g;
            q->v[j] = b2 * q->v[j] + (1 - b2) * g * g;
            q->p[j] -= step_size * q->m[j] / (sqrtf(q->v[j]) / bc2_sqrt + c->eps);
        }
    }
}

int sched_parse(int *out, const char *name) {
    if (!strcmp(name, "cosine")) *out = SCHED_COSINE;
    else if (!strcmp(name, "linear")) *out = SCHED_LINEAR;
    else if (!strcmp(name, "constant")) *out = SCHED_CONSTANT;
    else return ql_err(QL_EINVAL, "--schedule: expected cosine, linear or constant, found '%s'", name);
    return QL_OK;
}

const char *sched_name(int s) { return s == SCHED_LINEAR ? "linear" : s == SCHED_CONSTANT ? "constant" : "cosine"; }
