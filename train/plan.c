// plan.c: see plan.h.
#include "plan.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/err.h"
#include "../common/log.h"
#include "../common/safetensors.h"
#include "../kernels/cpu/grad_cpu.h"
#include "../kernels/cpu/matmul_cpu.h"
#include "../kernels/cuda/cuda_sizes.h"
#include "../kernels/cuda/ops_cuda.h"
#include "../model/lora.h"
#include "../model/model.h"
#include "trainer.h"

// Adds count of each bytes to the part called name (a new part at the end, or
// one with that name already: its each becomes 0 when the sizes differ). Nothing
// of 0 bytes is allocated, so it is no part (a CUDA scratch buffer never needed).
static void part_add(mem_plan *p, const char *name, plan_kind kind, int64_t count, uint64_t each) {
    if (count <= 0 || !each) return;
    plan_part *q = NULL;
    for (int i = 0; i < p->n && !q; i++)
        if (!strcmp(p->part[i].name, name)) q = &p->part[i];
    if (!q) {
        QL_ASSERT(p->n < PLAN_MAX_PARTS);
        q = &p->part[p->n++];
        *q = (plan_part){.name = name, .kind = kind, .each = each};
    }
    QL_ASSERT(q->kind == kind);
    if (q->each != each) q->each = 0;
    q->count += count;
    q->bytes += (uint64_t)count * each;
    p->total += (uint64_t)count * each;
}

static uint64_t max64(uint64_t a, uint64_t b) { return a > b ? a : b; }

// A part's name for a weight of type t (static strings: parts keep the pointer).
static const char *typed_name(const char *const names[4], dtype t) {
    return names[t == DT_NF4 ? 0 : t == DT_F16 ? 1 : t == DT_BF16 ? 2 : 3];
}
static const char *const LINEAR_NAMES[4] = {PLAN_PART_LINEARS_NF4, "base linear weights (f16)",
                                            "base linear weights (bf16)", "base linear weights (f32)"};
static const char *const EMBED_NAMES[4] = {"embedding (nf4)", "embedding (f16)", "embedding (bf16)", "embedding (f32)"};
static const char *const HEAD_NAMES[4] = {"lm_head (nf4)", "lm_head (f16)", "lm_head (bf16)", "lm_head (f32)"};

// Bytes of a frozen weight (rows, cols) of type t as the backend holds it: in
// host memory as the quantizer or the file stores it (qweight_bytes: NF4 codes,
// absmax codes, scales and the offset), on CUDA as weight_upload copies it
// (each array padded to 16 bytes; the offset stays on the host).
static uint64_t weight_bytes(dtype t, int64_t rows, int64_t cols, plan_backend be) {
    const int64_t n = rows * cols;
    if (t != DT_NF4) {
        const size_t b = (size_t)n * dtype_size(t);
        return be == PLAN_CUDA ? cuda_upload_bytes(b) : b;
    }
    if (be == PLAN_CUDA)
        return cuda_upload_bytes((size_t)(n + 1) / 2) + cuda_upload_bytes((size_t)nf4_nblocks(n)) +
               cuda_upload_bytes(sizeof(float) * (size_t)nf4_ngroups(n));
    return nf4_bytes(n);
}

// A frozen weight the run uses: its type, shape, and whether the training step
// multiplies by it (matmul and matmul_backward_input) or only uploads it.
typedef struct {
    dtype t;
    int64_t rows, cols;
    int matmul;
} plan_weight;

// The seven linears of a block, the embedding and (untied) lm_head: *n of them.
static void run_weights(plan_weight *w, int *n, const model_config *c, const plan_opts *o) {
    int C = c->dim, F = c->hidden_dim, H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, k = 0;
#define X(field, hf, R_, C_) w[k++] = (plan_weight){o->base_dtype, (R_), (C_), 1};
    LAYER_LINEARS(X)
#undef X
    w[k++] = (plan_weight){o->embed_dtype, c->vocab_size, C, o->tied};  // tied: it is lm_head too
    if (!o->tied) w[k++] = (plan_weight){o->head_dtype, c->vocab_size, C, 1};
    *n = k;
}

static void weight_parts(mem_plan *p, const model_config *c, const plan_opts *o) {
    int C = c->dim, F = c->hidden_dim, H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, L = c->n_layers;
    const char *lin = typed_name(LINEAR_NAMES, o->base_dtype);
#define X(field, hf, R_, C_) part_add(p, lin, PLAN_WEIGHTS, L, weight_bytes(o->base_dtype, (R_), (C_), o->backend));
    LAYER_LINEARS(X)
#undef X
    part_add(p, typed_name(EMBED_NAMES, o->embed_dtype), PLAN_WEIGHTS, 1,
             weight_bytes(o->embed_dtype, c->vocab_size, C, o->backend));
    if (!o->tied)
        part_add(p, typed_name(HEAD_NAMES, o->head_dtype), PLAN_WEIGHTS, 1,
                 weight_bytes(o->head_dtype, c->vocab_size, C, o->backend));
    // the model's own fp32 norms live in host memory; model_upload copies them for the backend
    if (o->backend == PLAN_CPU) part_add(p, "base norms", PLAN_WEIGHTS, 2 * (int64_t)L + 1, sizeof(float) * (size_t)C);
    part_add(p, PLAN_PART_NORMS, PLAN_ALLOC, 2 * (int64_t)L + 1, sizeof(float) * (size_t)C);
}

// The adapter's trainable values: rank * (in + out) per targeted module and layer.
static int64_t lora_params(const model_config *c, int rank, unsigned targets) {
    int64_t n = 0;
    for (int k = 0; k < LORA_NMODULES; k++) {
        int in, out;
        lora_module_shape(c, k, &in, &out);
        if (targets & (1u << k)) n += (int64_t)rank * (in + out);
    }
    return n * c->n_layers;
}

// What trainer_init allocates, from trainer.h's tables.
static void trainer_parts(mem_plan *p, const model_config *c, int B, int T, int rank, unsigned targets, float dropout,
                          int ckpt) {
    const train_dims d = train_dims_of(c, B, T, rank);
    const int L = c->n_layers, nacts = ckpt ? 1 : L;
    uint64_t acts = ckpt ? 0 : plan_buffer_bytes(d.N * d.C);  // x_in, without checkpointing
#define X(field, floats) acts += plan_buffer_bytes(floats);
    BLOCK_ACTS(X, d)
#undef X
    part_add(p, ckpt ? PLAN_PART_ACTS_CKPT : PLAN_PART_ACTS, PLAN_ALLOC, nacts, acts);
    for (int k = 0; k < LORA_NMODULES; k++) {
        int in, out;
        lora_module_shape(c, k, &in, &out);
        if (!(targets & (1u << k))) continue;
        part_add(p, "LoRA x A^T (xa)", PLAN_ALLOC, nacts, plan_buffer_bytes(d.N * d.R));
        if (dropout > 0) part_add(p, PLAN_PART_DROPOUT, PLAN_ALLOC, nacts, plan_buffer_bytes(d.N * (size_t)in));
    }
    if (ckpt) part_add(p, PLAN_PART_XSAVED, PLAN_ALLOC, L + 1, plan_buffer_bytes(d.N * d.C));
#define X(field, floats, part) part_add(p, part, PLAN_ALLOC, 1, plan_buffer_bytes(floats));
    TRAINER_BUFS(X, d)
#undef X
    part_add(p, PLAN_PART_LORA_STATE, PLAN_ALLOC, 4, plan_buffer_bytes((size_t)lora_params(c, rank, targets)));
}

uint64_t plan_trainer_bytes(const model_config *c, int B, int T, int rank, unsigned targets, float dropout,
                            int grad_checkpoint) {
    mem_plan p = {0};
    trainer_parts(&p, c, B, T, rank, targets, dropout, grad_checkpoint);
    return p.total;
}

// The tile budget the CUDA backend takes: QLORA_CUDA_TILE_BYTES when it is a
// positive count (the backend refuses to start otherwise), else its default.
static size_t cuda_env_tile_budget(void) {
    const char *env = getenv("QLORA_CUDA_TILE_BYTES");
    char *end;
    unsigned long long v = env && env[0] ? strtoull(env, &end, 10) : 0;
    return v && !*end ? (size_t)v : CUDA_TILE_BUDGET_DEFAULT;
}

// The CUDA backend's own device memory during training (ops_cuda.cu, matmul_cuda.cu,
// attention_cuda.cu, grad_cuda.cu), each buffer at the largest size a step asks of it.
// A GPU with bf16 tensor cores (sm_80 on) is assumed: before it, a BF16 weight's
// matmul reads x in fp32 and takes no 16-bit copy of x.
static void cuda_parts(mem_plan *p, const model_config *c, const plan_opts *o, const train_dims *d, int64_t n_params) {
    size_t budget = o->cuda_tile_budget ? o->cuda_tile_budget : cuda_env_tile_budget();
    plan_weight w[LAYER_NLINEARS + 2];
    int nw;
    run_weights(w, &nw, c, o);
    uint64_t tile = 0, xconv = 0;
    for (int i = 0; i < nw; i++) {
        // weight_upload reserves the forward tile and, for all but F32, the backward's fp32 tile
        size_t esz = cuda_fwd_tile_esz(w[i].t, 8);
        if (esz) tile = max64(tile, (uint64_t)cuda_tile_rows(budget, w[i].rows, w[i].cols, esz) * w[i].cols * esz);
        if (w[i].t != DT_F32)
            tile = max64(tile, (uint64_t)cuda_tile_rows(budget, w[i].rows, w[i].cols, 4) * w[i].cols * 4);
        // the tensor-core matmul (N > OPS_CUDA_GEMV_MAX_N) rounds x to 16 bits for all but F32
        if (w[i].matmul && d->N > OPS_CUDA_GEMV_MAX_N && w[i].t != DT_F32) xconv = max64(xconv, d->N * w[i].cols * 2);
    }
    part_add(p, "cuda: dequantized weight tile", PLAN_SCRATCH, 1, tile);
    part_add(p, "cuda: x rounded to 16 bits", PLAN_SCRATCH, 1, xconv);
    // work: attention_backward's delta (N,H) or sumsq's partial sums (the trainer's rmsnorm_backward has no dw)
    part_add(p, "cuda: op workspace", PLAN_SCRATCH, 1,
             max64(sizeof(float) * d->N * d->H, sizeof(double) * (size_t)cuda_sumsq_blocks(n_params)));
    // args: host arrays per call; the most at once is attention_backward's seg_start and
    // qend, or rope's positions and inv_freq
    const size_t tok = cuda_args_piece(sizeof(int) * d->N);
    uint64_t args = max64(CUDA_ARGS_INITIAL, 2 * tok);
    args = max64(args, tok + cuda_args_piece(sizeof(float) * (size_t)(c->head_dim / 2)));
    part_add(p, "cuda: op arguments", PLAN_SCRATCH, 1, args);
    part_add(p, "cuda: NF4 tables, sumsq", PLAN_SCRATCH, 1, sizeof(float) * CUDA_NF4_TABLES_LEN);
    part_add(p, "cuda: NF4 tables, sumsq", PLAN_SCRATCH, 1, sizeof(double));
    // cuBLAS's own workspace pool, allocated by the library: 32 MiB on Hopper, 4 MiB
    // before it (NVIDIA's cuBLAS guide, cublasSetWorkspace); the larger is planned
    part_add(p, PLAN_PART_CUBLAS, PLAN_SCRATCH, 1, (uint64_t)32 << 20);
}

// The CPU ops' temporaries (malloc'd and freed inside each call): one op runs at a
// time, so the peak is the largest of them.
static void cpu_parts(mem_plan *p, const model_config *c, const plan_opts *o, const train_dims *d, int64_t n_params) {
    const int nth = o->threads > 0 ? o->threads : 1, N = (int)d->N;
    plan_weight w[LAYER_NLINEARS + 2];
    int nw;
    run_weights(w, &nw, c, o);
    uint64_t peak = cpu_attention_scratch_bytes(N, c->n_heads, nth);
    for (int i = 0; i < nw; i++)
        if (w[i].matmul) {
            peak = max64(peak, matmul_cpu_scratch_bytes(w[i].t, w[i].rows, w[i].cols, N, nth));
            peak = max64(peak, cpu_matmul_backward_scratch_bytes(w[i].t, w[i].rows, w[i].cols));
        }
    peak = max64(peak, sizeof(float) * d->N);  // rmsnorm_backward's r per row
    part_add(p, "cpu: op temporaries (peak)", PLAN_SCRATCH, 1, peak);
    // the run's host memory beside the backend's (train_cmd.c, trainer.c)
    part_add(p, "LoRA adapter, host copy", PLAN_HOST, 1, sizeof(float) * (uint64_t)n_params);
    part_add(p, "checkpoint staging (saves)", PLAN_HOST, 1, 3 * sizeof(float) * (uint64_t)n_params);
    // a step's micro-batches (tokens, targets, positions, segments) and the trainer's pos, seg_start, targets
    part_add(p, "batches on the host", PLAN_HOST, 1, sizeof(int) * d->N * (4 * (uint64_t)o->grad_accum + 3));
}

// The options a run can have; the ops take element counts as int.
static int plan_check(const model_config *c, const plan_opts *o) {
    if (o->B < 1 || o->T < 2 || o->rank < 1 || o->grad_accum < 1)
        return ql_err(QL_EINVAL, "plan: --batch-size %d, --seq-len %d, --rank %d, --grad-accum %d: expected >= 1, >= 2, "
                      ">= 1, >= 1", o->B, o->T, o->rank, o->grad_accum);
    if (!o->targets || (o->targets & ~(unsigned)LORA_ALL)) return ql_err(QL_EINVAL, "plan: no target module");
    const train_dims d = train_dims_of(c, o->B, o->T, o->rank);
    size_t widest = d.WIDE > d.R ? d.WIDE : d.R;
    if (d.N > INT_MAX || d.N * widest > INT_MAX)
        return ql_err(QL_EINVAL, "--batch-size %d x --seq-len %d = %zu tokens of up to %zu values: more than the %d "
                      "values the ops take in one activation; lower --seq-len or --batch-size", o->B, o->T, d.N, widest,
                      INT_MAX);
    return QL_OK;
}

int train_plan(mem_plan *p, const model_config *c, const plan_opts *o) {
    memset(p, 0, sizeof *p);
    QL_CHECK(plan_check(c, o));
    const train_dims d = train_dims_of(c, o->B, o->T, o->rank);
    const int64_t n_params = lora_params(c, o->rank, o->targets);
    weight_parts(p, c, o);
    trainer_parts(p, c, o->B, o->T, o->rank, o->targets, o->dropout, o->grad_checkpoint);
    if (o->backend == PLAN_CUDA) cuda_parts(p, c, o, &d, n_params);
    else cpu_parts(p, c, o, &d, n_params);
    return QL_OK;
}

uint64_t plan_kind_bytes(const mem_plan *p, plan_kind k) {
    uint64_t b = 0;
    for (int i = 0; i < p->n; i++)
        if (p->part[i].kind == k) b += p->part[i].bytes;
    return b;
}

const plan_part *plan_find(const mem_plan *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->part[i].name, name)) return &p->part[i];
    return NULL;
}

void plan_sort(mem_plan *p) {
    for (int i = 1; i < p->n; i++)  // insertion sort: stable, and a plan has a few dozen parts
        for (int j = i; j > 0 && p->part[j - 1].bytes < p->part[j].bytes; j--) {
            plan_part t = p->part[j];
            p->part[j] = p->part[j - 1], p->part[j - 1] = t;
        }
}

void plan_largest(const mem_plan *p, int k, char *buf, size_t cap) {
    mem_plan s = *p;
    plan_sort(&s);
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < s.n && i < k && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%s (%.1f MB)", i ? ", " : "", s.part[i].name,
                                s.part[i].bytes / 1e6);
}

// A Hugging Face directory: config.json, and the stored dtypes of the embedding and
// lm_head from the safetensors headers (mapped, never read). load_dir keeps them as
// stored, or converts them to F32 for --base-dtype f32.
static int read_dir(const char *dir, dtype base_dtype, model_config *c, plan_opts *o) {
    QL_CHECK(config_load_dir(c, dir));
    st_set s = {0};
    QL_CHECK(st_set_open_dir(&s, dir));
    const char *names[2] = {"model.embed_tokens.weight", "lm_head.weight"};
    dtype t[2] = {DT_F32, DT_F32};
    int rc = QL_OK;
    for (int i = 0; i < (c->tie_embeddings ? 1 : 2) && !rc; i++) {
        const st_tensor *w = st_set_find(&s, names[i], NULL);
        if (!w) rc = ql_err(QL_EFORMAT, "%s: tensor '%s' is missing from the checkpoint", dir, names[i]);
        else t[i] = base_dtype == DT_F32 ? DT_F32 : w->type;
    }
    st_set_close(&s);
    o->base_dtype = base_dtype, o->embed_dtype = t[0], o->head_dtype = c->tie_embeddings ? t[0] : t[1];
    o->tied = c->tie_embeddings;
    return rc;
}

int plan_read_base(const char *path, dtype base_dtype, model_config *c, plan_opts *o) {
    struct stat st;
    if (stat(path, &st) != 0) return ql_err(QL_EIO, "%s: no such model directory or base file", path);
    if (S_ISDIR(st.st_mode)) return read_dir(path, base_dtype, c, o);
    model m;  // a base file is mapped and its header read; its weights stay on disk
    QL_CHECK(model_load(&m, path, base_dtype));
    *c = m.cfg;
    o->base_dtype = m.base_dtype, o->embed_dtype = m.embed.type, o->head_dtype = m.lm_head.type;
    o->tied = m.cfg.tie_embeddings;
    model_free(&m);
    return QL_OK;
}

int plan_backend_of(const char *name) {
    if (!strcmp(name, "cpu")) return PLAN_CPU;
    if (!strcmp(name, "cuda")) return PLAN_CUDA;
    return -1;
}

int plan_available(plan_backend b, ops *o, uint64_t *bytes) {
    *bytes = 0;
    if (b == PLAN_CUDA) {
        size_t free_b, total;
        QL_ASSERT(o && plan_backend_of(o->name) == PLAN_CUDA);
        QL_CHECK(ops_cuda_mem_info(o, &free_b, &total));
        *bytes = free_b;
        return QL_OK;
    }
    long long a = mem_available();
    if (a < 0) return ql_err(QL_EUNSUP, "the memory available is unknown (no MemAvailable in /proc/meminfo)");
    *bytes = (uint64_t)a;
    return QL_OK;
}
