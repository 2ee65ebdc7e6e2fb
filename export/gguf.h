// gguf.h: writing GGUF files (version 3), the format llama.cpp loads, from
// ggml's specification (ggml-org/ggml docs/gguf.md; see docs/formats.md):
//   "GGUF" u32 version u64 n_tensors u64 n_kv
//   n_kv x (key: u64 len + bytes, u32 type, value)
//   n_tensors x (name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)
//   padding to general.alignment (32), then each tensor's data, each padded.
// ne[0] is the contiguous dimension: a row-major (rows, cols) matrix is
// ne = {cols, rows}. Keys and tensors are collected first; gguf_write then
// writes the file atomically, asking each tensor for its fp32 data only when it
// is its turn (so a 7B model never needs a second copy in memory).
#ifndef QL_GGUF_H
#define QL_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "../common/dtype.h"

#define GGUF_ALIGN 32

// ggml's tensor type numbers for what we write (ggml.h: GGML_TYPE_F32 0, F16 1,
// Q4_0 2, Q8_0 8, BF16 30); Q8_0 and Q4_0 blocks: gguf_quant.h.
enum { GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q8_0 = 8, GGML_BF16 = 30 };

// The ggml type of DT_F32, DT_F16 or DT_BF16; -1 for any other dtype.
int gguf_type_of(dtype t);
// "F32", "F16", "BF16", "Q8_0", "Q4_0" (ggml's names), or NULL for another number.
const char *gguf_type_name(int type);
// Bytes of n values of a row in type (n a multiple of 32 for Q8_0 and Q4_0).
size_t gguf_row_bytes(int type, int64_t n);

// Fills dst (every element of the tensor, fp32, row-major) for tensor i.
typedef int (*gguf_fill_fn)(void *ctx, int i, float *dst);

typedef struct {
    char *name;
    int n_dims;
    int64_t ne[4];
    int type;            // GGML_* in the file
    const float *data;   // fp32 source, or NULL to ask fill
    gguf_fill_fn fill;
    void *ctx;
} gguf_tensor_info;

typedef struct {
    uint8_t *kv;         // the encoded key/value section
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    gguf_tensor_info *t;
    int n_t, cap_t;
    int failed;          // an earlier call ran out of memory
} gguf_out;

void gguf_init(gguf_out *g);
void gguf_free(gguf_out *g);
int gguf_kv_str(gguf_out *g, const char *key, const char *v);
int gguf_kv_u32(gguf_out *g, const char *key, uint32_t v);
int gguf_kv_i32(gguf_out *g, const char *key, int32_t v);
int gguf_kv_f32(gguf_out *g, const char *key, float v);
int gguf_kv_bool(gguf_out *g, const char *key, int v);
int gguf_kv_strs(gguf_out *g, const char *key, const char *const *v, int n);
int gguf_kv_f32s(gguf_out *g, const char *key, const float *v, int n);
int gguf_kv_i32s(gguf_out *g, const char *key, const int32_t *v, int n);
// A tensor of n_dims dims ne (ggml order) stored as type (GGML_*: F32, F16 and
// BF16 rounded to nearest even, Q8_0 and Q4_0 quantized by gguf_quant.h, which
// need ne[0] a multiple of 32); its fp32 values come from data (kept, not copied:
// it must live until gguf_write) or from fill(ctx, i).
int gguf_tensor(gguf_out *g, const char *name, int n_dims, const int64_t *ne, int type, const float *data,
                gguf_fill_fn fill, void *ctx);
// Writes the file atomically (temp file, fsync, rename). A quantized tensor's
// values must be finite (QL_EFORMAT naming the tensor and the element).
int gguf_write(gguf_out *g, const char *path);

#endif
