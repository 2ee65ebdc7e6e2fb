// backend.c: choosing a backend by name.
#include <math.h>
#include <string.h>

#include "../common/err.h"
#include "../common/log.h"
#include "ops.h"
#include "cuda/ops_cuda.h"

#ifndef QLORA_HAVE_CUDA
ops *ops_cuda_new(int device) {
    ql_err(QL_EUNSUP, "this qlora was built without CUDA (configure with nvcc installed and QLORA_CUDA=ON); "
                      "--backend cpu runs on the CPU");
    return NULL;
}

// No CUDA backend can exist in this build, so nothing can ask for its memory.
int ops_cuda_mem_info(ops *o, size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = 0;
    return ql_err(QL_EUNSUP, "this qlora was built without CUDA");
}
#endif

ops *ops_new(const char *name, int n_threads) {
    if (!name || !strcmp(name, "auto")) {  // the GPU when one is usable, else the CPU
        ops *o = ops_cuda_new(0);
        if (o) return o;
        log_debug("backend auto: cpu (%s)", ql_errmsg());
        return ops_cpu_new(n_threads);
    }
    if (!strcmp(name, "cpu")) return ops_cpu_new(n_threads);
    if (!strcmp(name, "cuda")) return ops_cuda_new(0);
    if (!strcmp(name, "ref")) return ops_ref_new();
    ql_err(QL_EINVAL, "--backend: expected auto, cpu, cuda or ref, found '%s'", name);
    return NULL;
}

adamw_scalars adamw_scalars_of(const adamw_args *a) {
    double bc1 = 1.0 - pow(a->beta1, a->step), bc2 = 1.0 - pow(a->beta2, a->step);
    return (adamw_scalars){.decay = 1.0f - a->lr * a->weight_decay, .b1 = a->beta1, .b2 = a->beta2,
                           .one_minus_b1 = 1.0f - a->beta1, .one_minus_b2 = 1.0f - a->beta2,
                           .step_size = (float)(a->lr / bc1), .bc2_sqrt = (float)sqrt(bc2), .eps = a->eps,
                           .clip = a->clip};
}
