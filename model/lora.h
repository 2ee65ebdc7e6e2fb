// lora.h: a LoRA adapter on the seven linear kinds of every block:
//   y = x W^T + scaling * (x A^T) B^T,  A (R,in), B (out,R),
//   scaling = alpha / R, or alpha / sqrt(R) with rsLoRA.
// Training keeps fp32 master weights here; adapters are stored in FP16
// (PEFT layout, docs/formats.md).
#ifndef QL_LORA_H
#define QL_LORA_H

#include <stdint.h>

#include "../common/config.h"

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
    float *A;     // (R, in) fp32; NULL when the module is not targeted
    float *B;     // (out, R) fp32
    int in, out;  // of the base linear: W (out, in)
} lora_pair;

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
// "all", or a comma-separated list of module names ("q_proj,v_proj" or "q,v").
int lora_targets_parse(unsigned *out, const char *csv);
// Scaling from rank, alpha and rsLoRA.
float lora_scaling(int rank, float alpha, int use_rslora);

#endif
