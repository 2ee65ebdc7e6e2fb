// plan_cmd.h: the memory plan (plan.h) in `qlora train`: --plan prints it, and
// before a run the check refuses one that will not fit, before anything is loaded.
#ifndef QL_PLAN_CMD_H
#define QL_PLAN_CMD_H

#include "../kernels/ops.h"
#include "plan.h"

typedef struct {
    const char *base;   // --base, or "" with --shape
    const char *shape;  // --shape, or ""
    const char *backend;  // --backend: auto, cpu or cuda
    dtype base_dtype;   // --base-dtype
    plan_opts o;        // the run's B, T, rank, targets, dropout, grad_checkpoint, grad_accum, threads
} plan_request;

// qlora train --plan: the plan as a table, largest part first, then key=value
// lines ending with plan_total_MB=; whether it fits the memory here (for cuda
// without a GPU: that there is none to compare against). Returns the exit status:
// 0, 1 (the base cannot be read) or 2 (bad usage); errors go to stderr.
int plan_cmd_print(plan_request *r);
// Before a run on backend be: QL_ENOMEM, naming the three largest parts and what
// to change, when the plan needs more than be has available; QL_EINVAL when the
// options cannot make a run; QL_OK when it fits or the memory cannot be known.
int plan_cmd_check(plan_request *r, ops *be);

#endif
