// test_plan.c: the memory plan of a training run (train/plan.h) against what the
// code allocates. At small random models (untied with odd sizes and GQA, tied with
// MHA; NF4 and F16 linears), for every combination of checkpointing on/off,
// dropout 0 / 0.1, rank 4 / 16, targets all / q,v and awkward B x T (1 x 2, 3 x 17,
// 2 x 33), the CPU backend's alloc and free are wrapped with counting ones:
//   - what trainer_init (and the model_upload inside it) holds when it returns is
//     the plan's buffers (PLAN_ALLOC) to the byte, buffer for buffer;
//   - a training step, an evaluation and an optimizer update allocate nothing
//     more (the peak stays the plan);
//   - trainer_free gives every byte back;
//   - the plan's base weights are the model's own (qweight_bytes of each).
// Then the plan's own rules: parts sum to the total, the largest come first, and
// options that cannot make a run are refused with a message.
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/model.h"
#include "model/lora.h"
#include "testutil.h"
#include "train/plan.h"
#include "train/trainer.h"

// ---- a counting allocator around a backend's ----

#define MAX_LIVE 8192

static struct {
    void *(*alloc)(ops *, size_t);
    void (*free)(ops *, void *);
    void *p[MAX_LIVE];
    size_t n[MAX_LIVE];
    int count;             // live buffers
    size_t live, peak;     // bytes
} g;

static void *count_alloc(ops *o, size_t bytes) {
    void *p = g.alloc(o, bytes);
    if (!p) return NULL;
    QL_ASSERT(g.count < MAX_LIVE);
    g.p[g.count] = p, g.n[g.count++] = bytes;
    g.live += bytes;
    if (g.live > g.peak) g.peak = g.live;
    return p;
}

static void count_free(ops *o, void *p) {
    if (!p) return;
    for (int i = 0; i < g.count; i++)
        if (g.p[i] == p) {
            g.live -= g.n[i];
            g.p[i] = g.p[--g.count], g.n[i] = g.n[g.count];
            break;
        }
    g.free(o, p);
}

static void counting(ops *o) {
    g.alloc = o->alloc, g.free = o->free;
    o->alloc = count_alloc, o->free = count_free;
}

// ---- one case ----

typedef struct {
    int B, T, rank, ckpt;
    unsigned targets;
    float dropout;
} run_case;

static void batch(int N, int T, int V, int *tok, int *tgt, int *pos, int *seg) {
    uint64_t s = 5;
    for (int n = 0; n < N; n++) {
        tok[n] = (int)(test_rand_u64(&s) % (uint64_t)V);
        pos[n] = n % T, seg[n] = 0;
    }
    for (int n = 0; n < N; n++) tgt[n] = (n + 1) % T ? tok[n + 1] : -1;
}

static void run(ops *o, model *m, const run_case *k) {
    char what[160];
    snprintf(what, sizeof what, "plan(%s, B=%d, T=%d, R=%d, targets=%s, dropout=%g, ckpt=%d, %s, V=%d)",
             m->cfg.tie_embeddings ? "tied" : "untied", k->B, k->T, k->rank, k->targets == LORA_ALL ? "all" : "q,v",
             (double)k->dropout, k->ckpt, m->base_dtype == DT_NF4 ? "nf4" : "f16", m->cfg.vocab_size);
    int f0 = test_failures;
    plan_opts po = {.B = k->B, .T = k->T, .rank = k->rank, .targets = k->targets, .dropout = k->dropout,
                    .grad_checkpoint = k->ckpt, .base_dtype = m->base_dtype, .embed_dtype = m->embed.type,
                    .head_dtype = m->lm_head.type, .tied = m->cfg.tie_embeddings, .backend = PLAN_CPU, .threads = 2,
                    .grad_accum = 1};
    mem_plan p;
    CHECK_OK(train_plan(&p, &m->cfg, &po));
    lora_adapter a;
    CHECK_OK(lora_init(&a, &m->cfg, k->rank, 8.0f, 0, k->dropout, k->targets, 3));
    if (test_failures > f0) return;

    const uint64_t want = plan_kind_bytes(&p, PLAN_ALLOC);
    g.live = g.peak = 0;
    trainer t;
    CHECK_OK(trainer_init(&t, m, o, &a, k->B, k->T, k->ckpt));
    CHECKF(g.live == want, "%s: trainer_init holds %zu bytes, the plan says %llu", what, g.live,
           (unsigned long long)want);
    // buffer for buffer: the trainer's and model_upload's allocations, one per listed buffer
    int64_t nbuf = 0;
    for (int i = 0; i < p.n; i++)
        if (p.part[i].kind == PLAN_ALLOC) nbuf += p.part[i].count;
    int64_t acts = k->ckpt ? 1 : m->cfg.n_layers;  // the activation parts count blocks, not buffers
    int per_block = k->ckpt ? 11 : 12;             // BLOCK_ACTS, and x_in without checkpointing
    nbuf += acts * (per_block - 1);
    CHECKF(g.count == nbuf, "%s: %d buffers, the plan lists %lld", what, g.count, (long long)nbuf);
    CHECKF(t.backend_bytes + plan_find(&p, PLAN_PART_NORMS)->bytes == want, "%s: trainer counts %zu", what,
           t.backend_bytes);

    // a step, an evaluation and an update take nothing more from the backend
    int N = k->B * k->T, *buf = malloc(sizeof(int) * 4 * (size_t)N);
    batch(N, k->T, m->cfg.vocab_size, buf, buf + N, buf + 2 * N, buf + 3 * N);
    double nll;
    long ntr;
    trainer_zero_grads(&t);
    CHECK_OK(trainer_step(&t, buf, buf + N, buf + 2 * N, buf + 3 * N, 0.1f, 7, &nll, &ntr));
    adamw_config oc = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .max_grad_norm = 1.0f};
    train_update(&t, &oc, 1, 1e-3f);
    CHECK_OK(trainer_eval(&t, buf, buf + N, buf + 2 * N, buf + 3 * N, &nll, &ntr));
    CHECKF(g.peak == want, "%s: the peak during a step is %zu bytes, the plan says %llu", what, g.peak,
           (unsigned long long)want);
    free(buf);
    trainer_free(&t);
    CHECKF(g.live == 0 && g.count == 0, "%s: %zu bytes in %d buffers left after trainer_free", what, g.live, g.count);
    lora_free(&a);

    // the frozen base as the model holds it (the norms: a random model shares one array)
    const plan_part *lin = plan_find(&p, m->base_dtype == DT_NF4 ? PLAN_PART_LINEARS_NF4 : "base linear weights (f16)");
    const plan_part *emb = plan_find(&p, "embedding (f16)"), *head = plan_find(&p, "lm_head (f16)");
    CHECKF(lin && lin->bytes == model_linear_bytes(m, NULL), "%s: linears %llu, the model's %zu", what,
           lin ? (unsigned long long)lin->bytes : 0ull, model_linear_bytes(m, NULL));
    CHECKF(emb && emb->bytes == qweight_bytes(&m->embed), "%s: embedding", what);
    CHECKF(m->cfg.tie_embeddings ? !head : head && head->bytes == qweight_bytes(&m->lm_head), "%s: lm_head", what);
    if (test_failures == f0) printf("ok %s: %llu bytes in %d buffers\n", what, (unsigned long long)want, (int)nbuf);
}

static void model_cases(ops *o, const model_config *c, dtype base) {
    model m;
    CHECK_OK(model_init_random(&m, c, base, 11));
    if (test_failures) return;
    static const int bt[][2] = {{1, 2}, {3, 17}, {2, 33}};
    for (int i = 0; i < 3; i++)
        for (int ckpt = 0; ckpt <= 1; ckpt++)
            for (int d = 0; d <= 1; d++)
                for (int r = 0; r <= 1; r++)
                    for (int tg = 0; tg <= 1; tg++) {
                        run_case k = {.B = bt[i][0], .T = bt[i][1], .rank = r ? 16 : 4, .ckpt = ckpt,
                                      .targets = tg ? LORA_Q | LORA_V : LORA_ALL, .dropout = d ? 0.1f : 0.0f};
                        run(o, &m, &k);
                    }
    model_free(&m);
}

// Parts add up, the largest come first, and bad options are refused with a reason.
static void plan_rules(const model_config *c) {
    plan_opts po = {.B = 2, .T = 64, .rank = 8, .targets = LORA_ALL, .dropout = 0.05f, .base_dtype = DT_NF4,
                    .embed_dtype = DT_F16, .head_dtype = DT_F16, .backend = PLAN_CUDA, .threads = 2, .grad_accum = 2};
    mem_plan p;
    CHECK_OK(train_plan(&p, c, &po));
    uint64_t sum = 0;
    for (int i = 0; i < p.n; i++) sum += p.part[i].bytes;
    CHECK(sum == p.total && p.total > 0);
    CHECK(plan_kind_bytes(&p, PLAN_HOST) == 0);  // a GPU's plan is device memory only
    CHECK(plan_find(&p, PLAN_PART_CUBLAS) != NULL);
    plan_sort(&p);
    for (int i = 1; i < p.n; i++) CHECK(p.part[i - 1].bytes >= p.part[i].bytes);
    char big[512];
    plan_largest(&p, 3, big, sizeof big);
    CHECKF(strstr(big, p.part[0].name) && strstr(big, p.part[2].name) && !strstr(big, p.part[3].name),
           "plan_largest: %s", big);
    po.backend = PLAN_CPU;
    CHECK_OK(train_plan(&p, c, &po));
    CHECK(plan_kind_bytes(&p, PLAN_HOST) > 0 && plan_find(&p, "base norms"));

    po.B = 1 << 20, po.T = 1 << 12;  // 2^32 tokens
    CHECK(train_plan(&p, c, &po) == QL_EINVAL && strstr(ql_errmsg(), "--seq-len"));
    po.B = 1 << 16, po.T = 1 << 12;  // 2^28 tokens of up to 200 values: past the ops' int counts
    CHECK(train_plan(&p, c, &po) == QL_EINVAL && strstr(ql_errmsg(), "lower --seq-len or --batch-size"));
    po.B = 2, po.rank = 0;
    CHECK(train_plan(&p, c, &po) == QL_EINVAL);
    po.rank = 4, po.targets = 0;
    CHECK(train_plan(&p, c, &po) == QL_EINVAL);
}

int main(void) {
    // untied, GQA, sizes that are no multiple of anything (C 72: NF4 rows start mid-block)
    model_config odd = {.arch = ARCH_LLAMA, .dim = 72, .hidden_dim = 200, .n_layers = 3, .n_heads = 6, .n_kv_heads = 2,
                        .head_dim = 12, .vocab_size = 301, .max_pos = 128, .norm_eps = 1e-5f, .rope_theta = 10000,
                        .bos_id = 1, .eos_id = 2, .eos_ids = {2}, .n_eos = 1, .add_bos = 1};
    // tied, MHA
    model_config tied = {.arch = ARCH_LLAMA, .dim = 64, .hidden_dim = 176, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4,
                         .head_dim = 16, .vocab_size = 256, .max_pos = 128, .norm_eps = 1e-5f, .rope_theta = 10000,
                         .tie_embeddings = 1, .bos_id = 1, .eos_id = 2, .eos_ids = {2}, .n_eos = 1, .add_bos = 1};
    ops *o = ops_cpu_new(2);
    if (!o) {
        fprintf(stderr, "no CPU backend: %s\n", ql_errmsg());
        return 1;
    }
    counting(o);
    model_cases(o, &odd, DT_NF4);
    model_cases(o, &tied, DT_NF4);
    model_cases(o, &odd, DT_F16);
    plan_rules(&odd);
    ops_delete(o);
    return test_finish("test_plan");
}
