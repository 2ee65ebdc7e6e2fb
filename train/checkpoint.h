// checkpoint.h: the training checkpoint (checkpoint.safetensors in the output
// directory): the adapter's fp32 masters and AdamW moments, the training and
// validation losses so far, the step, and the run's fingerprint.
//
// Tensors (all F32, 1-D), per targeted module i = l*7+k and A then B:
//   layers.{l}.{module}.{A|B}.{w|m|v}   (R*in) for A, (out*R) for B
//   losses                              (max(step,1)) training loss of steps 1..step
//   val_loss                            (2*val_count) pairs (step, loss); absent when val_count is 0
// Metadata: format "qlora-checkpoint", step, val_count (decimal integers), fingerprint.
//
// A checkpoint read from outside is never trusted: every field is checked against
// the adapter's shapes and the run's step count before anything is used.
#ifndef QL_CHECKPOINT_H
#define QL_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "../model/lora.h"

typedef struct {
    int step;            // optimizer steps done, 0..max_step
    float *losses;       // [step] training loss after each step (finite)
    int val_count;
    int *val_step;       // [val_count] strictly increasing, each in 0..step
    float *val_loss;     // [val_count] (NaN allowed: a validation set with no trained token)
    int64_t n_params;
    float *w, *m, *v;    // [n_params] weights, AdamW moments (v >= 0), trainer order (trainer.h)
} ckpt_state;

// Floats of the trainer's flat state for a (rank R): sum over targeted modules of R*(in+out).
int64_t ckpt_n_params(const lora_adapter *a);

// Writes s for adapter a's shapes to path (atomically, see fileio.h).
int ckpt_write(const char *path, const lora_adapter *a, const ckpt_state *s, const char *fingerprint);

// Reads and validates a checkpoint image (data, len; name for messages) for the
// shapes of a: the step an integer in [0, max_step], every tensor present with
// its size, no other tensor, finite values. fingerprint: NULL skips that check,
// else it must equal the checkpoint's (QL_EINVAL when it differs). On error s is
// left empty; ckpt_state_free is always safe.
int ckpt_read_mem(ckpt_state *s /* out */, const void *data, size_t len, const char *name, const lora_adapter *a,
                  int max_step, const char *fingerprint);
int ckpt_read(ckpt_state *s /* out */, const char *path, const lora_adapter *a, int max_step, const char *fingerprint);
void ckpt_state_free(ckpt_state *s);

#endif
