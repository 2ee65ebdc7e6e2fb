// test_nf4_fixture.c: NF4 quantization and dequantization are bit-exact with
// the bitsandbytes algorithm, as reimplemented independently in
// tests/reference/nf4_ref.py (fixture tests/fixtures/nf4/nf4_cases.safetensors):
// the codes, the 8-bit absmax codes, the group scales, the offset, the
// dequantized absmax and every dequantized value must be equal, bit for bit.
#include <string.h>

#include "common/err.h"
#include "common/safetensors.h"
#include "kernels/nf4.h"
#include "testutil.h"

static const st_tensor *get(const st_file *f, const char *fmt, int k) {
    char name[128];
    snprintf(name, sizeof name, fmt, k);
    const st_tensor *t = st_find(f, name);
    if (!t) { fprintf(stderr, "fixture: '%s' missing\n", name); test_failures++; }
    return t;
}

static int same_bits(const char *what, int k, const void *a, const void *b, size_t n) {
    if (memcmp(a, b, n) == 0) return 1;
    const unsigned char *x = a, *y = b;
    size_t i = 0;
    while (x[i] == y[i]) i++;
    fprintf(stderr, "case %d: %s differs first at byte %zu (got 0x%02x, reference 0x%02x)\n", k, what, i, x[i], y[i]);
    test_failures++;
    return 0;
}

int main(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/fixtures/nf4/nf4_cases.safetensors", test_source_dir());
    st_file f;
    CHECK_OK(st_open(&f, path));
    if (test_failures) return test_finish("test_nf4_fixture");
    const st_tensor *code8 = st_find(&f, "code8"), *table = st_find(&f, "nf4_table");
    CHECK(code8 && code8->numel == 256 && !memcmp(code8->data, NF4_CODE8, sizeof(float) * 256));
    CHECK(table && table->numel == 16 && !memcmp(table->data, NF4_TABLE, sizeof(float) * 16));
    int ncases = *(const int *)st_find(&f, "ncases")->data;
    for (int k = 0; k < ncases; k++) {
        const st_tensor *x = get(&f, "case%d.x", k), *codes = get(&f, "case%d.codes", k),
                        *aq = get(&f, "case%d.absmax_q", k), *sc = get(&f, "case%d.absmax_scale", k),
                        *off = get(&f, "case%d.absmax_offset", k), *adq = get(&f, "case%d.absmax_dq", k),
                        *deq = get(&f, "case%d.deq", k);
        if (test_failures) break;
        int64_t n = x->numel;
        uint8_t *c = malloc((size_t)(n + 1) / 2), *q = malloc((size_t)nf4_nblocks(n));
        float *s = malloc(sizeof(float) * (size_t)nf4_ngroups(n)), o;
        float *a = malloc(sizeof(float) * (size_t)nf4_nblocks(n)), *d = malloc(sizeof(float) * (size_t)n);
        nf4_quantize(c, q, s, &o, x->data, n);
        int ok = same_bits("codes", k, c, codes->data, codes->nbytes);
        ok &= same_bits("absmax_q", k, q, aq->data, aq->nbytes);
        ok &= same_bits("absmax_scale", k, s, sc->data, sc->nbytes);
        ok &= same_bits("absmax_offset", k, &o, off->data, 4);
        nf4_data w = {.n = n, .codes = c, .absmax_q = q, .absmax_scale = s, .absmax_offset = o};
        nf4_absmax(a, &w);
        ok &= same_bits("absmax_dq", k, a, adq->data, adq->nbytes);
        nf4_dequantize(d, &w, 0, n);
        ok &= same_bits("deq", k, d, deq->data, deq->nbytes);
        // dequantizing any sub-range gives the same values
        if (n > 70) {
            nf4_dequantize(d, &w, 37, n - 70);
            ok &= same_bits("deq[37:]", k, d, (const float *)deq->data + 37, sizeof(float) * (size_t)(n - 70));
        }
        fprintf(stderr, "nf4 case %d (n=%lld): %s\n", k, (long long)n, ok ? "bit-exact" : "MISMATCH");
        free(c), free(q), free(s), free(a), free(d);
    }
    st_close(&f);
    return test_finish("test_nf4_fixture");
}
