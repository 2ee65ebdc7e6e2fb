// matmul_avx2.c: AVX2 + FMA + F16C kernels for matmul_cpu (see matmul_kernels.h).
// Compiled without -march flags: every function carries a target attribute and
// runs only after matmul_kernels_avx2() has checked the CPU.
//
// NF4 decoding: the fused GEMV looks 32 codes up at once in four 16-byte tables
// (byte k of each value's fp32 bits) with vpshufb and assembles the floats by
// unpacks (gemv_nf4_nn); the dequantization of whole blocks keeps the 16-entry
// table in two ymm registers (entries 0..7 and 8..15): vpermps looks an index up
// in both (it reads the low 3 bits) and vblendvps picks one by bit 3 of the index,
// moved to the sign bit (nf4_lookup8). The int8 GEMV looks NF4_Q8 up with vpshufb.
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "../../common/dtype.h"
#include "matmul_kernels.h"

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE2 AVX2 static inline __attribute__((always_inline))

INLINE2 __m256 ld_f32(const float *p) { return _mm256_loadu_ps(p); }
INLINE2 __m256 ld_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
INLINE2 __m256 ld_bf16(const uint16_t *p) {
    __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
static inline float sc_f32(const float *p) { return *p; }
static inline float sc_f16(const uint16_t *p) { return f16_to_f32(*p); }
static inline float sc_bf16(const uint16_t *p) { return bf16_to_f32(*p); }

INLINE2 float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// The sums of a[0..7], in order, as one vector: two rounds of hadd within the
// 128-bit lanes, then the two lanes' halves added.
INLINE2 __m256 hsum8x8(const __m256 *a) {
    const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// ---- dense GEMV: out[n*ostride + i] = W[i,:] . x[n,:] for NN (1..7) vectors ----
// As in matmul_avx512.c: an 8-wide weight slice is converted once for all NN
// vectors; U accumulators per vector when there are few vectors.
#define DEFINE_GEMV(NAME, T, LD, SC)                                                                \
    INLINE2 void NAME##_nn(float *out, int64_t ostride, const T *w, int64_t nrows, int64_t cols,    \
                           const float *x, const int NN) {                                          \
        enum { UMAX = 4 };                                                                          \
        const int U = NN <= 1 ? 4 : NN <= 3 ? 2 : 1;                                                \
        const int64_t kstep = 8 * U, kfull = cols / kstep * kstep, k8 = cols & ~(int64_t)7;        \
        for (int64_t i = 0; i < nrows; i++) {                                                       \
            const T *wr = w + i * cols;                                                             \
            __m256 acc[MATMUL_GEMV_MAX_N][UMAX];                                                    \
            _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++)                                     \
                _Pragma("GCC unroll 4") for (int u = 0; u < U; u++) acc[n][u] = _mm256_setzero_ps(); \
            for (int64_t k = 0; k < kfull; k += kstep) {                                            \
                _Pragma("GCC unroll 4") for (int u = 0; u < U; u++) {                                \
                    const __m256 wv = LD(wr + k + 8 * u);                                           \
                    _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) acc[n][u] =                 \
                        _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + n * cols + k + 8 * u), acc[n][u]);  \
                }                                                                                   \
            }                                                                                       \
            for (int64_t k = kfull; k < k8; k += 8) {                                               \
                const __m256 wv = LD(wr + k);                                                       \
                _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) acc[n][0] =                     \
                    _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + n * cols + k), acc[n][0]);              \
            }                                                                                       \
            _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) {                                   \
                _Pragma("GCC unroll 4") for (int u = 1; u < U; u++) acc[n][0] =                      \
                    _mm256_add_ps(acc[n][0], acc[n][u]);                                            \
                float s = hsum8(acc[n][0]);                                                         \
                for (int64_t k = k8; k < cols; k++) s += SC(wr + k) * x[n * cols + k];              \
                out[n * ostride + i] = s;                                                           \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    /* rows of at most 32 values (a LoRA B, rank <= 32): 8 rows at a time, their 8       */     \
    /* accumulators reduced together (hsum8x8), not one horizontal sum per row            */     \
    AVX2 static void NAME##_short(float *out, int64_t ostride, const T *w, int64_t nrows, int64_t cols, \
                                  const float *x, int N) {                                          \
        const int nc = (int)(cols / 8);                                                             \
        for (int n = 0; n < N; n++) {                                                               \
            __m256 xv[4];                                                                           \
            for (int c = 0; c < nc; c++) xv[c] = _mm256_loadu_ps(x + n * cols + 8 * c);            \
            for (int64_t i = 0; i < nrows; i += 8) {                                                \
                __m256 a[8];                                                                        \
                _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) {                                \
                    const T *wr = w + (i + r) * cols;                                               \
                    a[r] = _mm256_mul_ps(LD(wr), xv[0]);                                            \
                    for (int c = 1; c < nc; c++) a[r] = _mm256_fmadd_ps(LD(wr + 8 * c), xv[c], a[r]); \
                }                                                                                   \
                _mm256_storeu_ps(out + n * ostride + i, hsum8x8(a));                                \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    AVX2 static void NAME(float *out, int64_t ostride, const T *w, int64_t nrows, int64_t cols,     \
                          const float *x, int N) {                                                  \
        if (cols % 8 == 0 && cols <= 32 && nrows >= 8) {                                            \
            const int64_t r8 = nrows & ~(int64_t)7;                                                 \
            NAME##_short(out, ostride, w, r8, cols, x, N);                                          \
            if (r8 == nrows) return;                                                                \
            out += r8, w += r8 * cols, nrows -= r8;                                                 \
        }                                                                                           \
        MATMUL_SWITCH_N(N, NAME##_nn, out, ostride, w, nrows, cols, x)                            \
    }

DEFINE_GEMV(gemv_f32_avx2, float, ld_f32, sc_f32)
DEFINE_GEMV(gemv_f16_avx2, uint16_t, ld_f16, sc_f16)
DEFINE_GEMV(gemv_bf16_avx2, uint16_t, ld_bf16, sc_bf16)

// ---- fused NF4 GEMV, cols % 64 == 0 ----
// The 16 NF4 values are looked up byte by byte: byte k of each value's fp32
// bits is a 16-entry table, one vpshufb for 32 codes. 16 code bytes give 32
// indices (the high nibbles in the low 128-bit lane, the low nibbles in the
// high lane); four vpshufb give the 4 bytes of each value, and two rounds of
// unpacks (bytes, then 16-bit words) put them together as 4 vectors of 8
// floats. In-lane unpacks leave the values of 4 code bytes as [even elements,
// odd elements]: nf4_permute_x with g = 4 has lined x up with that order. The
// values are the table's exactly (bytes moved, never computed).
INLINE2 void gemv_nf4_nn(float *out, int64_t ostride, const nf4_data *w, int64_t r0, int64_t nrows,
                         int64_t cols, const float *xp, const int NN) {
    uint8_t tb[4][16];
    for (int c = 0; c < 16; c++) {
        uint32_t u;
        memcpy(&u, &NF4_TABLE[c], sizeof u);
        for (int k = 0; k < 4; k++) tb[k][c] = (uint8_t)(u >> (8 * k));
    }
    const __m256i t0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tb[0]));
    const __m256i t1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tb[1]));
    const __m256i t2 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tb[2]));
    const __m256i t3 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tb[3]));
    const __m128i lo4 = _mm_set1_epi8(0x0F);
    const int64_t nbr = cols / NF4_BLOCK;
    const float offset = w->absmax_offset;
    for (int64_t i = 0; i < nrows; i++) {
        int64_t b = (r0 + i) * nbr;
        const uint8_t *cp = w->codes + b * (NF4_BLOCK / 2);
        __m256 acc[MATMUL_GEMV_MAX_N];
        _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) acc[n] = _mm256_setzero_ps();
        for (int64_t kb = 0; kb < nbr; kb++, b++, cp += NF4_BLOCK / 2) {
            _mm_prefetch((const char *)cp + 2048, _MM_HINT_T0);  // see PF_DIST in matmul_avx512.c
            const float t = NF4_CODE8[w->absmax_q[b]] * w->absmax_scale[(uint64_t)b / NF4_BLOCK2];
            const __m256 am = _mm256_set1_ps(t + offset);
            const float *xb = xp + kb * NF4_BLOCK;
            __m256 s[MATMUL_GEMV_MAX_N];
            _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) s[n] = _mm256_setzero_ps();
            _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
                const __m128i v = _mm_loadu_si128((const __m128i *)(cp + 16 * h));
                const __m256i idx = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_and_si128(_mm_srli_epi16(v, 4), lo4)), _mm_and_si128(v, lo4), 1);
                const __m256i b0 = _mm256_shuffle_epi8(t0, idx), b1 = _mm256_shuffle_epi8(t1, idx);
                const __m256i b2 = _mm256_shuffle_epi8(t2, idx), b3 = _mm256_shuffle_epi8(t3, idx);
                const __m256i w01l = _mm256_unpacklo_epi8(b0, b1), w01h = _mm256_unpackhi_epi8(b0, b1);
                const __m256i w23l = _mm256_unpacklo_epi8(b2, b3), w23h = _mm256_unpackhi_epi8(b2, b3);
                const __m256 f0 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(w01l, w23l));
                const __m256 f1 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(w01l, w23l));
                const __m256 f2 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(w01h, w23h));
                const __m256 f3 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(w01h, w23h));
                _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) {
                    const float *xn = xb + n * cols + 32 * h;
                    s[n] = _mm256_fmadd_ps(f0, _mm256_loadu_ps(xn), s[n]);
                    s[n] = _mm256_fmadd_ps(f1, _mm256_loadu_ps(xn + 8), s[n]);
                    s[n] = _mm256_fmadd_ps(f2, _mm256_loadu_ps(xn + 16), s[n]);
                    s[n] = _mm256_fmadd_ps(f3, _mm256_loadu_ps(xn + 24), s[n]);
                }
            }
            _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) acc[n] = _mm256_fmadd_ps(s[n], am, acc[n]);
        }
        _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) out[n * ostride + i] = hsum8(acc[n]);
    }
}

AVX2 static void gemv_nf4_avx2(float *out, int64_t ostride, const nf4_data *w, int64_t r0, int64_t nrows,
                               int64_t cols, const float *xp, int N) {
    MATMUL_SWITCH_N(N, gemv_nf4_nn, out, ostride, w, r0, nrows, cols, xp)
}

// ---- int8 NF4 GEMV (opt-in; see matmul_kernels.h) ----
// Per 64-block: the 32 code bytes in one load; pshufb looks the high and the low
// nibbles up in NF4_Q8 (the table in both 128-bit lanes), giving the int8 weights
// of the even and the odd elements, which line up with the two halves of the
// block's xq. vpmaddubsw takes an unsigned operand: |w| against x with w's sign
// (vpsignb), then vpmaddwd by ones sums pairs into int32 (|w|,|x| <= 127: no
// overflow). One int32 -> fp32 conversion and one FMA by the block's scale per vector.
#define Q8_SCALES 64  // block scales computed ahead, per row
#ifndef Q8_PF
#define Q8_PF 2048  // prefetch distance in bytes of codes
#endif

INLINE2 __m256i dot_q8(__m256i w, __m256i x, __m256i ones) {
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p, ones);
}

// One block's integer dot product with vector n of xq, as 8 int32 partial sums
#define Q8_BLOCK_DOT(wh, wl, q)                                                              \
    _mm256_add_epi32(dot_q8(wh, _mm256_loadu_si256((const __m256i *)(q)), ones),            \
                     dot_q8(wl, _mm256_loadu_si256((const __m256i *)((q) + 32)), ones))

INLINE2 void gemv_nf4_q8_nn(float *out, int64_t ostride, const nf4_data *w, int64_t r0, int64_t nrows,
                            int64_t cols, const int8_t *xq, const float *xd, const int NN) {
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)NF4_Q8));
    const __m256i lo4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const int64_t nbr = cols / NF4_BLOCK;
    const float offset = w->absmax_offset;
    float sc[Q8_SCALES];  // the row's block scales absmax / 127, Q8_SCALES blocks at a time
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 voff = _mm256_set1_ps(offset), inv127 = _mm256_set1_ps(1.0f / 127.0f);
    for (int64_t i = 0; i < nrows; i++) {
        const int64_t bfirst = (r0 + i) * nbr;
        // two accumulators per vector, for even and odd blocks: with one, a
        // vector's FMAs would form a single dependency chain
        __m256 acc0[MATMUL_GEMV_MAX_N], acc1[MATMUL_GEMV_MAX_N];
        _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) acc0[n] = acc1[n] = _mm256_setzero_ps();
        for (int64_t k0 = 0; k0 < nbr; k0 += Q8_SCALES) {
            const int64_t kn = nbr - k0 < Q8_SCALES ? nbr - k0 : Q8_SCALES;
            int64_t j8 = 0;
            for (; j8 + 8 <= kn; j8 += 8) {  // 8 at a time: a gather of the codes' values, 2 group scales
                const int64_t b = bfirst + k0 + j8;
                const __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(w->absmax_q + b)));
                const __m256 code = _mm256_i32gather_ps(NF4_CODE8, q, 4);
                const __m256i later = _mm256_cmpgt_epi32(_mm256_add_epi32(lane, _mm256_set1_epi32((int)(b % NF4_BLOCK2))),
                                                         _mm256_set1_epi32(NF4_BLOCK2 - 1));  // past this group of 256
                const __m256 gs = _mm256_blendv_ps(_mm256_set1_ps(w->absmax_scale[b / NF4_BLOCK2]),
                                                   _mm256_set1_ps(w->absmax_scale[(b + 7) / NF4_BLOCK2]),
                                                   _mm256_castsi256_ps(later));
                __m256 v = _mm256_mul_ps(_mm256_fmadd_ps(code, gs, voff), inv127);
                if (NN == 1) v = _mm256_mul_ps(v, _mm256_loadu_ps(xd + k0 + j8));  // one vector: x's scales folded in
                _mm256_storeu_ps(sc + j8, v);
            }
            for (int64_t j = j8; j < kn; j++) {
                const int64_t b = bfirst + k0 + j;
                sc[j] = fmaf(NF4_CODE8[w->absmax_q[b]], w->absmax_scale[(uint64_t)b / NF4_BLOCK2], offset) * (1.0f / 127.0f);
                if (NN == 1) sc[j] *= xd[k0 + j];
            }
            const uint8_t *cp = w->codes + (bfirst + k0) * (NF4_BLOCK / 2);
            int64_t j = 0;
            for (; j + 2 <= kn; j += 2, cp += NF4_BLOCK) {
                _mm_prefetch((const char *)cp + Q8_PF, _MM_HINT_T0);
                const __m256i v0 = _mm256_loadu_si256((const __m256i *)cp);
                const __m256i v1 = _mm256_loadu_si256((const __m256i *)(cp + 32));
                const __m256i wh0 = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v0, 4), lo4));
                const __m256i wl0 = _mm256_shuffle_epi8(table, _mm256_and_si256(v0, lo4));
                const __m256i wh1 = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v1, 4), lo4));
                const __m256i wl1 = _mm256_shuffle_epi8(table, _mm256_and_si256(v1, lo4));
                _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) {
                    const int64_t kb = k0 + j;
                    const int8_t *q = xq + n * cols + kb * NF4_BLOCK;
                    const float *d = xd + n * nbr + kb;
                    const __m256 s0 = NN == 1 ? _mm256_broadcast_ss(sc + j) : _mm256_set1_ps(sc[j] * d[0]);
                    const __m256 s1 = NN == 1 ? _mm256_broadcast_ss(sc + j + 1) : _mm256_set1_ps(sc[j + 1] * d[1]);
                    acc0[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Q8_BLOCK_DOT(wh0, wl0, q)), s0, acc0[n]);
                    acc1[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Q8_BLOCK_DOT(wh1, wl1, q + NF4_BLOCK)), s1, acc1[n]);
                }
            }
            if (j < kn) {  // an odd block count
                const __m256i v0 = _mm256_loadu_si256((const __m256i *)cp);
                const __m256i wh0 = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v0, 4), lo4));
                const __m256i wl0 = _mm256_shuffle_epi8(table, _mm256_and_si256(v0, lo4));
                _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) {
                    const int64_t kb = k0 + j;
                    const __m256 s0 = NN == 1 ? _mm256_broadcast_ss(sc + j) : _mm256_set1_ps(sc[j] * xd[n * nbr + kb]);
                    acc0[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Q8_BLOCK_DOT(wh0, wl0, xq + n * cols + kb * NF4_BLOCK)),
                                              s0, acc0[n]);
                }
            }
        }
        _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) out[n * ostride + i] =
            hsum8(_mm256_add_ps(acc0[n], acc1[n]));
    }
}

AVX2 void gemv_nf4_q8_avx2(float *out, int64_t ostride, const nf4_data *w, int64_t r0, int64_t nrows, int64_t cols,
                           const int8_t *xq, const float *xd, int N) {
    MATMUL_SWITCH_N(N, gemv_nf4_q8_nn, out, ostride, w, r0, nrows, cols, xq, xd)
}

// 8 table values for 8 codes held in bits 0..3 of each 32-bit lane; the bits
// above may hold anything (vpermps reads bits 0..2, the blend reads bit 3 as the
// sign of idx << 28), so a zero-extended byte gives its low nibble's value.
INLINE2 __m256 nf4_lookup8(__m256i idx, __m256 tlo, __m256 thi) {
    const __m256 a = _mm256_permutevar8x32_ps(tlo, idx);
    const __m256 b = _mm256_permutevar8x32_ps(thi, idx);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

// ---- exact dequantization of whole 64-blocks ----
// 8 code bytes -> 16 nibbles in element order (u16 = (byte >> 4) | (byte & 15) << 8),
// looked up and multiplied by the block's absmax in fp32, as nf4_dequantize does.
AVX2 static void nf4_blocks_avx2(float *out, const nf4_data *w, int64_t b0, int64_t nblocks) {
    const __m256 tlo = _mm256_loadu_ps(NF4_TABLE), thi = _mm256_loadu_ps(NF4_TABLE + 8);
    const __m128i lo4 = _mm_set1_epi16(0x0F);
    for (int64_t b = b0; b < b0 + nblocks; b++, out += NF4_BLOCK) {
        const float t = NF4_CODE8[w->absmax_q[b]] * w->absmax_scale[b / NF4_BLOCK2];
        const __m256 am = _mm256_set1_ps(t + w->absmax_offset);
        const uint8_t *cp = w->codes + b * (NF4_BLOCK / 2);
        for (int g = 0; g < 4; g++) {
            const __m128i v = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(cp + 8 * g)));
            const __m128i idx = _mm_or_si128(_mm_srli_epi16(v, 4), _mm_slli_epi16(_mm_and_si128(v, lo4), 8));
            const __m256 w0 = nf4_lookup8(_mm256_cvtepu8_epi32(idx), tlo, thi);
            const __m256 w1 = nf4_lookup8(_mm256_cvtepu8_epi32(_mm_srli_si128(idx, 8)), tlo, thi);
            _mm256_storeu_ps(out + 16 * g, _mm256_mul_ps(w0, am));
            _mm256_storeu_ps(out + 16 * g + 8, _mm256_mul_ps(w1, am));
        }
    }
}

// exact conversion of n 16-bit floats
#define DEFINE_CVT(NAME, LD, SC)                                                     \
    AVX2 static void NAME(float *out, const uint16_t *in, int64_t n) {              \
        int64_t i = 0;                                                              \
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, LD(in + i));           \
        for (; i < n; i++) out[i] = SC(in + i);                                     \
    }

DEFINE_CVT(cvt_f16_avx2, ld_f16, sc_f16)
DEFINE_CVT(cvt_bf16_avx2, ld_bf16, sc_bf16)

static const matmul_kernels KERNELS_AVX2 = {
    .name = "avx2",
    .gemv_f32 = gemv_f32_avx2,
    .gemv_f16 = gemv_f16_avx2,
    .gemv_bf16 = gemv_bf16_avx2,
    .gemv_nf4 = gemv_nf4_avx2,
    .xgroup = 4,
    .gemv_nf4_q8 = gemv_nf4_q8_avx2,
    .nf4_blocks = nf4_blocks_avx2,
    .cvt_f16 = cvt_f16_avx2,
    .cvt_bf16 = cvt_bf16_avx2,
};

const matmul_kernels *matmul_kernels_avx2(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return &KERNELS_AVX2;
    return NULL;
}
