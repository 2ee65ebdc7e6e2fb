// test_nf4.c: the NF4 format of kernels/nf4.h: the tables, the two quantizers
// against their definitions, and the round-trip error of nf4_quantize +
// nf4_dequantize against a bound derived below.
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/nf4.h"
#include "testutil.h"

// bitsandbytes dQuantizeNF4's thresholds (csrc/kernels.cu), ascending: the
// spec's constants, written out here to test the boundaries exactly.
static const float BNB_THRESH[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
};

// (d) the tables
static void test_tables(void) {
    CHECK(NF4_TABLE[0] == -1.0f && NF4_TABLE[7] == 0.0f && NF4_TABLE[15] == 1.0f);
    for (int i = 0; i + 1 < 16; i++) CHECKF(NF4_TABLE[i] < NF4_TABLE[i + 1], "NF4_TABLE[%d]", i);
    for (int i = 0; i + 1 < 256; i++) CHECKF(NF4_CODE8[i] < NF4_CODE8[i + 1], "NF4_CODE8[%d] not < [%d]", i, i + 1);
    CHECK(NF4_CODE8[127] == 0.0f && NF4_CODE8[255] == 1.0f);
    int has0 = 0, has1 = 0;
    for (int i = 0; i < 256; i++) {
        has0 |= NF4_CODE8[i] == 0.0f;
        has1 |= NF4_CODE8[i] == 1.0f;
    }
    CHECK(has0 && has1);
    // the dynamic map is symmetric around index 127 (255 = +1 has no negative partner)
    for (int k = 1; k <= 127; k++) CHECKF(NF4_CODE8[127 - k] == -NF4_CODE8[127 + k], "symmetry at k=%d", k);
    // a few values by construction: the top exponent level is 10^0 * means of
    // linspace(0.1, 1, 65), so code8[254] = (0.9859375 + 1) / 2 in fp32
    CHECK(NF4_CODE8[254] == 0x1.fc6666p-1f);
    CHECK(NF4_CODE8[0] == -0x1.fc6666p-1f);
    // the bitsandbytes thresholds are the midpoints of the table (computed in double)
    for (int i = 0; i < 15; i++) {
        double mid = 0.5 * ((double)NF4_TABLE[i] + NF4_TABLE[i + 1]);
        CHECKF(fabs(mid - BNB_THRESH[i]) < 1e-7, "threshold %d: %.9g vs midpoint %.9g", i, BNB_THRESH[i], mid);
    }
}

// (a) nf4_quantize_value against the thresholds: code goes up when x > t
static void test_quantize_value(void) {
    for (int i = 0; i < 15; i++) {
        const float t = BNB_THRESH[i];
        CHECKF(nf4_quantize_value(t) == i, "x = t%d exactly -> %d, want %d", i, nf4_quantize_value(t), i);
        CHECKF(nf4_quantize_value(nextafterf(t, 2.0f)) == i + 1, "just above t%d", i);
        CHECKF(nf4_quantize_value(nextafterf(t, -2.0f)) == i, "just below t%d", i);
    }
    CHECK(nf4_quantize_value(-1.0f) == 0);
    CHECK(nf4_quantize_value(1.0f) == 15);
    CHECK(nf4_quantize_value(0.0f) == 7);
    CHECK(nf4_quantize_value(-0.0f) == 7);
    CHECK(nf4_quantize_value(-2.0f) == 0 && nf4_quantize_value(2.0f) == 15);  // out of range clamps
    CHECK(nf4_quantize_value(NAN) == 0);  // bitsandbytes: every comparison with NaN is false
    // every table value maps to itself
    for (int c = 0; c < 16; c++) CHECKF(nf4_quantize_value(NF4_TABLE[c]) == c, "table value %d", c);
    // random values: the nearest table value, except within 1e-7 of a midpoint
    uint64_t s = 1;
    int bad = 0;
    for (int k = 0; k < 200000; k++) {
        float x = test_rand_uniform(&s) * 1.05f;
        int best = 0;
        for (int c = 1; c < 16; c++)
            if (fabs((double)x - NF4_TABLE[c]) < fabs((double)x - NF4_TABLE[best])) best = c;
        int got = nf4_quantize_value(x);
        if (got != best) {
            double d = fabs((double)x - NF4_TABLE[got]) - fabs((double)x - NF4_TABLE[best]);
            if (d > 2e-7) bad++;
        }
    }
    CHECKF(bad == 0, "%d random values not quantized to the nearest NF4 value", bad);
}

// (b) nf4_quantize_code8 against a brute-force nearest search over NF4_CODE8.
// dQuantize rounds at an fp32 midpoint (upper + val) * 0.5f, which is off the
// exact midpoint by at most half an ulp (<= 2^-24 * |midpoint|), so a value in
// between may go to the farther neighbour by a distance difference of at most
// twice that. Such near-ties are counted and allowed (difference <= 2^-23 *
// |midpoint|); anything else fails. An fp32 midpoint itself stays at the binary
// search's pivot, which may be the farther code when the midpoint was rounded.
static void test_quantize_code8(void) {
    uint64_t s = 7;
    int near_ties = 0, bad = 0;
    const int n = 1 << 20;
    for (int k = 0; k < n + 256 + 255; k++) {
        float x;
        if (k < n) x = test_rand_uniform(&s);
        else if (k < n + 256) x = NF4_CODE8[k - n];                          // every code value
        else x = (NF4_CODE8[k - n - 256] + NF4_CODE8[k - n - 255]) * 0.5f;  // every fp32 midpoint
        if (k % 3 == 1 && k < n) x = ldexpf(x, -(int)(test_rand_u64(&s) % 24));  // small magnitudes too
        int best = 0;
        for (int c = 1; c < 256; c++)
            if (fabs((double)x - NF4_CODE8[c]) < fabs((double)x - NF4_CODE8[best])) best = c;
        int got = nf4_quantize_code8(x);
        if (got == best) continue;
        double d = fabs((double)x - NF4_CODE8[got]) - fabs((double)x - NF4_CODE8[best]);
        double mid = 0.5 * fabs((double)NF4_CODE8[got] + NF4_CODE8[best]);
        if (d <= ldexp(mid, -23)) {
            near_ties++;
        } else {
            if (bad < 5) fprintf(stderr, "  code8(%a) = %d (%a), nearest %d (%a)\n", x, got, NF4_CODE8[got], best,
                                 NF4_CODE8[best]);
            bad++;
        }
    }
    for (int c = 0; c < 256; c++) CHECKF(nf4_quantize_code8(NF4_CODE8[c]) == c, "code value %d", c);
    CHECK(nf4_quantize_code8(-1.0f) == 0 && nf4_quantize_code8(1.0f) == 255 && nf4_quantize_code8(0.0f) == 127);
    fprintf(stderr, "code8 vs nearest: %d values, %d near-ties resolved the other way, %d wrong\n", n + 511,
            near_ties, bad);
    CHECK(bad == 0);
}

// (c) round trip. For element x in 64-block b (true absmax A, dequantized
// absmax A') of 256-group g (scale s2, offset o):
//   deq - x = T*A' - x = (T - xn)*A + T*(A' - A) + (xn*A - x) + rounding
// where xn = fl(x * fl(1/A)) and T = NF4_TABLE[code].
//   |T - xn| <= h4 = max half-gap of NF4_TABLE (the thresholds are midpoints;
//                the largest gap is -1 .. -0.696, h4 = 0.1519)
//   |A' - A| <= h8 * s2 + rounding, where A - o = a is quantized as a/s2 in
//                [-1,1] to the nearest NF4_CODE8 value: h8 = the larger of the
//                map's max half-gap and the distance from -1 to its lowest
//                value (both 0.00703)
//   |T| <= 1; the fp32 roundings (1/A, x*inv, a = A - o, code8*s2, + o, T*A')
//   each cost at most u = 2^-24 of their operands, bounded here by
//   8u*(A + |o| + s2); the bitsandbytes thresholds differ from the exact
//   midpoints by < 1e-7 (test_tables), adding 1e-7*A.
// So |deq - x| <= A*h4 + h8*s2 + 8u*(A + |o| + s2) + 1e-7*A.
static void test_round_trip(void) {
    double h4 = 0, h8 = 1.0 + NF4_CODE8[0];
    for (int i = 0; i + 1 < 16; i++) h4 = fmax(h4, 0.5 * ((double)NF4_TABLE[i + 1] - NF4_TABLE[i]));
    for (int i = 0; i + 1 < 256; i++) h8 = fmax(h8, 0.5 * ((double)NF4_CODE8[i + 1] - NF4_CODE8[i]));
    const double u = ldexp(1.0, -24);

    const int64_t sizes[] = {64 * 256 * 3 + 37, 64, 1, 65, 64 * 256, 4096 * 11 + 1};
    uint64_t s = 42;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        const int64_t n = sizes[si], nb = nf4_nblocks(n), ng = nf4_ngroups(n);
        float *x = malloc(n * sizeof(float)), *deq = malloc(n * sizeof(float)), *am = malloc(nb * sizeof(float));
        uint8_t *codes = malloc((n + 1) / 2), *q8 = malloc(nb);
        float *s2 = malloc(ng * sizeof(float)), offset;
        for (int64_t i = 0; i < n; i++) x[i] = test_rand_normal(&s) * (si == 5 ? 0.02f : 1.0f);
        nf4_quantize(codes, q8, s2, &offset, x, n);
        nf4_data w = {.n = n, .codes = codes, .absmax_q = q8, .absmax_scale = s2, .absmax_offset = offset};
        nf4_dequantize(deq, &w, 0, n);
        nf4_absmax(am, &w);

        double worst = 0;  // max over elements of |deq - x| / bound
        int64_t bad = 0;
        for (int64_t b = 0; b < nb; b++) {
            const int64_t e0 = b * NF4_BLOCK, e1 = e0 + NF4_BLOCK < n ? e0 + NF4_BLOCK : n;
            double A = 0;
            for (int64_t e = e0; e < e1; e++) A = fmax(A, fabs(x[e]));
            const double sc = s2[b / NF4_BLOCK2];
            const double bound = A * h4 + h8 * sc + 8 * u * (A + fabs(offset) + sc) + 1e-7 * A;
            CHECKF(fabs(am[b] - A) <= h8 * sc + 8 * u * (A + fabs(offset) + sc), "absmax of block %lld", (long long)b);
            for (int64_t e = e0; e < e1; e++) {
                const double err = fabs((double)deq[e] - x[e]);
                if (err > bound) bad++;
                if (err / bound > worst) worst = err / bound;
            }
        }
        fprintf(stderr, "round trip n=%-7lld blocks=%-5lld max |deq-x|/bound = %.3f\n", (long long)n, (long long)nb,
                worst);
        CHECKF(bad == 0, "n=%lld: %lld elements beyond the bound", (long long)n, (long long)bad);

        // partial ranges give the same values as the whole
        float part[131];
        const int64_t st = n > 200 ? 67 : 0, cnt = n - st < 131 ? n - st : 131;
        nf4_dequantize(part, &w, st, cnt);
        CHECK(memcmp(part, deq + st, cnt * sizeof(float)) == 0);
        free(x), free(deq), free(am), free(codes), free(q8), free(s2);
    }
}

// zero blocks, a constant group (scale2 = 0) and the spare nibble of odd n
static void test_edges(void) {
    const int64_t n = 3 * 64 + 1;  // odd: the last byte has one code
    float x[3 * 64 + 1], deq[3 * 64 + 1];
    uint64_t s = 3;
    for (int i = 0; i < n; i++) x[i] = i < 64 ? 0.0f : test_rand_normal(&s);
    uint8_t codes[(3 * 64 + 2) / 2], q8[4];
    float s2[1], offset;
    nf4_quantize(codes, q8, s2, &offset, x, n);
    for (int i = 0; i < 32; i++) CHECKF(codes[i] == 0x77, "zero block byte %d = %#x, want codes 7 (0.0)", i, codes[i]);
    CHECKF((codes[n / 2] & 15) == 7, "spare low nibble of odd n = %d, want 7 (the code of 0.0)", codes[n / 2] & 15);
    nf4_data w = {.n = n, .codes = codes, .absmax_q = q8, .absmax_scale = s2, .absmax_offset = offset};
    nf4_dequantize(deq, &w, 0, n);
    for (int i = 0; i < 64; i++) CHECK(deq[i] == 0.0f);

    // every block with the same absmax: a = 0 everywhere, scale2 = 0, q8 = 127 (code 0.0)
    float y[128];
    for (int i = 0; i < 128; i++) y[i] = (i % 64 == 5) ? -2.5f : 0.25f;
    uint8_t c2[64], q2[2];
    nf4_quantize(c2, q2, s2, &offset, y, 128);
    CHECK(s2[0] == 0.0f && q2[0] == 127 && q2[1] == 127 && offset == 2.5f);
    nf4_data w2 = {.n = 128, .codes = c2, .absmax_q = q2, .absmax_scale = s2, .absmax_offset = offset};
    float am[2];
    nf4_absmax(am, &w2);
    CHECK(am[0] == 2.5f && am[1] == 2.5f);
    nf4_dequantize(y, &w2, 0, 128);
    CHECK(y[5] == -2.5f && y[69] == -2.5f);
}

int main(void) {
    test_tables();
    test_quantize_value();
    test_quantize_code8();
    test_round_trip();
    test_edges();
    return test_finish("test_nf4");
}
