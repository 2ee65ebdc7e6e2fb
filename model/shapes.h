// shapes.h: published model shapes by name, for commands that need a model's
// shape and not its weights: `qlora bench --shape` (random weights at that shape)
// and `qlora train --plan --shape` (the memory plan of a run, no file at all).
#ifndef QL_SHAPES_H
#define QL_SHAPES_H

#include "../common/config.h"

typedef struct {
    const char *name;  // "llama2-7b"
    model_config cfg;  // as the model's config.json gives it
} model_shape;

extern const model_shape MODEL_SHAPES[];
extern const int MODEL_NSHAPES;

// The shape called name, or NULL when there is none.
const model_shape *model_shape_find(const char *name);
// Every name, comma-separated ("tinyllama-1.1b, llama2-7b, ..."), for help and messages.
const char *model_shape_names(void);

#endif
