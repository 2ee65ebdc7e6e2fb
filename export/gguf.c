// gguf.c: see gguf.h.
#include "gguf.h"

#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/fileio.h"
#include "gguf_quant.h"

// GGUF value types (gguf.md): UINT32 4, INT32 5, FLOAT32 6, BOOL 7, STRING 8, ARRAY 9
enum { T_U32 = 4, T_I32 = 5, T_F32 = 6, T_BOOL = 7, T_STR = 8, T_ARR = 9 };

void gguf_init(gguf_out *g) { memset(g, 0, sizeof *g); }

void gguf_free(gguf_out *g) {
    for (int i = 0; i < g->n_t; i++) free(g->t[i].name);
    free(g->t);
    free(g->kv);
    memset(g, 0, sizeof *g);
}

static int put(gguf_out *g, const void *p, size_t n) {
    if (g->failed) return QL_ENOMEM;
    if (g->kv_len + n > g->kv_cap) {
        size_t cap = g->kv_cap ? g->kv_cap : 4096;
        while (cap < g->kv_len + n) cap *= 2;
        uint8_t *k = realloc(g->kv, cap);
        if (!k) return g->failed = 1, ql_err(QL_ENOMEM, "out of memory writing GGUF metadata");
        g->kv = k, g->kv_cap = cap;
    }
    memcpy(g->kv + g->kv_len, p, n);
    g->kv_len += n;
    return QL_OK;
}

// Every number in GGUF is little-endian, as on every machine we build for.
static int put_u32(gguf_out *g, uint32_t v) { return put(g, &v, 4); }
static int put_u64(gguf_out *g, uint64_t v) { return put(g, &v, 8); }
static int put_str(gguf_out *g, const char *s) {
    uint64_t n = strlen(s);
    QL_CHECK(put_u64(g, n));
    return put(g, s, n);
}
static int key(gguf_out *g, const char *k, uint32_t type) {
    QL_CHECK(put_str(g, k));
    g->n_kv++;
    return put_u32(g, type);
}

int gguf_kv_str(gguf_out *g, const char *k, const char *v) {
    QL_CHECK(key(g, k, T_STR));
    return put_str(g, v);
}
int gguf_kv_u32(gguf_out *g, const char *k, uint32_t v) {
    QL_CHECK(key(g, k, T_U32));
    return put_u32(g, v);
}
int gguf_kv_i32(gguf_out *g, const char *k, int32_t v) {
    QL_CHECK(key(g, k, T_I32));
    return put(g, &v, 4);
}
int gguf_kv_f32(gguf_out *g, const char *k, float v) {
    QL_CHECK(key(g, k, T_F32));
    return put(g, &v, 4);
}
int gguf_kv_bool(gguf_out *g, const char *k, int v) {
    QL_CHECK(key(g, k, T_BOOL));
    uint8_t b = v != 0;
    return put(g, &b, 1);
}
static int arr(gguf_out *g, const char *k, uint32_t type, int n) {
    QL_CHECK(key(g, k, T_ARR));
    QL_CHECK(put_u32(g, type));
    return put_u64(g, (uint64_t)n);
}
int gguf_kv_strs(gguf_out *g, const char *k, const char *const *v, int n) {
    QL_CHECK(arr(g, k, T_STR, n));
    for (int i = 0; i < n; i++) QL_CHECK(put_str(g, v[i]));
    return QL_OK;
}
int gguf_kv_f32s(gguf_out *g, const char *k, const float *v, int n) {
    QL_CHECK(arr(g, k, T_F32, n));
    return put(g, v, sizeof(float) * (size_t)n);
}
int gguf_kv_i32s(gguf_out *g, const char *k, const int32_t *v, int n) {
    QL_CHECK(arr(g, k, T_I32, n));
    return put(g, v, sizeof(int32_t) * (size_t)n);
}

int gguf_type_of(dtype t) { return t == DT_F32 ? GGML_F32 : t == DT_F16 ? GGML_F16 : t == DT_BF16 ? GGML_BF16 : -1; }

const char *gguf_type_name(int type) {
    switch (type) {
    case GGML_F32: return "F32";
    case GGML_F16: return "F16";
    case GGML_BF16: return "BF16";
    case GGML_Q8_0: return "Q8_0";
    case GGML_Q4_0: return "Q4_0";
    default: return NULL;
    }
}

size_t gguf_row_bytes(int type, int64_t n) {
    if (type == GGML_Q8_0) return (size_t)(n / GGUF_QK) * GGUF_Q8_0_BYTES;
    if (type == GGML_Q4_0) return (size_t)(n / GGUF_QK) * GGUF_Q4_0_BYTES;
    return (size_t)n * (type == GGML_F32 ? 4 : 2);
}

int gguf_tensor(gguf_out *g, const char *name, int n_dims, const int64_t *ne, int type, const float *data,
                gguf_fill_fn fill, void *ctx) {
    QL_ASSERT(n_dims >= 1 && n_dims <= 4 && (data || fill));
    if (!gguf_type_name(type))
        return ql_err(QL_EINVAL, "GGUF tensor %s: ggml type %d: we write F32, F16, BF16, Q8_0 or Q4_0", name, type);
    if ((type == GGML_Q8_0 || type == GGML_Q4_0) && ne[0] % GGUF_QK != 0)
        return ql_err(QL_EINVAL, "GGUF tensor %s: %s needs rows of a multiple of %d values, found %lld", name,
                      gguf_type_name(type), GGUF_QK, (long long)ne[0]);
    if (g->n_t == g->cap_t) {
        int cap = g->cap_t ? 2 * g->cap_t : 64;
        gguf_tensor_info *t = realloc(g->t, sizeof *t * (size_t)cap);
        if (!t) return ql_err(QL_ENOMEM, "out of memory");
        g->t = t, g->cap_t = cap;
    }
    gguf_tensor_info *t = &g->t[g->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return ql_err(QL_ENOMEM, "out of memory");
    t->n_dims = n_dims, t->type = type, t->data = data, t->fill = fill, t->ctx = ctx;
    for (int d = 0; d < n_dims; d++) t->ne[d] = ne[d];
    g->n_t++;
    return QL_OK;
}

static int64_t numel(const gguf_tensor_info *t) {
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= t->ne[d];
    return n;
}

// The tensor's bytes in the file: rows of ne[0] values each.
static size_t nbytes(const gguf_tensor_info *t) {
    return t->ne[0] ? gguf_row_bytes(t->type, t->ne[0]) * (size_t)(numel(t) / t->ne[0]) : 0;
}

static size_t padded(size_t n) { return (n + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN; }

int gguf_write(gguf_out *g, const char *path) {
    if (g->failed) return ql_err(QL_ENOMEM, "%s: out of memory building the GGUF metadata", path);
    // header and tensor infos into one buffer (after the key/values)
    gguf_out h;
    gguf_init(&h);
    uint64_t off = 0;
    int rc = put(&h, "GGUF", 4);
    if (!rc) rc = put_u32(&h, 3);
    if (!rc) rc = put_u64(&h, (uint64_t)g->n_t);
    if (!rc) rc = put_u64(&h, g->n_kv);
    if (!rc) rc = put(&h, g->kv, g->kv_len);
    for (int i = 0; i < g->n_t && !rc; i++) {
        const gguf_tensor_info *t = &g->t[i];
        rc = put_str(&h, t->name);
        if (!rc) rc = put_u32(&h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims && !rc; d++) rc = put_u64(&h, (uint64_t)t->ne[d]);
        if (!rc) rc = put_u32(&h, (uint32_t)t->type);
        if (!rc) rc = put_u64(&h, off);
        off += padded(nbytes(t));
    }
    afile f;
    if (!rc) rc = afile_open(&f, path);
    if (rc) { gguf_free(&h); return rc; }
    rc = afile_write(&f, h.kv, h.kv_len);
    if (!rc) rc = afile_pad(&f, padded(h.kv_len) - h.kv_len);
    gguf_free(&h);
    float *tmp = NULL;
    void *out = NULL;
    size_t cap = 0;
    for (int i = 0; i < g->n_t && !rc; i++) {
        const gguf_tensor_info *t = &g->t[i];
        size_t n = (size_t)numel(t), nb = nbytes(t);
        if (n > cap) {
            free(tmp), free(out);
            // the conversions: 2 bytes a value for 16 bits, fewer for Q8_0 (34 per 32) and Q4_0
            tmp = malloc(sizeof(float) * n), out = malloc(sizeof(uint16_t) * n);
            cap = n;
            if (!tmp || !out) { rc = ql_err(QL_ENOMEM, "out of memory writing %s", t->name); break; }
        }
        const float *src = t->data;
        if (!src) {
            rc = t->fill(t->ctx, i, tmp);
            src = tmp;
        }
        if (rc) break;
        const void *bytes = src;  // F32 goes out as it is
        int64_t bad = t->type == GGML_Q8_0 || t->type == GGML_Q4_0 ? dtype_first_nonfinite(src, DT_F32, (int64_t)n) : -1;
        if (bad >= 0) {
            rc = ql_err(QL_EFORMAT, "GGUF tensor %s: value %g at [%lld, %lld] is not finite; it cannot be quantized to %s",
                        t->name, (double)src[bad], (long long)(bad / t->ne[0]), (long long)(bad % t->ne[0]),
                        gguf_type_name(t->type));
            break;
        }
        if (t->type == GGML_F16) for (size_t k = 0; k < n; k++) ((uint16_t *)out)[k] = f32_to_f16(src[k]);
        if (t->type == GGML_BF16) for (size_t k = 0; k < n; k++) ((uint16_t *)out)[k] = f32_to_bf16(src[k]);
        if (t->type == GGML_Q8_0) gguf_quantize_q8_0(out, src, (int64_t)n);
        if (t->type == GGML_Q4_0) gguf_quantize_q4_0(out, src, (int64_t)n);
        if (t->type != GGML_F32) bytes = out;
        rc = afile_write(&f, bytes, nb);
        if (!rc) rc = afile_pad(&f, padded(nb) - nb);
    }
    free(tmp), free(out);
    if (!rc) rc = afile_commit(&f);
    else afile_abort(&f);
    return rc;
}
