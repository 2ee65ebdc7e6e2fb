// plan.h: the memory of a training run, computed from the model's shapes and
// the run's options before anything is allocated: `qlora train --plan` prints
// it, and a run that will not fit in the memory available is refused before it
// loads anything (train_cmd.c).
//
// The plan is what the code allocates, not an estimate of it: trainer_init
// allocates the buffers of the tables in trainer.h (BLOCK_ACTS, TRAINER_BUFS),
// which the plan walks too, and asserts that its bytes equal
// plan_trainer_bytes; the CUDA backend sizes its scratch with the functions of
// kernels/cuda/cuda_sizes.h, the CPU backend its temporaries with those of
// grad_cpu.h and matmul_cpu.h, which the plan calls. tests/test_plan.c holds
// trainer_init + model_upload to the plan through a counting allocator.
//
// Memory is the backend's: device memory for cuda, host memory for cpu (where
// the frozen base, the host copy of the adapter and the host's batches count
// too). Not in the plan: the dataset (its size depends on --data), the program
// and its libraries, and the CUDA context (the driver's, already taken when the
// free memory is measured).
#ifndef QL_PLAN_H
#define QL_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "../common/config.h"
#include "../common/dtype.h"
#include "../kernels/ops.h"

typedef enum { PLAN_CPU, PLAN_CUDA } plan_backend;

typedef enum {
    PLAN_WEIGHTS,  // the frozen base: the model's host memory (cpu), weight_upload's device copies (cuda)
    PLAN_ALLOC,    // through the backend's alloc: trainer_init and model_upload (the norms)
    PLAN_SCRATCH,  // the backend's own: CUDA tiles and buffers, the CPU ops' temporaries at their peak
    PLAN_HOST,     // cpu only: host memory of the run beside the backend's (adapter, batches, saves)
} plan_kind;

typedef struct {
    int B, T;                 // packed rows per micro-batch, tokens per row
    int rank;                 // R
    unsigned targets;         // LORA_* bits (model/lora.h)
    float dropout;            // > 0: each targeted module keeps its dropped-out input
    int grad_checkpoint;
    dtype base_dtype;         // the linears: DT_NF4, DT_F16 or DT_F32
    dtype embed_dtype;        // the embedding as stored (and the lm_head's when tied)
    dtype head_dtype;         // lm_head as stored, when not tied
    int tied;                 // lm_head is the embedding (tie_word_embeddings)
    plan_backend backend;
    int threads;              // cpu: OpenMP threads (temporaries are per thread)
    int grad_accum;           // cpu: micro-batches of a step held on the host
    size_t cuda_tile_budget;  // cuda: bytes of a dequantized tile; 0: as the backend (QLORA_CUDA_TILE_BYTES, else 64 MiB)
} plan_opts;

// One line of the plan: count buffers (or weights) of each bytes (0 when their
// sizes differ), bytes in all.
typedef struct {
    const char *name;  // static
    plan_kind kind;
    int64_t count;
    uint64_t each;
    uint64_t bytes;
} plan_part;

#define PLAN_MAX_PARTS 32

typedef struct {
    plan_part part[PLAN_MAX_PARTS];
    int n;
    uint64_t total;  // bytes of every part
} mem_plan;

// Names of parts that tests and messages refer to.
#define PLAN_PART_LINEARS_NF4 "base linear weights (nf4)"
#define PLAN_PART_NORMS "norms (backend copy)"
#define PLAN_PART_ACTS "block activations, every layer"
#define PLAN_PART_ACTS_CKPT "block activations, one block (recomputed)"
#define PLAN_PART_XSAVED "block inputs (checkpoints)"
#define PLAN_PART_DROPOUT "LoRA dropout inputs"
#define PLAN_PART_LORA_STATE "LoRA weights, grads, AdamW m, v"
#define PLAN_PART_CUBLAS "cuBLAS workspace (library's)"

// Bytes of a buffer of n fp32 in backend memory as the trainer asks for it
// (at least one float: alloc(0) is no request).
static inline size_t plan_buffer_bytes(size_t nfloats) { return sizeof(float) * (nfloats ? nfloats : 1); }

// The plan of a run of model c with options o. QL_EINVAL (with the reason)
// when the options cannot make a run (rank, batch, tokens past the ops' int sizes).
int train_plan(mem_plan *p, const model_config *c, const plan_opts *o);
// What trainer_init allocates through the backend's alloc (the PLAN_ALLOC parts
// but the norms), from the same tables.
uint64_t plan_trainer_bytes(const model_config *c, int B, int T, int rank, unsigned targets, float dropout,
                            int grad_checkpoint);
// Bytes of the parts of one kind.
uint64_t plan_kind_bytes(const mem_plan *p, plan_kind k);
// The part called name, or NULL.
const plan_part *plan_find(const mem_plan *p, const char *name);
// Largest part first (ties: in the order they were added).
void plan_sort(mem_plan *p);
// "a (X MB), b (Y MB), c (Z MB)": the k largest parts, into buf (cap bytes). MB = 1e6 bytes.
void plan_largest(const mem_plan *p, int k, char *buf, size_t cap);

// What a plan needs of a base (a Hugging Face directory or a qlora base file)
// without its weights: the config and the stored dtypes. A directory's linears
// take base_dtype (quantized on load); a base file's keep the dtype it was
// written with. *o's base_dtype, embed_dtype, head_dtype and tied are set.
int plan_read_base(const char *path, dtype base_dtype, model_config *c /* out */, plan_opts *o);
// The memory a run on backend b can still allocate, in bytes: the free memory of
// the GPU of o (cuda; o is that backend) or MemAvailable (cpu; o may be NULL).
// QL_EUNSUP when it cannot be known (no /proc/meminfo), QL_EDEVICE from CUDA.
int plan_available(plan_backend b, ops *o, uint64_t *bytes /* out */);
// The backend a plan is for by name ("cpu", "cuda"); -1 for others (ref).
int plan_backend_of(const char *name);

#endif
