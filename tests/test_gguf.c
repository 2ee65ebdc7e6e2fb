// test_gguf.c: the GGUF writer (export/gguf.c) and the llama.cpp layouts
// (export/llama_gguf.c). llama.cpp itself loading these files is the interop
// test (tests/interop/); here:
//   (a) a file with every key type and F32/F16/BF16 tensors reads back, by a
//       reader written from ggml's docs/gguf.md, with the values, the 32-byte
//       alignment of the data and of every tensor offset;
//   (b) the q/k row permutation is the one that turns Hugging Face's rotate-half
//       RoPE into ggml's interleaved RoPE: permute(rope_hf(q)) = rope_ggml(permute(q))
//       for random q at several positions;
//   (c) a LoRA on tiny_gqa: the adapter keys, alpha = scaling * rank (rsLoRA
//       too), every targeted linear's lora_a = A and lora_b = B (q and k permuted)
//       with llama.cpp's shape rule (a ne {in, r}, b ne {r, out});
//   (d) an unwritable path fails with its name and leaves nothing behind;
//   (e) the base of tiny_gqa: GQA keys, the vocabulary, k rows permuted by the KV
//       heads, and rope_freqs by llama.cpp's Llama 3 formula, computed here;
//   (f) Q8_0 and Q4_0 blocks (export/gguf_quant.c) byte for byte equal to what
//       llama.cpp's llama-quantize --pure wrote from the same fp32 rows
//       (tests/fixtures/gguf_quant, made by tests/reference/make_gguf_quant_fixture.py:
//       real weights and hand-made edge blocks: zeros, rounding ties, equal
//       magnitudes, subnormal and zero f16 scales), and hand-derived known answers;
//   (g) the base of tiny_gqa in Q8_0 and Q4_0: file_type, norms F32, ffn_down (rows
//       of 172 values) F16 exactly, every other matrix quantized and within the
//       block's rounding bound of its source value.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/safetensors.h"
#include "model/model.h"
#include "export/gguf.h"
#include "export/gguf_quant.h"
#include "export/llama_gguf.h"
#include "testutil.h"

// ---- a small reader ----
typedef struct {
    const uint8_t *p, *end;
    int bad;
} rd;

static uint64_t rd_n(rd *r, int n) {
    uint64_t v = 0;
    if (r->p + n > r->end) { r->bad = 1; return 0; }
    memcpy(&v, r->p, (size_t)n);
    r->p += n;
    return v;
}
static char *rd_str(rd *r) {
    uint64_t n = rd_n(r, 8);
    if (r->bad || r->p + n > r->end) { r->bad = 1; return strdup(""); }
    char *s = strndup((const char *)r->p, n);
    r->p += n;
    return s;
}

typedef struct {
    char key[64];
    uint32_t type;
    double num;      // scalars
    char str[64];    // strings (first item of a string array)
    uint64_t n;      // arrays
    const uint8_t *arr;
} kv;
typedef struct {
    char name[96];
    int nd;
    uint64_t ne[4];
    uint32_t type;
    uint64_t off;
} ti;
typedef struct {
    uint8_t *buf;
    size_t len;
    kv kv[64];
    int nkv;
    ti t[256];
    int nt;
    const uint8_t *data;
} gf;

static void skip_val(rd *r, uint32_t type, kv *k) {
    switch (type) {
    case 0: case 1: case 7: k->num = (double)rd_n(r, 1); break;
    case 2: case 3: k->num = (double)rd_n(r, 2); break;
    case 4: k->num = (double)(uint32_t)rd_n(r, 4); break;
    case 5: k->num = (double)(int32_t)rd_n(r, 4); break;
    case 6: { uint32_t u = (uint32_t)rd_n(r, 4); float f; memcpy(&f, &u, 4); k->num = f; break; }
    case 8: { char *s = rd_str(r); snprintf(k->str, sizeof k->str, "%s", s); free(s); break; }
    case 9: {
        uint32_t et = (uint32_t)rd_n(r, 4);
        k->n = rd_n(r, 8);
        k->arr = r->p;
        kv tmp;
        for (uint64_t i = 0; i < k->n && !r->bad; i++) {
            skip_val(r, et, &tmp);
            if (i == 0 && et == 8) snprintf(k->str, sizeof k->str, "%s", tmp.str);
        }
        break;
    }
    default: r->bad = 1;
    }
}

static int gf_read(gf *g, const char *path) {
    memset(g, 0, sizeof *g);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    g->len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    g->buf = malloc(g->len);
    CHECK(fread(g->buf, 1, g->len, f) == g->len);
    fclose(f);
    rd r = {g->buf, g->buf + g->len, 0};
    CHECK(!memcmp(g->buf, "GGUF", 4));
    r.p += 4;
    CHECK(rd_n(&r, 4) == 3);
    uint64_t nt = rd_n(&r, 8), nkv = rd_n(&r, 8);
    CHECK(nt <= 256 && nkv <= 64);
    for (uint64_t i = 0; i < nkv && !r.bad; i++) {
        kv *k = &g->kv[g->nkv++];
        char *s = rd_str(&r);
        snprintf(k->key, sizeof k->key, "%s", s);
        free(s);
        k->type = (uint32_t)rd_n(&r, 4);
        skip_val(&r, k->type, k);
    }
    for (uint64_t i = 0; i < nt && !r.bad; i++) {
        ti *t = &g->t[g->nt++];
        char *s = rd_str(&r);
        snprintf(t->name, sizeof t->name, "%s", s);
        free(s);
        t->nd = (int)rd_n(&r, 4);
        for (int d = 0; d < t->nd && d < 4; d++) t->ne[d] = rd_n(&r, 8);
        t->type = (uint32_t)rd_n(&r, 4);
        t->off = rd_n(&r, 8);
        CHECKF(t->off % GGUF_ALIGN == 0, "%s: offset %llu", t->name, (unsigned long long)t->off);
    }
    CHECK(!r.bad);
    size_t data = ((size_t)(r.p - g->buf) + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
    g->data = g->buf + data;
    return !r.bad;
}
static const kv *gf_kv(const gf *g, const char *key) {
    for (int i = 0; i < g->nkv; i++)
        if (!strcmp(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}
static const ti *gf_t(const gf *g, const char *name) {
    for (int i = 0; i < g->nt; i++)
        if (!strcmp(g->t[i].name, name)) return &g->t[i];
    return NULL;
}
// The f16 scale d of the 32-value block holding element i of a Q8_0 (type 8)
// or Q4_0 (type 2) tensor, and *q the element's code as a signed level: the
// value is *q * d (ggml's dequantize_row_q8_0 / _q4_0; the layout in gguf_quant.h).
static float gf_block(const gf *g, const ti *t, size_t i, int *q) {
    size_t bb = t->type == 8 ? 34 : 18;
    const uint8_t *b = g->data + t->off + i / 32 * bb;
    int j = (int)(i % 32);
    if (t->type == 8) *q = (int8_t)b[2 + j];
    else *q = (j < 16 ? b[2 + j] & 15 : b[2 + j - 16] >> 4) - 8;
    return f16_to_f32((uint16_t)(b[0] | b[1] << 8));
}
// Element i of tensor t as fp32.
static float gf_at(const gf *g, const ti *t, size_t i) {
    const uint8_t *p = g->data + t->off;
    uint16_t h;
    float f;
    int q;
    switch (t->type) {
    case 0: memcpy(&f, p + 4 * i, 4); return f;
    case 1: memcpy(&h, p + 2 * i, 2); return f16_to_f32(h);
    case 2: case 8: f = gf_block(g, t, i, &q); return (float)q * f;
    case 30: memcpy(&h, p + 2 * i, 2); return bf16_to_f32(h);
    default: CHECK(!"tensor type"); return NAN;
    }
}

// ---- (a) ----
static void test_format(const char *dir) {
    gguf_out g;
    gguf_init(&g);
    const char *strs[2] = {"one", "two"};
    float fs[3] = {1.5f, -2, 0.25f};
    int32_t is[2] = {-7, 9};
    float m[6] = {1, 2, 3, 4, 5, 6.5f}, v[5] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
    int64_t ne_m[2] = {3, 2}, ne_v[1] = {5};
    CHECK_OK(gguf_kv_str(&g, "a.str", "hello"));
    CHECK_OK(gguf_kv_u32(&g, "a.u32", 4000000000u));
    CHECK_OK(gguf_kv_i32(&g, "a.i32", -5));
    CHECK_OK(gguf_kv_f32(&g, "a.f32", 0.75f));
    CHECK_OK(gguf_kv_bool(&g, "a.bool", 1));
    CHECK_OK(gguf_kv_strs(&g, "a.strs", strs, 2));
    CHECK_OK(gguf_kv_f32s(&g, "a.f32s", fs, 3));
    CHECK_OK(gguf_kv_i32s(&g, "a.i32s", is, 2));
    CHECK_OK(gguf_tensor(&g, "m16", 2, ne_m, GGML_F16, m, NULL, NULL));
    CHECK_OK(gguf_tensor(&g, "v32", 1, ne_v, GGML_F32, v, NULL, NULL));
    CHECK_OK(gguf_tensor(&g, "mbf", 2, ne_m, GGML_BF16, m, NULL, NULL));
    // a quantized type needs whole blocks in a row; an unknown type number is refused
    CHECK(gguf_tensor(&g, "mq", 2, ne_m, GGML_Q8_0, m, NULL, NULL) == QL_EINVAL && strstr(ql_errmsg(), "mq") &&
          strstr(ql_errmsg(), "Q8_0 needs rows of a multiple of 32 values, found 3"));
    CHECK(gguf_tensor(&g, "mx", 2, ne_m, 12, m, NULL, NULL) == QL_EINVAL && strstr(ql_errmsg(), "ggml type 12"));
    const char *path = test_path(dir, "a.gguf");
    CHECK_OK(gguf_write(&g, path));
    gguf_free(&g);
    gf r;
    CHECK(gf_read(&r, path));
    CHECK(r.nkv == 8 && r.nt == 3);
    const kv *k;
    CHECK((k = gf_kv(&r, "a.str")) && k->type == 8 && !strcmp(k->str, "hello"));
    CHECK((k = gf_kv(&r, "a.u32")) && k->type == 4 && k->num == 4000000000.0);
    CHECK((k = gf_kv(&r, "a.i32")) && k->type == 5 && k->num == -5);
    CHECK((k = gf_kv(&r, "a.f32")) && k->type == 6 && k->num == 0.75);
    CHECK((k = gf_kv(&r, "a.bool")) && k->type == 7 && k->num == 1);
    CHECK((k = gf_kv(&r, "a.strs")) && k->type == 9 && k->n == 2 && !strcmp(k->str, "one"));
    CHECK((k = gf_kv(&r, "a.f32s")) && k->n == 3 && !memcmp(k->arr, fs, sizeof fs));
    CHECK((k = gf_kv(&r, "a.i32s")) && k->n == 2 && !memcmp(k->arr, is, sizeof is));
    const ti *t = gf_t(&r, "m16");
    CHECK(t && t->type == 1 && t->nd == 2 && t->ne[0] == 3 && t->ne[1] == 2);
    for (int i = 0; t && i < 6; i++) CHECK(gf_at(&r, t, i) == m[i]);
    t = gf_t(&r, "v32");
    CHECK(t && t->type == 0 && t->nd == 1 && t->ne[0] == 5);
    for (int i = 0; t && i < 5; i++) CHECK(gf_at(&r, t, i) == v[i]);
    t = gf_t(&r, "mbf");
    CHECK(t && t->type == 30);
    for (int i = 0; t && i < 6; i++) CHECK(gf_at(&r, t, i) == m[i]);
    CHECK(r.data + t->off + 12 <= r.buf + r.len);
    free(r.buf);
}

// ---- (b) ----
// Hugging Face: pairs (i, i + D/2); ggml (mode 0): pairs (2i, 2i+1); angle p * theta^(-2i/D).
static void rope(float *x, int D, int p, int interleaved) {
    for (int i = 0; i < D / 2; i++) {
        double a = p * pow(10000.0, -2.0 * i / D), c = cos(a), s = sin(a);
        int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + D / 2;
        float x0 = x[i0], x1 = x[i1];
        x[i0] = (float)(x0 * c - x1 * s), x[i1] = (float)(x0 * s + x1 * c);
    }
}

static void test_permute(void) {
    enum { H = 3, D = 8, ROWS = H * D };
    uint64_t seed = 3;
    for (int p = 0; p < 5; p++) {
        float q[ROWS], a[ROWS], b[ROWS], t[ROWS];
        for (int i = 0; i < ROWS; i++) q[i] = test_rand_uniform(&seed);
        memcpy(t, q, sizeof q);
        for (int h = 0; h < H; h++) rope(t + h * D, D, p, 0);
        gguf_rope_permute(a, t, ROWS, 1, H);  // permute(rope_hf(q))
        gguf_rope_permute(b, q, ROWS, 1, H);
        for (int h = 0; h < H; h++) rope(b + h * D, D, p, 1);  // rope_ggml(permute(q))
        check_close("permute(rope_hf q) = rope_ggml(permute q)", a, b, ROWS, 1e-6, 0);
    }
}

// ---- (e) ----
// The base of tiny_gqa (GQA, Llama 3 RoPE scaling): shapes, q/k rows permuted,
// and rope_freqs[i] by llama.cpp's formula (conversion/llama.py), computed here
// from the config alone.
// tiny_gqa in F32 with its tokenizer.
static void load_tiny_gqa(model *m, tokenizer **tok) {
    char mdir[4096];
    snprintf(mdir, sizeof mdir, "%s/tests/fixtures/models/tiny_gqa", test_source_dir());
    CHECK_OK(model_load(m, mdir, DT_F32));
    *tok = NULL;
    CHECK_OK(tok_load_bytes(tok, (tok_kind)m->tokenizer_kind, m->tokenizer, m->tokenizer_len, "model"));
}

static void test_base(const char *dir) {
    model m;
    tokenizer *tok;
    load_tiny_gqa(&m, &tok);
    const model_config *c = &m.cfg;
    CHECK(c->rope_scaling == ROPE_LLAMA3);
    const char *path = test_path(dir, "base.gguf");
    CHECK_OK(gguf_write_base(&m, tok, GGML_F32, path));
    gf r;
    CHECK(gf_read(&r, path));
    const kv *k;
    CHECK((k = gf_kv(&r, "llama.attention.head_count_kv")) && k->num == c->n_kv_heads);
    CHECK((k = gf_kv(&r, "tokenizer.ggml.tokens")) && k->n == (uint64_t)c->vocab_size);
    const ti *t = gf_t(&r, "rope_freqs.weight");
    int D = c->head_dim;
    CHECK(t && t->nd == 1 && t->ne[0] == (uint64_t)D / 2);
    for (int i = 0; t && i < D / 2; i++) {
        double freq = 1.0 / pow(c->rope_theta, 2.0 * i / D), wavelen = 2 * M_PI / freq;
        double lo = c->rope_original_max_pos / c->rope_low_freq_factor, hi = c->rope_original_max_pos / c->rope_high_freq_factor;
        double want = wavelen < hi ? 1 : wavelen > lo ? c->rope_factor : 0;
        if (want == 0) {
            double smooth = (c->rope_original_max_pos / wavelen - c->rope_low_freq_factor) /
                            (c->rope_high_freq_factor - c->rope_low_freq_factor);
            want = 1 / ((1 - smooth) / c->rope_factor + smooth);
        }
        CHECKF(fabs(gf_at(&r, t, (size_t)i) - want) <= 1e-5 * want, "rope_freqs[%d] = %g, want %g", i,
               gf_at(&r, t, (size_t)i), want);
    }
    // blk.1.attn_k: the checkpoint's k_proj with rows permuted by n_kv_heads
    t = gf_t(&r, "blk.1.attn_k.weight");
    const qweight *wk = &m.layers[1].wk;
    CHECK(t && t->ne[0] == (uint64_t)wk->cols && t->ne[1] == (uint64_t)wk->rows);
    int bad = 0;
    for (int64_t o = 0; t && o < wk->rows; o++)
        for (int64_t ci = 0; ci < wk->cols; ci++) {
            int64_t src = o / D * D + (o % D % 2) * (D / 2) + (o % D) / 2;
            bad += gf_at(&r, t, (size_t)(o * wk->cols + ci)) != qweight_get(wk, src, ci);
        }
    CHECK(bad == 0);
    free(r.buf);
    tok_free(tok);
    model_free(&m);
}

// ---- (f) ----
// One block of ours against the expected bytes; says which block and byte differ.
static void check_blocks(const char *what, const uint8_t *got, const uint8_t *want, size_t n, size_t bb) {
    size_t k = 0;
    while (k < n && got[k] == want[k]) k++;
    CHECKF(k == n, "%s: byte %zu (block %zu, byte %zu of it) is 0x%02x, llama.cpp's 0x%02x", what, k, k / bb, k % bb,
           k < n ? got[k] : 0, k < n ? want[k] : 0);
}

static void test_quant_fixture(void) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tests/fixtures/gguf_quant/llamacpp_q8_0_q4_0.safetensors", test_source_dir());
    st_file f;
    CHECK_OK(st_open(&f, path));
    if (test_failures) return;
    static const char *const names[] = {"token_embd.weight", "output.weight", "blk.0.attn_q.weight",
                                        "blk.1.ffn_down.weight", "blk.1.attn_v.weight"};
    int64_t blocks = 0;
    for (int i = 0; i < 5; i++) {
        char nm[128], what[160];
        snprintf(nm, sizeof nm, "%s.f32", names[i]);
        const st_tensor *x = st_find(&f, nm);
        CHECKF(x && x->type == DT_F32 && x->shape[1] % 32 == 0, "%s: missing or not F32 rows of 32k values", nm);
        if (!x) continue;
        int64_t n = x->numel;
        uint8_t *got = malloc((size_t)n / 32 * GGUF_Q8_0_BYTES);
        for (int k = 0; k < 2; k++) {
            size_t bb = k ? GGUF_Q4_0_BYTES : GGUF_Q8_0_BYTES;
            snprintf(nm, sizeof nm, "%s.%s", names[i], k ? "q4_0" : "q8_0");
            const st_tensor *w = st_find(&f, nm);
            CHECKF(w && w->type == DT_U8 && w->nbytes == (size_t)n / 32 * bb, "%s: missing or not %lld blocks", nm,
                   (long long)(n / 32));
            if (!w || w->nbytes != (size_t)n / 32 * bb) continue;
            if (k) gguf_quantize_q4_0(got, x->data, n);
            else gguf_quantize_q8_0(got, x->data, n);
            snprintf(what, sizeof what, "%s (%lld x %lld)", nm, (long long)x->shape[0], (long long)x->shape[1]);
            check_blocks(what, got, w->data, w->nbytes, bb);
            blocks += n / 32;
        }
        free(got);
    }
    printf("Q8_0 / Q4_0 vs llama.cpp's llama-quantize: %lld blocks compared byte for byte\n", (long long)blocks);
    CHECK(blocks == 2 * (3 * 64 + 2 * 64 + 2 * 64 + 2 * 128 + 4 * 64) / 32);
    st_close(&f);
}

// Known answers, derived by hand from the definitions in gguf_quant.h.
static void test_quant_known(void) {
    float x[32] = {0};
    uint8_t b[34];
    // Q8_0: amax 127 -> d = 1 (f16 0x3c00), q = roundf(x): halves away from zero
    x[0] = 127, x[1] = 2.5f, x[2] = -2.5f, x[3] = 0.49f, x[4] = -127, x[31] = -0.5f;
    gguf_quantize_q8_0(b, x, 32);
    CHECK(b[0] == 0x00 && b[1] == 0x3c);
    CHECKF((int8_t)b[2] == 127 && (int8_t)b[3] == 3 && (int8_t)b[4] == -3 && (int8_t)b[5] == 0 &&
           (int8_t)b[6] == -127 && (int8_t)b[33] == -1 && b[7] == 0, "Q8_0 codes %d %d %d %d %d %d", (int8_t)b[2],
           (int8_t)b[3], (int8_t)b[4], (int8_t)b[5], (int8_t)b[6], (int8_t)b[33]);
    // Q4_0: m = -8 (the first of the two largest magnitudes) -> d = 1; q = min(15, trunc(x + 8.5))
    memset(x, 0, sizeof x);
    x[0] = -8, x[1] = 0.5f, x[2] = -0.5f, x[16] = 8, x[17] = 7.4f, x[18] = 6.5f;
    gguf_quantize_q4_0(b, x, 32);
    CHECK(b[0] == 0x00 && b[1] == 0x3c);
    // byte j: element j low, element 16 + j high: (0, 15), (9, 15), (8, 15), then (8, 8)
    CHECKF(b[2] == 0xf0 && b[3] == 0xf9 && b[4] == 0xf8 && b[5] == 0x88 && b[17] == 0x88,
           "Q4_0 bytes %02x %02x %02x %02x %02x", b[2], b[3], b[4], b[5], b[17]);
    // zeros: Q8_0 d = +0 and codes 0; Q4_0 d = 0 / -8 = -0 (0x8000) and every nibble 8
    memset(x, 0, sizeof x);
    gguf_quantize_q8_0(b, x, 32);
    int bad = b[0] != 0 || b[1] != 0;
    for (int j = 0; j < 32; j++) bad += b[2 + j] != 0;
    gguf_quantize_q4_0(b, x, 32);
    bad += b[0] != 0x00 || b[1] != 0x80;
    for (int j = 0; j < 16; j++) bad += b[2 + j] != 0x88;
    CHECKF(!bad, "zero blocks: %d bytes differ", bad);
}

// ---- (g) ----
static void test_base_quant(const char *dir, int type) {
    model m;
    tokenizer *tok;
    load_tiny_gqa(&m, &tok);
    const char *path = test_path(dir, type == GGML_Q8_0 ? "base_q8_0.gguf" : "base_q4_0.gguf");
    CHECK_OK(gguf_write_base(&m, tok, type, path));
    gf r;
    CHECK(gf_read(&r, path));
    const kv *k;
    CHECK((k = gf_kv(&r, "general.file_type")) && k->num == (type == GGML_Q8_0 ? 7 : 2));  // llama.h MOSTLY_Q8_0 / _Q4_0
    int nq = 0;
    for (int i = 0; i < r.nt; i++) {
        const ti *t = &r.t[i];
        int want = t->nd == 1 ? 0 : t->ne[0] % 32 ? 1 : type;
        CHECKF(t->type == (uint32_t)want, "%s: ggml type %u, want %d", t->name, t->type, want);
        nq += t->type == (uint32_t)type;
    }
    CHECK(nq == 1 + 6 * m.cfg.n_layers);  // token_embd (tied: no output) and six linears a block
    // ffn_down (rows of 172): F16, each value the source rounded
    const ti *t = gf_t(&r, "blk.2.ffn_down.weight");
    const qweight *w = &m.layers[2].w_down;
    int bad = 0;
    for (int64_t i = 0; t && i < w->rows * w->cols; i++)
        bad += gf_at(&r, t, (size_t)i) != f16_to_f32(f32_to_f16(qweight_get(w, i / w->cols, i % w->cols)));
    CHECKF(t && !bad, "ffn_down: %d values are not the source rounded to F16", bad);
    // ffn_up: within the rounding of its level. Q8_0: |x - q d| <= d/2 plus q times d's
    // rounding to f16 (|q| <= 127, 2^-11 relative); Q4_0: half a level, a whole one where
    // x/d > 7.5 is clamped to level 7, plus 8 times d's rounding
    t = gf_t(&r, "blk.1.ffn_up.weight");
    w = &m.layers[1].w_up;
    double worst = 0;
    for (int64_t i = 0; t && i < w->rows * w->cols; i++) {
        int q;
        float d = fabsf(gf_block(&r, t, (size_t)i, &q)), x = qweight_get(w, i / w->cols, i % w->cols);
        double lim = type == GGML_Q8_0 ? d * (0.5 + 128.0 / 2048) : d * ((q == 7 ? 1.0 : 0.5) + 9.0 / 2048);
        double e = fabs((double)x - (double)gf_at(&r, t, (size_t)i));
        if (e > lim) bad++;
        if (d > 0 && e / d > worst) worst = e / d;
    }
    CHECKF(t && !bad, "%s ffn_up: %d values outside their level's bound (worst %.3f d)", type == GGML_Q8_0 ? "Q8_0" : "Q4_0",
           bad, worst);
    free(r.buf);
    tok_free(tok);
    model_free(&m);
}

// ---- (c) ----
static void test_lora(const char *dir, int rslora) {
    char mdir[4096];
    snprintf(mdir, sizeof mdir, "%s/tests/fixtures/models/tiny_gqa", test_source_dir());
    model m;
    CHECK_OK(model_load(&m, mdir, DT_F32));
    const model_config *c = &m.cfg;
    lora_adapter a;
    test_lora_random(&a, c, 4, 8.0f, rslora, LORA_Q | LORA_K | LORA_V | LORA_DOWN, 9);
    const char *path = test_path(dir, "l.gguf");
    CHECK_OK(gguf_write_lora(&a, c, DT_F32, path));
    gf r;
    CHECK(gf_read(&r, path));
    const kv *k;
    CHECK((k = gf_kv(&r, "general.type")) && !strcmp(k->str, "adapter"));
    CHECK((k = gf_kv(&r, "general.architecture")) && !strcmp(k->str, "llama"));
    CHECK((k = gf_kv(&r, "adapter.type")) && !strcmp(k->str, "lora"));
    CHECK((k = gf_kv(&r, "adapter.lora.alpha")) && fabs(k->num / 4 - a.scaling) < 1e-6);
    CHECK(r.nt == 2 * 4 * c->n_layers);
    for (int l = 0; l < c->n_layers; l++)
        for (int j = 0; j < LORA_NMODULES; j++) {
            const lora_pair *p = &a.w[l * LORA_NMODULES + j];
            char na[96], nb[96];
            snprintf(na, sizeof na, "blk.%d.%s.weight.lora_a", l, GGUF_MODULE_NAMES[j]);
            snprintf(nb, sizeof nb, "blk.%d.%s.weight.lora_b", l, GGUF_MODULE_NAMES[j]);
            const ti *ta = gf_t(&r, na), *tb = gf_t(&r, nb);
            CHECK(!p->A == !ta && !p->A == !tb);
            if (!p->A || !ta || !tb) continue;
            CHECK(ta->ne[0] == (uint64_t)p->in && ta->ne[1] == 4 && tb->ne[0] == 4 && tb->ne[1] == (uint64_t)p->out);
            int bad = 0;
            for (int i = 0; i < 4 * p->in; i++) bad += gf_at(&r, ta, (size_t)i) != p->A[i];
            // B row o of the file is our row perm(o): for q/k, within a head, row 2i+j <- j*D/2+i
            int D = c->head_dim;
            for (int o = 0; o < p->out; o++) {
                int src = o;
                if (j <= 1) src = o / D * D + (o % D % 2) * (D / 2) + (o % D) / 2;
                for (int q = 0; q < 4; q++) bad += gf_at(&r, tb, (size_t)o * 4 + q) != p->B[src * 4 + q];
            }
            CHECKF(!bad, "%s/%s: %d values differ", na, nb, bad);
        }
    free(r.buf);
    lora_free(&a);
    model_free(&m);
}

int main(void) {
    char dir[] = "/tmp/qlora_gguf_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    test_format(dir);
    test_permute();
    test_lora(dir, 0);
    test_lora(dir, 1);
    test_base(dir);
    test_quant_fixture();
    test_quant_known();
    test_base_quant(dir, GGML_Q8_0);
    test_base_quant(dir, GGML_Q4_0);
    // (d)
    gguf_out g;
    gguf_init(&g);
    CHECK_OK(gguf_kv_str(&g, "k", "v"));
    CHECK(gguf_write(&g, test_path(dir, "missing/x.gguf")) != QL_OK && strstr(ql_errmsg(), "missing/x.gguf"));
    gguf_free(&g);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "test \"$(ls '%s' | grep -v '^a.gguf$' | grep -v '^l.gguf$' | grep -v '^base.gguf$' | grep -v '^base_q[48]_0.gguf$')\" = \"\"", dir);
    CHECK(system(cmd) == 0);  // no temp file left
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return test_finish("test_gguf");
}
