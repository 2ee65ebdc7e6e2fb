// test_dtype.c: dtype_first_nonfinite against libm's isfinite on each value, for F16,
// BF16 and F32: every bit pattern of the 16-bit formats once, and a lone Inf or NaN
// at each awkward place (first, last, either side of a 4096-value block edge, in a
// short tail) among finite values.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "testutil.h"

static float value_of(const void *p, dtype t, int64_t i) {
    switch (t) {
    case DT_F16: return f16_to_f32(((const uint16_t *)p)[i]);
    case DT_BF16: return bf16_to_f32(((const uint16_t *)p)[i]);
    default: { float f; memcpy(&f, (const uint32_t *)p + i, 4); return f; }
    }
}

// The first index whose value isfinite() rejects, or -1: the independent answer.
static int64_t first_by_libm(const void *p, dtype t, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(value_of(p, t, i))) return i;
    return -1;
}

// Every 16-bit pattern alone among zeros, at position `at`.
static void test_all_patterns(dtype t) {
    const int64_t n = 40, at = 33;  // block edges: test_places
    uint16_t *v = calloc((size_t)n, 2);
    for (uint32_t h = 0; h < 65536; h++) {
        v[at] = (uint16_t)h;
        int64_t got = dtype_first_nonfinite(v, t, n), want = first_by_libm(v, t, n);
        if (got != want) {
            CHECKF(got == want, "%s pattern 0x%04x: got %lld, libm says %lld", dtype_name(t), h, (long long)got,
                   (long long)want);
            break;
        }
    }
    free(v);
}

// The three formats' +Inf, -Inf and a NaN at each place, in arrays of awkward lengths.
static void test_places(void) {
    const dtype ts[3] = {DT_F16, DT_BF16, DT_F32};
    const uint32_t bad[3][3] = {{0x7c00, 0xfc00, 0x7e01}, {0x7f80, 0xff80, 0x7fc1}, {0x7f800000, 0xff800000, 0x7fc00001}};
    const int64_t lens[] = {1, 31, 4095, 4096, 4097, 8192 + 33};
    for (int k = 0; k < 3; k++)
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            const int64_t n = lens[li];
            const size_t es = dtype_size(ts[k]);
            unsigned char *v = malloc((size_t)n * es);
            uint64_t s = 0x9e3779b97f4a7c15ull + (uint64_t)n;
            for (int64_t i = 0; i < n; i++) {  // random finite values: any exponent but all ones
                s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                uint32_t u = (uint32_t)s;
                if (es == 2) {
                    uint16_t h = (uint16_t)u;
                    if (!isfinite(ts[k] == DT_F16 ? f16_to_f32(h) : bf16_to_f32(h))) h ^= 0x4000;  // exponent no longer all ones
                    memcpy(v + i * 2, &h, 2);
                } else {
                    if ((u & 0x7f800000u) == 0x7f800000u) u ^= 0x40000000u;
                    memcpy(v + i * 4, &u, 4);
                }
            }
            CHECKF(dtype_first_nonfinite(v, ts[k], n) == -1 && first_by_libm(v, ts[k], n) == -1,
                   "%s n=%lld: all finite", dtype_name(ts[k]), (long long)n);
            const int64_t places[] = {0, n - 1, 4095, 4096, n / 2};
            for (size_t pi = 0; pi < sizeof places / sizeof *places; pi++)
                for (int b = 0; b < 3; b++) {
                    const int64_t at = places[pi];
                    if (at >= n) continue;
                    unsigned char keep[4];
                    memcpy(keep, v + at * es, es);
                    if (es == 2) {
                        uint16_t h = (uint16_t)bad[k][b];
                        memcpy(v + at * 2, &h, 2);
                    } else {
                        memcpy(v + at * 4, &bad[k][b], 4);
                    }
                    int64_t got = dtype_first_nonfinite(v, ts[k], n), want = first_by_libm(v, ts[k], n);
                    CHECKF(got == want && want == at, "%s n=%lld bad 0x%x at %lld: got %lld, libm %lld",
                           dtype_name(ts[k]), (long long)n, bad[k][b], (long long)at, (long long)got, (long long)want);
                    memcpy(v + at * es, keep, es);
                }
            free(v);
        }
}

int main(void) {
    test_all_patterns(DT_F16);
    test_all_patterns(DT_BF16);
    test_places();
    return test_finish("test_dtype");
}
