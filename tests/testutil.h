// testutil.h: shared helpers for tests. A failed check prints file:line and the
// statement and makes the test exit non-zero; 77 means skipped.
#ifndef QL_TESTUTIL_H
#define QL_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>

#include "kernels/ops.h"
#include "model/lora.h"

#define TEST_SKIP 77

extern int test_failures;

#define CHECK(cond) do { if (!(cond)) { test_failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECKF(cond, ...) do { if (!(cond)) { test_failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
// Library status must be QL_OK; prints ql_errmsg otherwise.
#define CHECK_OK(call) do { int rc_ = (call); if (rc_ != 0) { test_failures++; \
    fprintf(stderr, "%s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #call, rc_, ql_errmsg()); } } while (0)

// The one tolerance rule: accept when |a-b| <= atol + rtol*|ref| for every element.
// Prints a line with the case name, max abs, max rel and NMSE; fails on NaN/Inf.
// Returns 1 when accepted.
int check_close(const char *what, const float *got, const float *ref, int64_t n, double atol, double rtol);

// Directory of the real test models (QLORA_TEST_MODELS env or build default), or NULL.
const char *test_models_dir(void);
// path join into a static rotating buffer
const char *test_path(const char *a, const char *b);
// Source dir (for fixtures)
const char *test_source_dir(void);

// Exit code for main: prints a summary line.
int test_finish(const char *name);

// Deterministic random numbers (xorshift64*), for inputs.
uint64_t test_rand_u64(uint64_t *s);
float test_rand_normal(uint64_t *s);
float test_rand_uniform(uint64_t *s);  // [-1, 1)

// A random weight (rows,cols): N(0, scale^2) values stored in type (F32, F16, BF16,
// or NF4 through nf4_quantize), with its host storage.
typedef struct {
    qweight w;
    void *data;
    uint8_t *codes, *absmax_q;
    float *absmax_scale;
} test_weight;

void test_weight_init(test_weight *t, dtype type, int64_t rows, int64_t cols, float scale, uint64_t *seed);
void test_weight_free(test_weight *t);

// A random adapter: lora_init's A, and B drawn too (lora_init leaves B zero, which
// would leave the logits alone), N(0, 0.3^2).
void test_lora_random(lora_adapter *a, const model_config *c, int rank, float alpha, int rslora, unsigned targets,
                      uint64_t seed);

#endif
