// lora.h: a LoRA adapter on the seven linear kinds of every block:
//   y = x W^T + scaling * (x A^T) B^T,  A (R,in), B (out,R),
//   scaling = alpha / R, or alpha / sqrt(R) with rsLoRA.
// Training keeps fp32 master weights here; adapters are stored in FP16
// (PEFT layout, docs/formats.md). A served adapter is "resident": A and B stay
// as the file stores them (F16, BF16 or F32), read in place from the mapped
// file (lora_load_peft_resident) or from one buffer of halves
// (lora_make_resident), and the LoRA ops convert as they read, accumulating
// in fp32.
#ifndef QL_LORA_H
#define QL_LORA_H

#include <stdint.h>

#include "../common/config.h"
#include "../common/dtype.h"

// Target modules, in the order of LAYER_LINEARS (common/model.h).
enum {
    LORA_Q = 1 << 0, LORA_K = 1 << 1, LORA_V = 1 << 2, LORA_O = 1 << 3,
    LORA_GATE = 1 << 4, LORA_UP = 1 << 5, LORA_DOWN = 1 << 6, LORA_ALL = 127,
};
#define LORA_NMODULES 7
// PEFT's module names ("q_proj", ...) and the HF prefix of each ("self_attn", "mlp")
extern const char *const LORA_MODULE_NAMES[LORA_NMODULES];
extern const char *const LORA_MODULE_PARENTS[LORA_NMODULES];

typedef struct {
    float *A;     // (R, in) fp32, owned; NULL when the module is not targeted or the adapter is resident
    float *B;     // (out, R) fp32, owned
    int in, out;  // of the base linear: W (out, in)
    // A resident adapter's A and B instead (A and B above NULL): not owned by the
    // pair, each of its own type (DT_F32, DT_F16 or DT_BF16); NULL when not targeted.
    const void *rA, *rB;
    dtype tA, tB;
} lora_pair;

// Whether module pair p is targeted (fp32 or resident).
static inline int lora_pair_on(const lora_pair *p) { return p->A != NULL || p->rA != NULL; }

typedef struct {
    int rank;           // R
    float alpha;
    int use_rslora;     // scaling alpha/sqrt(R) instead of alpha/R
    float dropout;      // on the adapter input, training only
    unsigned targets;   // LORA_* bits
    int n_layers;
    float scaling;
    lora_pair *w;       // [n_layers * LORA_NMODULES], index l*LORA_NMODULES + k
    char *base_model;   // base_model_name_or_path for adapter_config.json
    uint64_t serial;    // unique per adapter made (lora_init, lora_load_peft): how the backend
                        // copies of common/forward.c find it; 0 in adapters made by hand
    // A resident adapter's storage (owned, freed by lora_free): the mapped file
    // (an st_file) its pairs point into, or the buffer of halves they point into.
    void *res_file;
    void *res_mem;
} lora_adapter;

// A fresh serial (1, 2, ...; thread-safe).
uint64_t lora_next_serial(void);

// in/out of module k (0..6) of a layer for config c
void lora_module_shape(const model_config *c, int k, int *in, int *out);
// PEFT's initialisation: A kaiming-uniform with a = sqrt(5) (bound 1/sqrt(in)), B = 0,
// drawn from a seeded generator (A of layer 0 module q first, row-major).
int lora_init(lora_adapter *a, const model_config *c, int rank, float alpha, int use_rslora, float dropout,
              unsigned targets, uint64_t seed);
void lora_free(lora_adapter *a);
// Makes a resident in type t (DT_F16 or DT_BF16, round-to-nearest-even): one
// buffer holds every A and B, and the fp32 arrays are freed. For benchmarks and
// tests that build adapters in memory; a served adapter comes from
// lora_load_peft_resident (train/peft.h).
int lora_make_resident(lora_adapter *a, dtype t);
// Bytes of A and B of pair p at rank R, as held (4 per value in fp32, else the
// size of each matrix's type).
size_t lora_pair_bytes(const lora_pair *p, int R);
// "all", or a comma-separated list of module names ("q_proj,v_proj" or "q,v").
int lora_targets_parse(unsigned *out, const char *csv);
// Scaling from rank, alpha and rsLoRA.
float lora_scaling(int rank, float alpha, int use_rslora);

#endif
