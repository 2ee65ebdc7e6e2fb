// plan_cmd.c: see plan_cmd.h.
#include "plan_cmd.h"

#include <stdio.h>
#include <string.h>

#include "../common/err.h"
#include "../common/log.h"
#include "../model/lora.h"
#include "../model/model.h"
#include "../model/shapes.h"

// The model a plan is for: a named shape, held as `qlora train --base` would hold a
// Hugging Face checkpoint of it (the linears in --base-dtype; the 16-bit embedding
// and lm_head as stored, f32 with --base-dtype f32), or the base's own config and dtypes.
static int plan_model(plan_request *r, model_config *c) {
    if (!r->shape[0]) return plan_read_base(r->base, r->base_dtype, c, &r->o);
    const model_shape *s = model_shape_find(r->shape);
    if (!s) return ql_err(QL_EINVAL, "--shape: unknown shape '%s' (known: %s)", r->shape, model_shape_names());
    *c = s->cfg;
    r->o.base_dtype = r->base_dtype;
    r->o.embed_dtype = r->o.head_dtype = r->base_dtype == DT_F32 ? DT_F32 : DT_F16;
    r->o.tied = c->tie_embeddings;
    return QL_OK;
}

// What shrinks the plan, for messages: the options that would change it most.
static void plan_hints(char *buf, size_t cap, const plan_opts *o) {
    snprintf(buf, cap, "%sa smaller --seq-len or --batch-size%s%s", o->grad_checkpoint ? "" : "--grad-checkpoint, ",
             o->dropout > 0 ? ", --dropout 0 (no adapter inputs kept for the backward)" : "",
             o->backend == PLAN_CPU && o->base_dtype != DT_NF4 ? ", --base-dtype nf4" : "");
}

static const char *kind_name(plan_kind k) {
    return k == PLAN_WEIGHTS ? "weights" : k == PLAN_ALLOC ? "buffers" : k == PLAN_SCRATCH ? "scratch" : "host";
}

static const char *memory_name(plan_backend b) { return b == PLAN_CUDA ? "GPU memory" : "memory"; }

// The memory here to hold the plan to, or why there is none: *known 0.
static uint64_t plan_here(const plan_request *r, ops *be, const char *no_gpu, int *known, char *why, size_t cap) {
    uint64_t avail = 0;
    *known = 0;
    if (r->o.backend == PLAN_CUDA && !be) snprintf(why, cap, "no GPU here to compare against (%s)", no_gpu);
    else if (plan_available(r->o.backend, be, &avail)) snprintf(why, cap, "%s", ql_errmsg());
    else *known = 1;
    return avail;
}

static void print_table(const mem_plan *p0, const char *model, const char *backend, const plan_opts *o) {
    mem_plan p = *p0;
    plan_sort(&p);
    char mods[128] = "";
    for (int k = 0; k < LORA_NMODULES; k++)
        if (o->targets & (1u << k)) snprintf(mods + strlen(mods), sizeof mods - strlen(mods), "%s%s", mods[0] ? "," : "",
                                             LORA_MODULE_NAMES[k]);
    printf("memory plan: %s on %s: %d x %d tokens, rank %d on %s, dropout %g, grad checkpoint %s, linears %s\n", model,
           backend, o->B, o->T, o->rank, mods, (double)o->dropout, o->grad_checkpoint ? "on" : "off",
           base_dtype_name(o->base_dtype));
    printf("%-42s %-8s %7s %11s %11s %7s\n", "part", "kind", "count", "MB each", "MB", "share");
    for (int i = 0; i < p.n; i++) {
        const plan_part *q = &p.part[i];
        char each[32] = "-";
        if (q->each) snprintf(each, sizeof each, "%.3f", q->each / 1e6);
        printf("%-42s %-8s %7lld %11s %11.1f %6.1f%%\n", q->name, kind_name(q->kind), (long long)q->count, each,
               q->bytes / 1e6, 100.0 * (double)q->bytes / (double)p.total);
    }
    printf("%-42s %-8s %7s %11s %11.1f %6.1f%%\n", "total", "", "", "", p.total / 1e6, 100.0);
}

// The plan's key=value lines; plan_total_MB= is the last, and the only one of its name.
static void print_keys(const mem_plan *p, const char *backend, int known, uint64_t avail) {
    mem_plan s = *p;
    plan_sort(&s);
    printf("plan_backend=%s\n", backend);
    printf("plan_largest=\"%s\"\n", s.n ? s.part[0].name : "");
    printf("plan_weights_MB=%.1f plan_buffers_MB=%.1f plan_scratch_MB=%.1f plan_host_MB=%.1f\n",
           plan_kind_bytes(p, PLAN_WEIGHTS) / 1e6, plan_kind_bytes(p, PLAN_ALLOC) / 1e6,
           plan_kind_bytes(p, PLAN_SCRATCH) / 1e6, plan_kind_bytes(p, PLAN_HOST) / 1e6);
    if (known) printf("plan_available_MB=%.1f\n", avail / 1e6);
    printf("plan_fits=%s\n", !known ? "unknown" : p->total <= avail ? "yes" : "no");
    printf("plan_total_bytes=%llu\n", (unsigned long long)p->total);
    printf("plan_total_MB=%.1f\n", p->total / 1e6);
}

int plan_cmd_print(plan_request *r) {
    if (!r->base[0] == !r->shape[0]) {
        fprintf(stderr, "qlora train: error: --plan needs either --base FILE|DIR or --shape NAME (%s); %s\n",
                model_shape_names(), r->base[0] ? "both were given" : "neither was given");
        return 2;
    }
    if (strcmp(r->backend, "auto") && strcmp(r->backend, "cpu") && strcmp(r->backend, "cuda")) {
        fprintf(stderr, "qlora train: error: --plan: --backend: expected auto, cpu or cuda, found '%s'\n", r->backend);
        return 2;
    }
    model_config c;
    int rc = plan_model(r, &c);
    if (rc) {
        fprintf(stderr, "qlora train: error: %s\n", ql_errmsg());
        return rc == QL_EINVAL ? 2 : 1;
    }
    // the backend a run would take: cuda is planned with or without a GPU (it is only
    // asked for its free memory); auto is the GPU when one is usable, else the CPU
    ops *be = NULL;
    char no_gpu[512] = "";
    if (strcmp(r->backend, "cpu") && !(be = ops_new(r->backend, r->o.threads)))
        snprintf(no_gpu, sizeof no_gpu, "%s", ql_errmsg());
    const char *backend = be ? be->name : !strcmp(r->backend, "cpu") ? "cpu" : "cuda";
    r->o.backend = (plan_backend)plan_backend_of(backend);
    mem_plan p;
    if ((rc = train_plan(&p, &c, &r->o))) {
        fprintf(stderr, "qlora train: error: %s\n", ql_errmsg());
        ops_delete(be);
        return 2;
    }
    int known;
    char why[1024] = "";
    uint64_t avail = plan_here(r, be, no_gpu, &known, why, sizeof why);
    print_table(&p, r->shape[0] ? r->shape : r->base, backend, &r->o);
    if (!known) {
        printf("fits: unknown: %s\n", why);
    } else if (p.total <= avail) {
        printf("fits: yes: %.1f MB of the %.1f MB of %s available here\n", p.total / 1e6, avail / 1e6,
               memory_name(r->o.backend));
    } else {
        char hint[512];
        plan_hints(hint, sizeof hint, &r->o);
        printf("fits: no: %.1f MB needed, %.1f MB of %s available here; try %s\n", p.total / 1e6, avail / 1e6,
               memory_name(r->o.backend), hint);
    }
    print_keys(&p, backend, known, avail);
    ops_delete(be);
    return 0;
}

int plan_cmd_check(plan_request *r, ops *be) {
    int b = plan_backend_of(be->name);
    if (b < 0) return QL_OK;  // the reference backend: for tests, its memory is not planned
    model_config c;
    QL_CHECK(plan_model(r, &c));
    r->o.backend = (plan_backend)b;
    mem_plan p;
    QL_CHECK(train_plan(&p, &c, &r->o));
    uint64_t avail;
    if (plan_available(r->o.backend, be, &avail)) {
        log_debug("memory plan %.1f MB; not checked: %s", p.total / 1e6, ql_errmsg());
        return QL_OK;
    }
    log_debug("memory plan %.1f MB of the %.1f MB of %s available", p.total / 1e6, avail / 1e6,
              memory_name(r->o.backend));
    if (p.total <= avail) return QL_OK;
    char big[1024], hint[512];
    plan_largest(&p, 3, big, sizeof big);
    plan_hints(hint, sizeof hint, &r->o);
    return ql_err(QL_ENOMEM, "this run needs %.1f MB of %s and %.1f MB are available; the largest parts: %s. Try %s "
                  "(qlora train --plan prints the whole plan; --no-memory-check starts anyway)", p.total / 1e6,
                  memory_name(r->o.backend), avail / 1e6, big, hint);
}
